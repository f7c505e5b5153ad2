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

A store is written into a hidden temporary folder beside its final path and renamed into place
when complete, so an interrupted write never leaves a half-written store.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ovi_cli.errors import OviError
from ovi_cli.outputs import atomic_write_json
from ovi_stats import index as nn_index
from ovi_stats.moments import Moments, batch_moments
from ovi_stats.shrinkage import well_conditioned

FORMAT_VERSION = 1
META = "meta.json"
MOMENTS = "moments.safetensors"
EMBEDDINGS = "embeddings.npy"
FILES = "files.json"
INDEX = "index.faiss"
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


def is_store(path: Path) -> bool:
    return (path / META).is_file() and (path / MOMENTS).is_file()


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise OviError(f"invalid store name {name!r}: use a plain folder name (or --out PATH)")


def named_store_path(name: str) -> Path:
    _check_name(name)
    return stats_root() / name


# ---- the store -------------------------------------------------------------------------------
class StatsStore:
    """A statistics store on disk; heavy parts (moments, embeddings, index) load on first use."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self.meta: dict[str, Any] = json.loads((self.path / META).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise OviError(f"{str(self.path)!r} is not a readable statistics store ({META}: "
                           f"{exc.__class__.__name__})") from exc
        version = self.meta.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise OviError(f"statistics store {str(self.path)!r} has format version {version!r}; this ovi "
                           f"reads version {FORMAT_VERSION} or older (upgrade ovi or rebuild the store)")
        self._moments: dict[str, torch.Tensor] | None = None
        self._embeddings: np.ndarray | None = None
        self._files: list[str] | None = None
        self._index = None

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

    # moments
    def _tensors(self) -> dict[str, torch.Tensor]:
        if self._moments is None:
            from safetensors.torch import load_file

            try:
                self._moments = load_file(str(self.path / MOMENTS))
            except Exception as exc:  # a damaged file is a user-facing problem, not a traceback
                raise OviError(f"cannot read {str(self.path / MOMENTS)!r}: {exc.__class__.__name__}") from exc
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
            self._embeddings = np.load(self.path / EMBEDDINGS, mmap_mode="r")
        return self._embeddings

    @property
    def files(self) -> list[str]:
        if self._files is None:
            self._files = list(json.loads((self.path / FILES).read_text(encoding="utf-8")))
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
            try:
                self._index = nn_index.read_index(str(self.path / INDEX), self.index_params)
            except RuntimeError as exc:
                raise OviError(f"cannot read the index of store {self.name!r}: {str(exc).splitlines()[0]}") from exc
        return self._index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(cosines [B, k] float32, ids [B, k] int64) of the nearest stored embeddings.

        Queries are raw embeddings [B, D] (L2-normalised here); k is capped at `count`.
        """
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None]
        if q.shape[-1] != self.dim:
            raise OviError(f"queries have dimension {q.shape[-1]}, store {self.name!r} has {self.dim}")
        return nn_index.search(self.index, q, k)

    def describe(self) -> dict:
        return {
            "path": str(self.path), "name": self.name, "count": self.count, "dim": self.dim,
            "encoder": {"source": self.encoder.get("source"), "fingerprint": self.fingerprint},
            "index": self.index_params.get("type"), "format_version": self.meta.get("format_version"),
        }

    def info(self) -> dict:
        """Everything `ovi stats info` shows."""
        d = self.describe()
        d.update(
            mean_norm=float(torch.linalg.vector_norm(self.mean)),
            shrinkage=self.shrinkage, source_dir=self.meta.get("source_dir"),
            created=self.meta.get("created"), ovi_version=self.meta.get("ovi_version"),
            index_params=self.index_params, skipped=self.skipped,
        )
        return d


# ---- finding stores --------------------------------------------------------------------------
def list_stores(root: Path | None = None) -> list[StatsStore]:
    """Valid stores under `$OVI_HOME/stats` (or `root`), newest first."""
    root = stats_root() if root is None else root
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        if child.name.startswith(".") or not is_store(child):
            continue
        try:
            found.append(StatsStore(child))
        except OviError:
            continue
    return sorted(found, key=lambda s: str(s.meta.get("created", "")), reverse=True)


def open_store(name_or_path: str | os.PathLike) -> StatsStore:
    """A store by folder path, or by NAME under `$OVI_HOME/stats/`."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if is_store(path):
        return StatsStore(path)
    if "/" not in text and "\\" not in text and not text.startswith("."):
        named = stats_root() / text
        if is_store(named):
            return StatsStore(named)
    if path.exists():
        raise OviError(f"{text!r} is not a statistics store (no {META}/{MOMENTS}); build one with `ovi build-stats`")
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


def open_store_for(name_or_path: str | None, encoders) -> StatsStore:
    """The named store (checked against `encoders`), or the newest one built with the same encoder."""
    if name_or_path is not None:
        store = open_store(name_or_path)
        check_encoder(store, encoders)
        return store
    fp = encoders.fingerprint()
    for store in list_stores():
        if store.fingerprint == fp and store.dim == int(encoders.embed_dim):
            return store
    raise OviError(
        f"no statistics store for encoder {encoders.source!r} (fingerprint {fp}) in "
        f"{str(stats_root())!r}: build one with `ovi build-stats IMAGE_DIR --encoder-model {encoders.source}` "
        "or name one with --stats"
    )


# ---- writing ---------------------------------------------------------------------------------
def _ovi_version() -> str:
    try:
        from ovi_cli import __version__

        return __version__
    except Exception:  # pragma: no cover
        return "unknown"


def temp_dir_for(final: Path) -> Path:
    """A fresh hidden folder beside `final` (same filesystem, so the last rename is atomic)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")
    tmp.mkdir()
    return tmp


def install_dir(tmp: Path, final: Path) -> None:
    """Move the finished folder `tmp` to `final`, replacing an existing store there."""
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)



def finalize_store(
    final: Path,
    tmp: Path,
    moments: Moments,
    files: Sequence[str],
    *,
    encoder: dict,
    source_dir: str | None = None,
    skipped: Iterable[dict] = (),
    index: str = "auto",
    extra_meta: dict | None = None,
) -> StatsStore:
    """Complete a store in `tmp` (which already holds embeddings.npy) and rename it to `final`."""
    from safetensors.torch import save_file

    moments = moments.to_numpy()
    if moments.n < 2:
        raise OviError(f"a statistics store needs at least 2 embeddings, got {moments.n}")
    if len(files) != moments.n:
        raise OviError(f"{len(files)} file names for {moments.n} embeddings")
    if "source" not in encoder or "fingerprint" not in encoder:
        raise ValueError("encoder must give at least 'source' and 'fingerprint'")
    try:
        shrink, chol = well_conditioned(moments)
    except ValueError as exc:
        raise OviError(f"cannot build statistics: {exc}") from exc
    cov = moments.covariance()
    save_file(
        {
            "count": torch.tensor(moments.n, dtype=torch.int64),
            "mean": torch.from_numpy(np.ascontiguousarray(moments.mean, dtype=np.float64)),
            "cov": torch.from_numpy(np.ascontiguousarray(cov, dtype=np.float64)),
            "m3": torch.from_numpy(np.ascontiguousarray(moments.m3, dtype=np.float64)),
            "q4": torch.tensor(moments.q4, dtype=torch.float64),
            "shrinkage": torch.tensor(shrink, dtype=torch.float64),
            "precision_cholesky": chol.contiguous(),
        },
        str(tmp / MOMENTS),
        metadata={"format_version": str(FORMAT_VERSION)},
    )
    emb = np.load(tmp / EMBEDDINGS, mmap_mode="r")
    if emb.shape != (moments.n, moments.dim):
        raise OviError(f"embeddings have shape {emb.shape}, expected {(moments.n, moments.dim)}")

    def chunks() -> Iterator[np.ndarray]:
        for i in range(0, len(emb), CHUNK):
            yield np.asarray(emb[i : i + CHUNK], dtype=np.float32)

    faiss_index, params = nn_index.build_index(chunks, moments.n, moments.dim, index)
    nn_index.write_index(faiss_index, str(tmp / INDEX))
    (tmp / FILES).write_text(json.dumps(list(files), ensure_ascii=False), encoding="utf-8")
    meta = {
        "format_version": FORMAT_VERSION,
        "name": final.name,
        "encoder": dict(encoder),
        "dim": moments.dim,
        "count": moments.n,
        "source_dir": source_dir,
        "skipped": [dict(s) for s in skipped],
        "created": datetime.now(timezone.utc).isoformat(),
        "ovi_version": _ovi_version(),
        "index": params,
        "shrinkage": {"method": "ledoit-wolf", "intensity": shrink,
                      "target": "scaled identity (tr(cov)/D) I"},
        "embeddings": {"file": EMBEDDINGS, "dtype": "float16", "kind": "image_embeds"},
    }
    meta.update(extra_meta or {})
    atomic_write_json(tmp / META, meta)
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
) -> StatsStore:
    """Write a store from raw `image_embeds` [N, D] and their N source names (atomic)."""
    emb = np.asarray(embeddings)
    if emb.ndim != 2:
        raise OviError(f"embeddings must be a [N, D] array, got shape {emb.shape}")
    if len(files) != len(emb):
        raise OviError(f"{len(files)} file names for {len(emb)} embeddings")
    if not np.isfinite(emb).all():
        raise OviError("embeddings contain NaN or infinite values")
    final = Path(path).expanduser().absolute()
    m = moments_of(emb)
    tmp = temp_dir_for(final)
    try:
        np.save(tmp / EMBEDDINGS, emb.astype(np.float16))
        return finalize_store(final, tmp, m, files, encoder=encoder, source_dir=source_dir, skipped=skipped,
                              index=index, extra_meta=extra_meta)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def merge_stores(stores: Sequence[StatsStore], out: str | os.PathLike, *, index: str = "auto") -> StatsStore:
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
    final = Path(out).expanduser().absolute()
    if any(final.resolve() == s.path.resolve() for s in stores):
        raise OviError("--out must differ from the stores being merged")
    sources = {s.meta.get("source_dir") for s in stores}
    common = sources.pop() if len(sources) == 1 else None

    def rebase(name: str, store: StatsStore) -> str:
        src = store.meta.get("source_dir")
        if common is not None or not src or os.path.isabs(name):
            return name
        return str(Path(src) / name)

    moments = Moments.empty(first.dim)
    files: list[str] = []
    skipped: list[dict] = []
    for s in stores:
        moments = moments.merge(s.moments())
        files.extend(rebase(f, s) for f in s.files)
        skipped.extend({**k, "path": rebase(str(k.get("path", "")), s)} for k in s.skipped)
    tmp = temp_dir_for(final)
    try:
        out_emb = np.lib.format.open_memmap(tmp / EMBEDDINGS, mode="w+", dtype=np.float16,
                                            shape=(moments.n, first.dim))
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
        return finalize_store(final, tmp, moments, files, encoder=first.encoder, source_dir=common,
                              skipped=skipped, index=index, extra_meta={"merged_from": merged_from})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
