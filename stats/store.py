"""The statistics store: a folder of moments, embeddings and a faiss index, tied to one encoder.

Layout (format version 1; see README, "Image statistics")::

    STORE/
      meta.json             format_version, name, encoder {source, fingerprint}, dim, count,
                            source_dir, skipped [{path, reason}], created, ovi_version, index {...},
                            shrinkage {method, intensity}
      moments.safetensors   count (int64), mean [D], cov [D, D] (plain sample covariance),
                            m3 [D], q4 (for exact merges), shrinkage (scalar),
                            precision_cholesky [D, D]; all float64
      embeddings.npy        [count, D] float16, raw `image_embeds`, row i is files[i]
      files.json            the source files (relative to source_dir when it is set)
      index.faiss           inner product over L2-normalised embeddings
      ovi-store.json        the marker {"kind": "ovi-statistics-store", "format_version": 1},
                            written last (stores built before it are read as legacy v1 stores)

A store is written into a private temporary folder beside its final path (`ovi_cli.outputs`)
and renamed into place when complete, so an interrupted write never leaves a half-written store;
writers hold the store's lock (`ovi_stats.lock`). Opening a store validates it
(`ovi_stats.validate`): a damaged one is a one-line `BadStore`, and listing skips it with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ovi_cli.errors import OviError
from ovi_cli.outputs import install_dir, json_text, new_file, private_dir, write_errors
from ovi_cli.version import ovi_version
from ovi_stats import index as nn_index
from ovi_stats.lock import store_lock
from ovi_stats.moments import Moments, batch_moments
from ovi_stats.shrinkage import well_conditioned
from ovi_stats.validate import (
    EMBEDDINGS,
    FILES,
    FORMAT_VERSION,
    INDEX,
    MARKER,
    META,
    MOMENTS,
    ROW_META,
    ROW_OFFSETS,
    STORE_FILES,
    BadStore,
    check_not_overlapping,
    check_replaceable,
    embeddings_problem,
    index_problem,
    looks_like_store,
    marker_payload,
    meta_problem,
    read_files,
    read_moments,
    store_kind,
)

WarnFn = Callable[[str], None]

CHUNK = 8192  # rows read at once when streaming over embeddings


# ---- where stores live -----------------------------------------------------------------------
def ovi_home() -> Path:
    """`$OVI_HOME`, else `$XDG_CACHE_HOME/ovi`, else `~/.cache/ovi`."""
    env = os.environ.get("OVI_HOME")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "ovi"


def stats_root() -> Path:
    """The folder that holds named stores: `$OVI_HOME/stats`."""
    return ovi_home() / "stats"


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise OviError(f"invalid store name {name!r}: use a plain folder name (or --out PATH)")


def is_store(path: Path) -> bool:
    """A store folder (marked, or a legacy v1 store): see `ovi_stats.validate`."""
    return store_kind(Path(path)) is not None


def named_store_path(name: str) -> Path:
    _check_name(name)
    return stats_root() / name


# ---- the store -------------------------------------------------------------------------------
def _check_regular_files(path: Path) -> None:
    """Each store file that is there is a regular file: a FIFO would block the read forever, a link
    to /dev/zero would fill memory (`BadStore`, one line)."""
    for name in STORE_FILES:
        try:
            mode = os.stat(path / name).st_mode
        except OSError:
            continue  # absent (or unreadable): the validation says which
        if not stat.S_ISREG(mode):
            raise BadStore(path, f"{name} is not a regular file (a folder, pipe or device)")


class StatsStore:
    """A statistics store on disk, validated when opened (`ovi_stats.validate`); the embeddings
    and the index load on first use."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        _check_regular_files(self.path)
        try:
            meta_bytes = (self.path / META).read_bytes()
            self.meta: dict[str, Any] = json.loads(meta_bytes.decode("utf-8"))
        except FileNotFoundError:
            raise BadStore(self.path, f"{META} is missing") from None
        except (OSError, ValueError, RecursionError) as exc:
            raise BadStore(self.path, f"{META} is not readable JSON ({exc.__class__.__name__})") from None
        problem = meta_problem(self.meta)
        if problem:
            raise BadStore(self.path, problem)
        count, dim = self.meta["count"], self.meta["dim"]
        problem = embeddings_problem(self.path, count, dim) or index_problem(self.path, count, dim)
        if problem:
            raise BadStore(self.path, problem)
        self._files: list[str] | None = read_files(self.path, count)
        self._moments: dict[str, torch.Tensor] | None = read_moments(self.path, count, dim)
        self._embeddings: np.ndarray | None = None
        self._index = None
        self._opened_as = self._content_fingerprint(meta_bytes)

    def __repr__(self) -> str:
        return f"StatsStore({str(self.path)!r}, count={self.count}, dim={self.dim})"

    # facts from meta.json
    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.path.name)

    @property
    def count(self) -> int:
        return int(self.meta["count"])

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def encoder(self) -> dict:
        return dict(self.meta.get("encoder") or {})

    @property
    def fingerprint(self) -> str:
        return str(self.encoder.get("fingerprint", ""))

    @property
    def skipped(self) -> list[dict]:
        return list(self.meta.get("skipped") or [])

    # what is on disk
    def _content_fingerprint(self, meta_bytes: bytes | None = None) -> str:
        _check_regular_files(self.path)
        h = hashlib.sha256()
        try:
            h.update(meta_bytes if meta_bytes is not None else (self.path / META).read_bytes())
            h.update((self.path / MOMENTS).read_bytes())
            for name in (EMBEDDINGS, FILES, INDEX):
                h.update(f"{name}:{(self.path / name).stat().st_size};".encode())
        except OSError as exc:
            raise BadStore(self.path, f"cannot read it ({exc.strerror or exc.__class__.__name__})") from None
        return h.hexdigest()[:16]

    def content_fingerprint(self) -> str:
        """A fingerprint of the store's content as it is on disk now: a hash of `meta.json` (which
        holds the build's time) and `moments.safetensors` and the sizes of the other files. Cheap (the
        small files only); equal for a copy, different after any rebuild (`build-stats --force`, a
        merge into the same path). Record it with a run and compare on resume (`check_unchanged`)."""
        return self._content_fingerprint()

    def check_unchanged(self, recorded: str | None = None) -> None:
        """Refuse (one line) a store whose content changed since `recorded` (default: since it was
        opened), e.g. rebuilt in place between a run and its resume."""
        expected = recorded or self._opened_as
        now = self.content_fingerprint()
        if now != expected:
            raise OviError(f"statistics store {self.name!r} ({str(self.path)!r}) changed on disk "
                           f"(content {expected} -> {now}), e.g. rebuilt with --force; results made with "
                           "the old one would be mixed with the new: start afresh or restore the store")

    # moments
    def _tensors(self) -> dict[str, torch.Tensor]:
        if self._moments is None:
            self._moments = read_moments(self.path, self.count, self.dim)
        return self._moments

    @property
    def mean(self) -> torch.Tensor:
        """[D] float64 mean of the raw `image_embeds`."""
        return self._tensors()["mean"]

    @property
    def cov(self) -> torch.Tensor:
        """[D, D] float64 plain sample covariance (denominator count - 1)."""
        return self._tensors()["cov"]

    @property
    def precision_cholesky(self) -> torch.Tensor:
        """[D, D] float64 lower-triangular L, L L^T = inverse of the Ledoit-Wolf shrunk covariance."""
        return self._tensors()["precision_cholesky"]

    @property
    def shrinkage(self) -> float:
        return float(self._tensors()["shrinkage"])

    def moments(self) -> Moments:
        t = self._tensors()
        n = int(t["count"])
        cov = t["cov"].numpy()
        return Moments(n, t["mean"].numpy().copy(), cov * max(n - 1, 0), t["m3"].numpy().copy(), float(t["q4"]))

    # embeddings and files
    @property
    def embeddings(self) -> np.ndarray:
        """[count, D] float16, memory-mapped (read-only)."""
        if self._embeddings is None:
            self.check_unchanged()  # replaced since opened: its moments and its rows would not agree
            try:
                self._embeddings = np.load(self.path / EMBEDDINGS, mmap_mode="r")
            except Exception as exc:  # noqa: BLE001 - changed on disk since it was opened
                raise BadStore(self.path, f"{EMBEDDINGS} is not readable ({exc.__class__.__name__})") from None
        return self._embeddings

    @property
    def files(self) -> list[str]:
        if self._files is None:
            self._files = read_files(self.path, self.count)
        return self._files

    def iter_embeddings(self, chunk: int = CHUNK) -> Iterator[np.ndarray]:
        emb = self.embeddings
        for i in range(0, len(emb), chunk):
            yield np.asarray(emb[i : i + chunk], dtype=np.float32)

    # nearest neighbours
    @property
    def index_params(self) -> dict:
        return dict(self.meta.get("index") or {})

    @property
    def index(self):
        if self._index is None:
            self.check_unchanged()
            try:
                self._index = nn_index.read_index(str(self.path / INDEX), self.index_params)
            except (RuntimeError, MemoryError) as exc:
                raise BadStore(self.path, f"cannot read {INDEX} ({(str(exc).strip().splitlines() or ['?'])[0]})") \
                    from exc
            if self._index.ntotal != self.count or self._index.d != self.dim:
                raise BadStore(self.path, f"{INDEX} holds {self._index.ntotal} vectors of dimension {self._index.d}, "
                               f"the store {self.count} of dimension {self.dim}")
        return self._index

    @property
    def compressed(self) -> bool:
        """The index scores approximately (product-quantised codes): searches re-rank exactly."""
        return self.index_params.get("type") in nn_index.COMPRESSED

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(cosines [B, k] float32, ids [B, k] int64) of the nearest stored embeddings.

        Queries are raw embeddings [B, D] (L2-normalised here); k is capped at `count`. On a
        compressed index (ivfpq, opq) the index proposes `nn_index.candidates(k)` rows and they are
        re-ranked by their exact cosine to the stored embeddings, so the cosines returned are exact
        and the ids are the exact search's wherever the true neighbours are among the candidates.
        """
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None]
        if q.shape[-1] != self.dim:
            raise OviError(f"queries have dimension {q.shape[-1]}, store {self.name!r} has {self.dim}")
        if not self.compressed:
            return nn_index.search(self.index, q, k)
        k = max(1, min(int(k), self.count))
        _, ids = nn_index.search(self.index, q, nn_index.candidates(k, self.count))
        return nn_index.rerank(q, ids, lambda rows: np.asarray(self.embeddings[rows], np.float32), k)

    def row_metadata(self, rows: Sequence[int]) -> list[dict]:
        """Each row's metadata (key, caption, url, ... as the source gave them; {} when none)."""
        return read_row_metadata(self.path, rows)

    def describe(self) -> dict:
        return {
            "path": str(self.path), "name": self.name, "count": self.count, "dim": self.dim,
            "encoder": {"source": self.encoder.get("source"), "fingerprint": self.fingerprint},
            "index": self.index_params.get("type"), "format_version": self.meta.get("format_version"),
            "content": self._opened_as,
        }

    def index_bytes(self) -> int:
        """Size of the index file (what it takes in memory when loaded; IVF lists are memory-mapped)."""
        try:
            return int((self.path / INDEX).stat().st_size)
        except OSError:
            return 0

    def info(self) -> dict:
        """Everything `ovi stats info` shows."""
        d = self.describe()
        d.update(
            mean_norm=float(torch.linalg.vector_norm(self.mean)),
            shrinkage=self.shrinkage, source_dir=self.meta.get("source_dir"),
            created=self.meta.get("created"), ovi_version=self.meta.get("ovi_version"),
            index_params=self.index_params, skipped=self.skipped, index_bytes=self.index_bytes(),
            recall_at_10=self.index_params.get("recall_at_10"),
        )
        return d


# ---- finding stores --------------------------------------------------------------------------
def list_stores(root: Path | None = None, warn: WarnFn | None = None) -> list[StatsStore]:
    """Valid stores under `$OVI_HOME/stats` (or `root`), newest first.

    A folder that claims to be a store but fails validation is skipped, with one `warn` line.
    """
    root = stats_root() if root is None else root
    if not root.is_dir():
        return []
    found = []
    for child in sorted(root.iterdir()):
        if child.name.startswith(".") or not looks_like_store(child):
            continue
        try:
            found.append(StatsStore(child))
        except OviError as exc:
            if warn is not None:
                warn(f"skipped {exc}")
    return sorted(found, key=lambda s: str(s.meta.get("created", "")), reverse=True)


def open_store(name_or_path: str | os.PathLike) -> StatsStore:
    """A store by folder path, or by NAME under `$OVI_HOME/stats/` (validated: `BadStore` if damaged)."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if looks_like_store(path):
        return StatsStore(path)
    if "/" not in text and "\\" not in text and not text.startswith("."):
        named = stats_root() / text
        if looks_like_store(named):
            return StatsStore(named)
    if path.exists():
        raise OviError(f"{text!r} is not a statistics store (no {MARKER} or {META}); build one with `ovi build-stats`")
    raise OviError(f"no statistics store {text!r} (neither a folder nor a name in {str(stats_root())!r}; "
                   "see `ovi stats list`, build one with `ovi build-stats DIR`)")


def check_encoder(store: StatsStore, encoders) -> None:
    """Refuse a store built with another encoder than `encoders` (one-line error naming both)."""
    fp, dim = encoders.fingerprint(), int(encoders.embed_dim)
    if store.fingerprint != fp or store.dim != dim:
        raise OviError(
            f"statistics store {store.name!r} was built with encoder {store.encoder.get('source')!r} "
            f"(fingerprint {store.fingerprint}, dim {store.dim}) but the encoder in use is "
            f"{encoders.source!r} (fingerprint {fp}, dim {dim}); build a matching store with "
            f"`ovi build-stats DIR --encoder-model {encoders.source}`"
        )


def open_store_for(name_or_path: str | None, encoders, warn: WarnFn | None = None) -> StatsStore:
    """The named store (checked against `encoders`), or the newest one built with the same encoder
    (damaged stores are skipped with a `warn` line)."""
    if name_or_path is not None:
        store = open_store(name_or_path)
        check_encoder(store, encoders)
        return store
    fp = encoders.fingerprint()
    for store in list_stores(warn=warn):
        if store.fingerprint == fp and store.dim == int(encoders.embed_dim):
            return store
    raise OviError(
        f"no statistics store for encoder {encoders.source!r} (fingerprint {fp}) in "
        f"{str(stats_root())!r}: build one with `ovi build-stats IMAGE_DIR --encoder-model {encoders.source}` "
        "or name one with --stats"
    )


# ---- writing ---------------------------------------------------------------------------------
def store_files_writer(tmp: Path):
    """`write(name, writer)`: create `tmp/name` exclusively and fill it through `writer(handle)`."""
    def write(name: str, writer) -> None:
        with write_errors(tmp / name), new_file(tmp / name) as handle:
            writer(handle)
    return write


def new_embeddings_file(tmp: Path, rows: int, dim: int) -> np.ndarray:
    """`tmp/embeddings.npy` [rows, dim] float16, created exclusively and memory-mapped for writing."""
    path = tmp / EMBEDDINGS
    with write_errors(path):
        new_file(path).close()
        return np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(rows, dim))


def check_store_target(final: Path, *, force: bool, inputs: Sequence[Path] = (), what: str = "an input") -> None:
    """Before writing a store at `final`: refuse an existing path without `force`, anything but a
    store even with it, and an output that is or contains one of `inputs`."""
    check_not_overlapping(final, inputs, what)
    if os.path.lexists(final):
        if not force:
            raise OviError(f"{str(final)!r} already exists: pass --force to replace it")
        check_replaceable(final)


def _moment_tensors(moments: Moments) -> tuple[dict[str, torch.Tensor], float]:
    """The tensors of `moments.safetensors` (and the shrinkage used); a deterministic failure
    (zero variance, overflow) is an `OviError`."""
    try:
        shrink, chol = well_conditioned(moments)
    except ValueError as exc:
        raise OviError(f"cannot build statistics: {exc}") from exc
    tensors = {
        "count": torch.tensor(moments.n, dtype=torch.int64),
        "mean": torch.from_numpy(np.ascontiguousarray(moments.mean, dtype=np.float64)),
        "cov": torch.from_numpy(np.ascontiguousarray(moments.covariance(), dtype=np.float64)),
        "m3": torch.from_numpy(np.ascontiguousarray(moments.m3, dtype=np.float64)),
        "q4": torch.tensor(moments.q4, dtype=torch.float64),
        "shrinkage": torch.tensor(shrink, dtype=torch.float64),
        "precision_cholesky": chol.contiguous(),
    }
    if not all(np.isfinite(t.numpy()).all() for t in tensors.values()):
        raise OviError("cannot build statistics: the moments are not finite (embeddings too large for float64?)")
    return tensors, shrink


def _store_meta(final: Path, moments: Moments, encoder: dict, source_dir: str | None, skipped: Iterable[dict],
                index_params: dict, shrink: float, extra_meta: dict | None) -> dict[str, Any]:
    meta = {
        "format_version": FORMAT_VERSION,
        "name": final.name,
        "encoder": dict(encoder),
        "dim": moments.dim,
        "count": moments.n,
        "source_dir": source_dir,
        "skipped": [dict(s) for s in skipped],
        "created": datetime.now(timezone.utc).isoformat(),
        "ovi_version": ovi_version(),
        "index": index_params,
        "shrinkage": {"method": "ledoit-wolf", "intensity": shrink,
                      "target": "scaled identity (tr(cov)/D) I"},
        "embeddings": {"file": EMBEDDINGS, "dtype": "float16", "kind": "image_embeds"},
    }
    meta.update(extra_meta or {})
    return meta


def _write_json_list(handle, items: Iterable[str]) -> int:
    """Stream `items` into `handle` as one JSON list (constant memory); the number written."""
    n = 0
    handle.write(b"[")
    for item in items:
        handle.write((b", " if n else b"") + json.dumps(str(item), ensure_ascii=False).encode("utf-8"))
        n += 1
    handle.write(b"]")
    return n


def _write_row_metadata(tmp: Path, rows: Iterable[dict]) -> int:
    """`metadata.jsonl` (one JSON object a row) and `metadata.offsets.npy` (each line's byte offset)."""
    offsets: list[int] = []
    pos = 0
    with write_errors(tmp / ROW_META), new_file(tmp / ROW_META) as handle:
        for row in rows:
            line = (json.dumps(row, ensure_ascii=False, default=str) + "\n").encode("utf-8")
            offsets.append(pos)
            handle.write(line)
            pos += len(line)
    offsets.append(pos)
    arr = np.asarray(offsets, dtype=np.uint64)
    with write_errors(tmp / ROW_OFFSETS), new_file(tmp / ROW_OFFSETS) as handle:
        np.save(handle, arr)
    return len(offsets) - 1


def read_row_metadata(path: Path, rows: Sequence[int]) -> list[dict]:
    """The metadata objects of `rows` (random access through the offsets; {} for a store without)."""
    if not (path / ROW_META).is_file() or not (path / ROW_OFFSETS).is_file():
        return [{} for _ in rows]
    offsets = np.load(path / ROW_OFFSETS, mmap_mode="r")
    out = []
    with open(path / ROW_META, "rb") as f:
        for r in rows:
            r = int(r)
            if not 0 <= r < len(offsets) - 1:
                out.append({})
                continue
            f.seek(int(offsets[r]))
            try:
                out.append(json.loads(f.read(int(offsets[r + 1]) - int(offsets[r]))))
            except ValueError:
                out.append({})
    return out


RECALL_SAMPLE = 100  # stored rows used as held-out queries for the recall@10 recorded at build time
RECALL_K = 10


def measure_recall(emb: np.ndarray, approx_search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
                   sample: int = RECALL_SAMPLE, k: int = RECALL_K, seed: int = 0) -> dict:
    """recall@k of `approx_search` against an exact scan, on `sample` stored rows held out as queries.

    Each query is a stored row; its own row is removed from both answers (leave-one-out), so the
    figure is the recall for a query that is not in the store. The exact side streams every row.
    """
    n = len(emb)
    take = min(sample, n)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=take, replace=False))
    q = np.asarray(emb[rows], dtype=np.float32)
    _, exact = nn_index.exact_top(q, (np.asarray(emb[i : i + CHUNK], np.float32) for i in range(0, n, CHUNK)),
                                  min(k + 1, n))
    _, approx = approx_search(q, min(k + 1, n))

    def drop_self(ids: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray([i for i in row if i != r][:k] + [-1] * max(0, k - len(row) + 1))[:k]
                         for row, r in zip(ids.tolist(), rows.tolist())])

    return {f"recall_at_{k}": round(nn_index.recall_at(drop_self(approx), drop_self(exact)), 4),
            "recall_queries": int(take)}


def finalize_store(
    final: Path,
    tmp: Path,
    moments: Moments,
    files: Iterable[str],
    *,
    encoder: dict,
    source_dir: str | None = None,
    skipped: Iterable[dict] = (),
    index: str = "auto",
    extra_meta: dict | None = None,
    index_memory: int = nn_index.DEFAULT_MEMORY,
    rows_meta: Iterable[dict] | None = None,
) -> StatsStore:
    """Complete a store in `tmp` (which already holds embeddings.npy) and move it to `final`.

    `files` (one name a row) and `rows_meta` (one metadata object a row, optional) may be lazy
    iterables: they are streamed to disk, so memory does not grow with the count.
    Deterministic failures (too few embeddings, zero variance) are `OviError`s; write failures
    are `OutputError`s (one line each). The marker is written last. The caller holds the lock.
    """
    from safetensors.torch import save

    moments = moments.to_numpy()
    if moments.n < 2:
        raise OviError(f"a statistics store needs at least 2 embeddings, got {moments.n}")
    if isinstance(files, Sequence) and len(files) != moments.n:
        raise OviError(f"{len(files)} file names for {moments.n} embeddings")
    if "source" not in encoder or "fingerprint" not in encoder:
        raise ValueError("encoder must give at least 'source' and 'fingerprint'")
    try:
        nn_index.resolve_kind(index, moments.n, moments.dim, index_memory)
    except ValueError as exc:
        raise OviError(str(exc)) from None
    tensors, shrink = _moment_tensors(moments)
    write = store_files_writer(tmp)
    write(MOMENTS, lambda f: f.write(save(tensors, metadata={"format_version": str(FORMAT_VERSION)})))
    emb = np.load(tmp / EMBEDDINGS, mmap_mode="r")
    if emb.shape != (moments.n, moments.dim):
        raise OviError(f"embeddings have shape {emb.shape}, expected {(moments.n, moments.dim)}")

    def chunks() -> Iterator[np.ndarray]:
        for i in range(0, len(emb), CHUNK):
            yield np.asarray(emb[i : i + CHUNK], dtype=np.float32)

    try:
        faiss_index, params = nn_index.build_index(chunks, moments.n, moments.dim, index, memory=index_memory)
    except ValueError as exc:  # a budget no index fits
        raise OviError(str(exc)) from None
    write(INDEX, lambda f: nn_index.write_index(faiss_index, f))
    if params["type"] in nn_index.COMPRESSED:
        def approx(q, k):
            _, ids = nn_index.search(faiss_index, q, nn_index.candidates(k, moments.n))
            return nn_index.rerank(q, ids, lambda rows: np.asarray(emb[rows], np.float32), k)
    else:
        def approx(q, k):
            return nn_index.search(faiss_index, q, k)
    params.update(measure_recall(emb, approx), memory_budget=int(index_memory))
    counted: list[int] = []
    write(FILES, lambda f: counted.append(_write_json_list(f, files)))
    if counted[0] != moments.n:
        raise OviError(f"{counted[0]} file names for {moments.n} embeddings")
    if rows_meta is not None:
        n_meta = _write_row_metadata(tmp, rows_meta)
        if n_meta != moments.n:
            raise OviError(f"{n_meta} metadata rows for {moments.n} embeddings")
    meta = _store_meta(final, moments, encoder, source_dir, skipped, params, shrink, extra_meta)
    write(META, lambda f: f.write(json_text(meta, tmp / META).encode("utf-8")))
    write(MARKER, lambda f: f.write(json_text(marker_payload(), tmp / MARKER).encode("utf-8")))
    install_dir(tmp, final)
    return StatsStore(final)


def moments_of(embeddings: np.ndarray, chunk: int = CHUNK) -> Moments:
    """Streaming moments of the rows of `embeddings` (any float dtype; accumulated in float64)."""
    m = Moments.empty(int(embeddings.shape[1]))
    for i in range(0, len(embeddings), chunk):
        m = m.merge(batch_moments(np.asarray(embeddings[i : i + chunk], dtype=np.float64)))
    return m


def write_store(
    path: str | os.PathLike,
    embeddings: np.ndarray,
    files: Sequence[str],
    *,
    encoder: dict,
    source_dir: str | None = None,
    skipped: Iterable[dict] = (),
    index: str = "auto",
    extra_meta: dict | None = None,
    force: bool = True,
    index_memory: int = nn_index.DEFAULT_MEMORY,
) -> StatsStore:
    """Write a store from raw `image_embeds` [N, D] and their N source names (atomic; replaces only
    a store at `path`, and only with `force`)."""
    emb = np.asarray(embeddings)
    if emb.ndim != 2:
        raise OviError(f"embeddings must be a [N, D] array, got shape {emb.shape}")
    if len(files) != len(emb):
        raise OviError(f"{len(files)} file names for {len(emb)} embeddings")
    if not np.isfinite(emb).all():
        raise OviError("embeddings contain NaN or infinite values")
    final = Path(path).expanduser().absolute()
    m = moments_of(emb)
    with store_lock(final):
        check_store_target(final, force=force)
        tmp = private_dir(final)
        try:
            out = new_embeddings_file(tmp, len(emb), emb.shape[1])
            out[:] = emb.astype(np.float16)
            out.flush()
            del out
            return finalize_store(final, tmp, m, files, encoder=encoder, source_dir=source_dir, skipped=skipped,
                                  index=index, extra_meta=extra_meta, index_memory=index_memory)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def iter_row_metadata(store: StatsStore) -> Iterator[dict]:
    """Every row's metadata object in order, streamed ({"key": file} for a store without metadata)."""
    if (store.path / ROW_META).is_file():
        with open(store.path / ROW_META, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)
    else:
        for name in store.files:
            yield {"key": name}


def merge_stores(stores: Sequence[StatsStore], out: str | os.PathLike, *, index: str = "auto",
                 force: bool = True, index_memory: int = nn_index.DEFAULT_MEMORY) -> StatsStore:
    """One store holding every embedding of `stores` (same encoder), moments merged exactly."""
    if len(stores) < 2:
        raise OviError("merge needs at least two stores")
    first = stores[0]
    for s in stores[1:]:
        if s.fingerprint != first.fingerprint or s.dim != first.dim:
            raise OviError(
                f"cannot merge store {s.name!r} (encoder {s.encoder.get('source')!r}, fingerprint "
                f"{s.fingerprint}, dim {s.dim}) with {first.name!r} (encoder {first.encoder.get('source')!r}, "
                f"fingerprint {first.fingerprint}, dim {first.dim})"
            )
    check_distinct(stores)
    final = Path(out).expanduser().absolute()
    if any(final.resolve() == s.path.resolve() for s in stores):
        raise OviError("--out must differ from the stores being merged")
    with store_lock(final):
        check_store_target(final, force=force, inputs=[s.path for s in stores], what="the store")
        return _merge_into(stores, final, index, index_memory)


def _rebase(stores: Sequence[StatsStore]) -> tuple[str | None, Callable[[str, StatsStore], str]]:
    """(the stores' common source_dir or None, name -> the name as the merged store holds it)."""
    sources = {s.meta.get("source_dir") for s in stores}
    common = sources.pop() if len(sources) == 1 else None

    def rebase(name: str, store: StatsStore) -> str:
        src = store.meta.get("source_dir")
        if common is not None or not src or os.path.isabs(name):
            return name
        return str(Path(src) / name)

    return common, rebase


def check_distinct(stores: Sequence[StatsStore]) -> None:
    """Refuse to merge a store with itself (the same folder twice, through a symlink, a copy of it)
    or stores that share an image: the merged moments would count those images twice."""
    for i, a in enumerate(stores):
        for b in stores[:i]:
            if os.path.realpath(a.path) == os.path.realpath(b.path):
                raise OviError(f"store {str(a.path)!r} is given twice (it is {str(b.path)!r}): "
                               "each image would be counted twice")
            if a.content_fingerprint() == b.content_fingerprint():
                raise OviError(f"stores {str(b.path)!r} and {str(a.path)!r} hold the same content (a copy): "
                               "each image would be counted twice")
    _, rebase = _rebase(stores)
    owner: dict[str, StatsStore] = {}
    for s in stores:
        located = bool(s.meta.get("source_dir"))
        for name in s.files:
            if not (located or os.path.isabs(name)):
                continue  # rows of an embedding dump ("emb.npy#3"): names, not places
            key = rebase(name, s)
            other = owner.setdefault(key, s)
            if other is not s:
                raise OviError(f"stores {str(other.path)!r} and {str(s.path)!r} both hold image {key!r}: "
                               "merging would count it twice (merge disjoint shards)")


def _merge_into(stores: Sequence[StatsStore], final: Path, index: str, index_memory: int) -> StatsStore:
    first = stores[0]
    common, rebase = _rebase(stores)

    moments = Moments.empty(first.dim)
    files: list[str] = []
    skipped: list[dict] = []
    for s in stores:
        moments = moments.merge(s.moments())
        files.extend(rebase(f, s) for f in s.files)
        skipped.extend({**k, "path": rebase(str(k.get("path", "")), s)} for k in s.skipped)
    tmp = private_dir(final)
    try:
        out_emb = new_embeddings_file(tmp, moments.n, first.dim)
        row = 0
        for s in stores:
            emb = s.embeddings
            for i in range(0, len(emb), CHUNK):
                block = emb[i : i + CHUNK]
                out_emb[row : row + len(block)] = block
                row += len(block)
        out_emb.flush()
        del out_emb
        merged_from = [{"name": s.name, "path": str(s.path), "count": s.count,
                        "source_dir": s.meta.get("source_dir")} for s in stores]
        with_meta = any((s.path / ROW_META).is_file() for s in stores)
        rows_meta = (row for s in stores for row in iter_row_metadata(s)) if with_meta else None
        return finalize_store(final, tmp, moments, files, encoder=first.encoder, source_dir=common,
                              skipped=skipped, index=index, extra_meta={"merged_from": merged_from},
                              index_memory=index_memory, rows_meta=rows_meta)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
