"""Building a statistics store from a folder of images (or from embedding dumps), streaming.

Pipeline: the sorted file list is cut into fixed batches of `batch_size` file positions. Worker
processes (a torch DataLoader) decode and preprocess whole batches ahead of time while the main
process encodes the previous one with the vision tower, updates the float64 moments, and appends
the float16 embeddings to a raw file. Memory stays flat: only a few batches are in flight.

Checkpoints: everything lives in a hidden work folder beside the output (`.NAME.partial/`):
`plan.json` (files, encoder, batch size), `embeddings.f16` (appended rows) and `state.safetensors`
(moments + next batch + skipped files, one file replaced atomically). `--resume` reloads the plan
and the last state, truncates the raw rows to the checkpoint, and goes on from the next batch; the
batch partition is the same, so the result equals an uninterrupted build bit for bit. The store
itself only appears at the end, by one rename.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ovi_cli.errors import OviError
from ovi_cli.outputs import atomic_write_json
from ovi_stats.images import IMAGE_EXTENSIONS, BadImage, find_images, load_rgb
from ovi_stats.moments import Moments, batch_moments
from ovi_stats.store import EMBEDDINGS, StatsStore, finalize_store, temp_dir_for

PLAN = "plan.json"
STATE = "state.safetensors"
RAW = "embeddings.f16"
WORK_FORMAT = 1


# ---- pure helpers ----------------------------------------------------------------------------
def parse_shard(text: str | None) -> tuple[int, int] | None:
    """`"I/N"` (1-based, 1 <= I <= N) -> (I, N); None -> None."""
    if text is None:
        return None
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise OviError(f"--shard must look like I/N (e.g. 1/4), got {text!r}") from None
    if n < 1 or not 1 <= i <= n:
        raise OviError(f"--shard {text}: need 1 <= I <= N")
    return i, n


def shard_slice(count: int, shard: tuple[int, int] | None) -> slice:
    """The contiguous block of positions that shard I of N takes (blocks differ in size by <= 1)."""
    if shard is None:
        return slice(0, count)
    i, n = shard
    return slice((i - 1) * count // n, i * count // n)


def select_files(files: Sequence[str], limit: int | None, shard: tuple[int, int] | None) -> list[str]:
    """First `limit` files, then shard I/N's block of them (so shards of a limited build merge to it)."""
    chosen = list(files[:limit] if limit is not None else files)
    return chosen[shard_slice(len(chosen), shard)]


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def work_dir_for(final: Path) -> Path:
    return final.with_name(f".{final.name}.partial")


# ---- decoding in workers ---------------------------------------------------------------------
class _BatchDecoder(torch.utils.data.Dataset):
    """Item b = batch b: (positions, pixel tensor of the good images or None, [(position, reason)])."""

    def __init__(self, root: Path, files: Sequence[str], processor, batch_size: int, first_batch: int) -> None:
        self.root, self.files, self.processor = root, files, processor
        self.batch_size, self.first_batch = batch_size, first_batch
        self.n_batches = -(-len(files) // batch_size)

    def __len__(self) -> int:
        return self.n_batches - self.first_batch

    def __getitem__(self, item: int):
        b = self.first_batch + item
        positions = range(b * self.batch_size, min((b + 1) * self.batch_size, len(self.files)))
        good, images, bad = [], [], []
        for pos in positions:
            try:
                images.append(load_rgb(self.root / self.files[pos]))
                good.append(pos)
            except BadImage as exc:
                bad.append((pos, str(exc)))
        pixels = None
        if images:
            try:
                pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
            except Exception:  # one odd image must not sink its batch: redo one by one
                keep, rows = [], []
                for pos, im in zip(good, images):
                    try:
                        rows.append(self.processor(images=[im], return_tensors="pt")["pixel_values"][0])
                        keep.append(pos)
                    except Exception as exc:
                        bad.append((pos, f"preprocessing failed ({exc.__class__.__name__})"))
                good = keep
                pixels = torch.stack(rows) if rows else None
        return b, good, pixels, sorted(bad)


def _identity(x):
    return x


# ---- checkpoints -----------------------------------------------------------------------------
@dataclass
class BuildState:
    next_batch: int
    moments: Moments
    skipped: list[dict] = field(default_factory=list)  # {"pos", "path", "reason"}

    def save(self, work: Path) -> None:
        from safetensors.torch import save_file

        m = self.moments.to_numpy()
        tmp = work / f".{STATE}.tmp"
        save_file(
            {"n": torch.tensor(m.n, dtype=torch.int64), "mean": torch.from_numpy(m.mean.copy()),
             "m2": torch.from_numpy(np.ascontiguousarray(m.m2)), "m3": torch.from_numpy(m.m3.copy()),
             "q4": torch.tensor(m.q4, dtype=torch.float64)},
            str(tmp),
            metadata={"state": json.dumps({"next_batch": self.next_batch, "skipped": self.skipped})},
        )
        os.replace(tmp, work / STATE)

    @classmethod
    def load(cls, work: Path) -> BuildState:
        from safetensors import safe_open

        with safe_open(str(work / STATE), framework="pt") as f:
            meta = json.loads(f.metadata()["state"])
            t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        m = Moments(int(t["n"]), t["mean"].numpy(), t["m2"].numpy(), t["m3"].numpy(), float(t["q4"]))
        return cls(int(meta["next_batch"]), m, list(meta["skipped"]))


@dataclass
class BuildProgress:
    done: int  # file positions finished (this run and before)
    total: int
    encoded: int  # embeddings so far
    skipped: int
    rate: float  # images/s in this run


@dataclass
class BuildResult:
    store: StatsStore
    skipped: list[dict]
    seconds: float
    processed: int  # files handled in this run (encoded or skipped)
    resumed_from: int  # file positions already done when this run started



def _reason_summary(skipped: Sequence[dict]) -> str:
    kinds: dict[str, int] = {}
    for s in skipped:
        key = str(s.get("reason", "")).split(" (")[0]
        kinds[key] = kinds.get(key, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))


# ---- the builder -----------------------------------------------------------------------------
def build_stats(
    source_dir: str | os.PathLike,
    out: str | os.PathLike,
    encoders,
    *,
    batch_size: int = 64,
    limit: int | None = None,
    workers: int | None = None,
    index: str = "auto",
    shard: tuple[int, int] | None = None,
    resume: bool = False,
    force: bool = False,
    checkpoint_seconds: float = 60.0,
    on_progress: Callable[[BuildProgress], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> BuildResult:
    """Encode every image under `source_dir` and write a store at `out` (see the module docstring).

    `on_batch(b)` is called after batch b is folded in (and checkpointed when due); tests use it
    to interrupt a build.
    """
    start_time = time.perf_counter()
    root = Path(source_dir).expanduser().absolute()
    final = Path(out).expanduser().absolute()
    work = work_dir_for(final)
    if batch_size < 1:
        raise OviError("--batch-size must be >= 1")
    if limit is not None and limit < 1:
        raise OviError("--limit must be >= 1")
    if not root.is_dir():
        raise OviError(f"{str(source_dir)!r} is not a folder")
    if final.exists() and not force:
        raise OviError(f"{str(final)!r} already exists: pass --force to replace it")
    encoder_info = {"source": encoders.source, "fingerprint": encoders.fingerprint()}
    dim = int(encoders.embed_dim)

    plan: dict | None = None
    state: BuildState | None = None
    if work.exists():
        if resume and (work / PLAN).is_file():
            plan = json.loads((work / PLAN).read_text(encoding="utf-8"))
            if plan.get("encoder", {}).get("fingerprint") != encoder_info["fingerprint"]:
                raise OviError(
                    f"the interrupted build at {str(work)!r} used encoder {plan['encoder'].get('source')!r} "
                    f"(fingerprint {plan['encoder'].get('fingerprint')}), not {encoders.source!r} "
                    f"(fingerprint {encoder_info['fingerprint']}); use the same --encoder-model or --force"
                )
            if plan.get("source_dir") != str(root):
                raise OviError(f"the interrupted build at {str(work)!r} reads {plan.get('source_dir')!r}, "
                               f"not {str(root)!r}")
            if (work / STATE).is_file():
                state = BuildState.load(work)
        elif resume:
            shutil.rmtree(work)
        elif force:
            shutil.rmtree(work)
        else:
            raise OviError(f"an interrupted build exists at {str(work)!r}: rerun with --resume to continue it, "
                           "or --force to start over")

    if plan is None:
        files_all = find_images(root)
        if not files_all:
            raise OviError(f"no images ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}) under {str(root)!r}")
        files = select_files(files_all, limit, shard)
        if not files:
            raise OviError(f"shard {shard[0]}/{shard[1]} of {len(files_all)} images is empty" if shard
                           else "no images selected")
        plan = {"work_format": WORK_FORMAT, "source_dir": str(root), "files": files, "batch_size": batch_size,
                "encoder": encoder_info, "dim": dim, "index": index, "limit": limit,
                "shard": list(shard) if shard else None}
        work.mkdir(parents=True)
        atomic_write_json(work / PLAN, plan)
    files = list(plan["files"])
    batch_size = int(plan["batch_size"])
    if state is None:
        state = BuildState(0, Moments.empty(dim))
    resumed_from = min(state.next_batch * batch_size, len(files))

    # rows written after the last checkpoint are dropped
    raw_path = work / RAW
    keep_bytes = state.moments.n * dim * 2
    with open(raw_path, "ab") as f:
        f.truncate(keep_bytes)

    decoder = _BatchDecoder(root, files, encoders.image_processor, batch_size, state.next_batch)
    n_workers = default_workers() if workers is None else max(0, int(workers))
    loader = torch.utils.data.DataLoader(
        decoder, batch_size=None, shuffle=False, num_workers=n_workers, collate_fn=_identity,
        prefetch_factor=4 if n_workers else None,
        pin_memory=getattr(encoders.device, "type", "cpu") == "cuda",
    )
    # fold batches into the moments on the encoder's device (float64; MPS has none, so CPU there):
    # on a GPU this keeps the O(B D^2) update off the host, between two encoder calls
    dev = torch.device(getattr(encoders, "device", "cpu"))
    fold_device = dev if dev.type in ("cpu", "cuda") else torch.device("cpu")
    state.moments = state.moments.to_torch(fold_device)
    run_start = time.perf_counter()
    last_ckpt = time.monotonic()
    encoded_run = 0
    try:
        with open(raw_path, "ab") as raw:
            for b, good, pixels, bad in loader:
                if pixels is not None:
                    rows = encoders.encode_pixels(pixels).float()
                    finite = torch.isfinite(rows).all(dim=1)
                    if not bool(finite.all()):
                        flags = finite.cpu().tolist()
                        bad = sorted(bad + [(p, "encoder gave non-finite values")
                                            for p, ok in zip(good, flags) if not ok])
                        rows = rows[finite]
                    if len(rows):
                        state.moments = state.moments.merge(batch_moments(rows.to(fold_device)))
                        raw.write(rows.half().cpu().numpy().tobytes())
                        encoded_run += len(rows)
                state.skipped.extend({"pos": p, "path": files[p], "reason": r} for p, r in bad)
                state.next_batch = b + 1
                if time.monotonic() - last_ckpt >= checkpoint_seconds:
                    raw.flush()
                    os.fsync(raw.fileno())
                    state.save(work)
                    last_ckpt = time.monotonic()
                if on_progress is not None:
                    done = min(state.next_batch * batch_size, len(files))
                    elapsed = max(time.perf_counter() - run_start, 1e-9)
                    on_progress(BuildProgress(done, len(files), state.moments.n, len(state.skipped),
                                              (done - resumed_from) / elapsed))
                if on_batch is not None:
                    on_batch(b)
            raw.flush()
            os.fsync(raw.fileno())
        state.save(work)
    except OSError as exc:  # disk full, folder removed, ...: say so in one line; the checkpoint stays
        raise OviError(f"cannot write the build in {str(work)!r}: {exc.strerror or exc}; fix that and rerun "
                       "with --resume") from exc
    except RuntimeError as exc:
        if "DataLoader worker" not in str(exc):
            raise
        raise OviError(f"a decoding worker died ({str(exc).splitlines()[0]}); rerun with --resume, and with "
                       "--workers 0 to see which file") from exc
    state.moments = state.moments.to_numpy()

    skipped = [{"path": s["path"], "reason": s["reason"]} for s in state.skipped]
    if state.moments.n < 2:
        shutil.rmtree(work, ignore_errors=True)
        what = "no valid image" if state.moments.n == 0 else "only 1 valid image (a store needs at least 2)"
        detail = f" ({len(skipped)} skipped: {_reason_summary(skipped)})" if skipped else ""
        raise OviError(f"{what} in {str(root)!r}{detail}; nothing written")

    bad_pos = {int(s["pos"]) for s in state.skipped}
    good_files = [f for pos, f in enumerate(files) if pos not in bad_pos]
    tmp = temp_dir_for(final)
    try:
        n = state.moments.n
        emb = np.lib.format.open_memmap(tmp / EMBEDDINGS, mode="w+", dtype=np.float16, shape=(n, dim))
        src = np.memmap(raw_path, dtype=np.float16, mode="r", shape=(n, dim))
        for i in range(0, n, 65536):
            emb[i : i + 65536] = src[i : i + 65536]
        emb.flush()
        del emb, src
        extra = {"build": {"batch_size": batch_size, "limit": plan.get("limit"), "shard": plan.get("shard"),
                           "files_seen": len(files)}}
        store = finalize_store(final, tmp, state.moments, good_files, encoder=encoder_info, source_dir=str(root),
                               skipped=skipped, index=index, extra_meta=extra)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return BuildResult(store, skipped, time.perf_counter() - start_time, len(files) - resumed_from, resumed_from)


# ---- from embedding dumps --------------------------------------------------------------------
def _embedding_sources(paths: Sequence[Path]) -> list[tuple[Path, int, int, Callable[[int, int], np.ndarray]]]:
    """(path, rows, dim, read(lo, hi)) for each .npy / .safetensors file, without loading it all."""
    out = []
    for p in paths:
        if not p.is_file():
            raise OviError(f"no such embeddings file {str(p)!r}")
        suffix = p.suffix.lower()
        if suffix == ".npy":
            try:
                arr = np.load(p, mmap_mode="r")
            except Exception as exc:
                raise OviError(f"cannot read {str(p)!r} as .npy: {exc.__class__.__name__}") from exc
            if arr.ndim != 2 or arr.dtype.kind != "f":
                raise OviError(f"{str(p)!r} holds a {arr.dtype} array of shape {arr.shape}; need float [N, D]")
            out.append((p, arr.shape[0], arr.shape[1], lambda lo, hi, a=arr: np.asarray(a[lo:hi], np.float64)))
        elif suffix == ".safetensors":
            from safetensors import safe_open

            try:
                f = safe_open(str(p), framework="np")
                keys = list(f.keys())
            except Exception as exc:
                raise OviError(f"cannot read {str(p)!r} as .safetensors: {exc.__class__.__name__}") from exc
            names = [k for k in ("image_embeds", "embeddings") if k in keys] or (keys if len(keys) == 1 else [])
            if not names:
                raise OviError(f"{str(p)!r} holds tensors {keys}; expected one named image_embeds or embeddings")
            sl = f.get_slice(names[0])
            shape = sl.get_shape()
            if len(shape) != 2:
                raise OviError(f"tensor {names[0]!r} in {str(p)!r} has shape {shape}; need [N, D]")
            out.append((p, shape[0], shape[1], lambda lo, hi, s=sl: np.asarray(s[lo:hi], np.float64)))
        else:
            raise OviError(f"{str(p)!r}: embeddings must be .npy or .safetensors")
    return out


def read_file_list(path: Path) -> list[str]:
    """Names for the embedding rows: a .json list, or a text file with one name per line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OviError(f"cannot read file list {str(path)!r}: {exc.__class__.__name__}") from exc
    if path.suffix.lower() == ".json":
        names = json.loads(text)
        if not isinstance(names, list):
            raise OviError(f"{str(path)!r} must hold a JSON list of names")
        return [str(x) for x in names]
    return [ln for ln in text.splitlines() if ln.strip()]


def build_from_embeddings(
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    encoder: dict,
    *,
    dim: int | None = None,
    file_list: str | os.PathLike | None = None,
    index: str = "auto",
    force: bool = False,
    chunk: int = 8192,
) -> StatsStore:
    """A store from embedding dumps (rows in the order given), streaming, without encoding."""
    final = Path(out).expanduser().absolute()
    if final.exists() and not force:
        raise OviError(f"{str(final)!r} already exists: pass --force to replace it")
    sources = _embedding_sources([Path(p).expanduser() for p in paths])
    dims = {d for _, _, d, _ in sources}
    if len(dims) != 1:
        raise OviError(f"the embedding files have different widths: {sorted(dims)}")
    width = dims.pop()
    if dim is not None and width != dim:
        raise OviError(f"the embeddings are {width}-d but encoder {encoder.get('source')!r} gives {dim}-d embeddings")
    total = sum(n for _, n, _, _ in sources)
    if file_list is not None:
        files = read_file_list(Path(file_list).expanduser())
        if len(files) != total:
            raise OviError(f"file list has {len(files)} names for {total} embeddings")
    else:
        files = [f"{p.name}#{i}" for p, n, _, _ in sources for i in range(n)]
    moments = Moments.empty(width)
    tmp = temp_dir_for(final)
    try:
        emb = np.lib.format.open_memmap(tmp / EMBEDDINGS, mode="w+", dtype=np.float16, shape=(total, width))
        row = 0
        for p, n, _, read in sources:
            for lo in range(0, n, chunk):
                block = read(lo, min(n, lo + chunk))
                if not np.isfinite(block).all():
                    raise OviError(f"{str(p)!r} holds NaN or infinite values (rows {lo}..{lo + len(block) - 1})")
                moments = moments.merge(batch_moments(block))
                emb[row : row + len(block)] = block.astype(np.float16)
                row += len(block)
        emb.flush()
        del emb
        extra = {"from_embeddings": [str(Path(p).expanduser().absolute()) for p in paths]}
        return finalize_store(final, tmp, moments, files, encoder=encoder, source_dir=None, index=index,
                              extra_meta=extra)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

