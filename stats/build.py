"""Building a statistics store from an image source (a folder, webdataset shards, ...) or from
embeddings (dumps, or an embedding source such as clip-retrieval's output), streaming.

The source (`ovi_stats.sources.ImageSource`) gives ordered *units* (an image file, a tar shard)
and each unit's samples. The plan fixes this build's units (`--shard I/N`: a contiguous block of
whole units while there are enough, else every N-th sample of each unit; `--limit`) and cuts the
resulting sample stream into fixed batches of `batch_size`. Worker processes (a torch DataLoader
over `_StreamDecoder`) decode and preprocess whole batches ahead of time (worker w takes batches
b = w mod W, in order) while the main process encodes the previous one with the vision tower,
updates the float64 moments, and appends the float16 embeddings and each row's key and metadata
to raw files. Memory stays flat: only a few batches are in flight.

Large images are decoded at a reduced size (JPEG `draft`, `reduce` otherwise) whose shorter side
stays at least 4x the encoder's input size, so a batch never holds full-size decodes.

Checkpoints: everything lives in a hidden work folder beside the output (`.NAME.partial/`):
`plan.json` (source, units, encoder, batch size, limit, shard, index), `embeddings.f16` and
`rows.jsonl` (appended rows) and `state.safetensors` (moments, next batch, stream position
(unit, offset), skipped samples: one file replaced atomically). `--resume` checks the plan and
that this run asks the same source and settings (a difference is refused, naming it), reloads the
last state, truncates the raw rows to the checkpoint, and goes on from the stream position; the
batch partition is the same, so the result equals an uninterrupted build bit for bit. The store
itself only appears at the end, by one rename.

One build at a time per output: the whole build holds the store's lock (`ovi_stats.lock`); a
second build, resume or merge into the same path is refused with "build in progress (pid N)".

Steps: `open_work` (plan and checkpoint) -> `encode_all` (the batches) -> `finish` (the store).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np
import torch

from ovi_cli.checks import MAX_BATCH, check_float, check_int, check_worker_file_limit, read_input_bytes
from ovi_cli.errors import OviError, first_line
from ovi_cli.outputs import (
    TEMP_SUFFIX,
    OutputError,
    atomic_write_bytes,
    atomic_write_json,
    new_file,
    open_append,
    private_dir,
    remove_tree,
    write_errors,
)
from ovi_cli.reporter import Reporter
from ovi_stats.images import BadImage, load_rgb
from ovi_stats.index import DEFAULT_MEMORY, INDEX_TYPES
from ovi_stats.lock import store_lock
from ovi_stats.moments import Moments, batch_moments
from ovi_stats.sources import FolderSource, ImageSource, SourceSample
from ovi_stats.store import (
    EMBEDDINGS,
    StatsStore,
    check_store_target,
    finalize_store,
    new_embeddings_file,
)

PLAN = "plan.json"
STATE = "state.safetensors"
RAW = "embeddings.f16"
ROWS = "rows.jsonl"  # each encoded row's key and metadata, in row order
WORK_FILES = (PLAN, STATE, RAW, ROWS)
WORK_FORMAT = 2
DEFAULT_BATCH_SIZE = 64
F16_MAX = 65504.0  # embeddings are stored as float16


# ---- pure helpers ----------------------------------------------------------------------------
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


# ---- the sample stream -----------------------------------------------------------------------
def share_units(units: Sequence[str], shard: tuple[int, int] | None, single: bool,
                limit: int | None) -> tuple[list[str], list[int] | None]:
    """This share's units and, when it splits by sample, `[I, N]` (keep every N-th sample of each unit).

    A source with one sample a unit (a folder: a unit is a file) keeps the first `limit` units,
    then shard I/N's contiguous block of them (so the shards of a limited build merge to it). A
    source with many samples a unit (tar shards) gives each share a contiguous block of whole units
    while there are at least N units, and otherwise every unit with every N-th sample of each.
    """
    if single:
        return select_files(units, limit, shard), None
    if shard is None:
        return list(units), None
    if len(units) >= shard[1]:
        return list(units)[shard_slice(len(units), shard)], None
    return list(units), [shard[0], shard[1]]


def stream(source, units: Sequence[str], start: tuple[int, int], split: Sequence[int] | None
           ) -> Iterator[tuple[tuple[int, int], SourceSample]]:
    """`((unit, offset after it), sample)` for every sample of this share from `start` = (unit, offset)."""
    u0, off0 = start
    for u in range(u0, len(units)):
        j = off0 if u == u0 else 0
        for sample in source.samples(units[u], j):
            j += 1
            if split is None or (j - 1) % split[1] == split[0] - 1:
                yield (u, j), sample


# ---- decoding in workers ---------------------------------------------------------------------
def _decode_batch(samples: Sequence[tuple[int, SourceSample]], processor, min_side: int | None):
    """(good [(pos, key, metadata)], pixels or None, bad [(pos, key, reason)]) of one batch."""
    good, images, bad = [], [], []
    for pos, s in samples:
        if s.error is not None:
            bad.append((pos, s.key, s.error))
            continue
        try:
            images.append(load_rgb(s.image if s.image is not None else s.path, min_side))
            good.append((pos, s.key, s.metadata))
        except BadImage as exc:
            bad.append((pos, s.key, str(exc)))
    pixels = None
    if images:
        try:
            pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        except Exception:  # one odd image must not sink its batch: redo one by one
            keep, rows = [], []
            for g, im in zip(good, images):
                try:
                    rows.append(processor(images=[im], return_tensors="pt")["pixel_values"][0])
                    keep.append(g)
                except Exception as exc:
                    bad.append((g[0], g[1], f"preprocessing failed ({exc.__class__.__name__})"))
            good = keep
            pixels = torch.stack(rows) if rows else None
    return good, pixels, sorted(bad)


class _StreamDecoder(torch.utils.data.IterableDataset):
    """Batches of the share's sample stream, decoded: `(b, good, pixels, bad, (unit, offset) after, count)`.

    Batch b is samples [b * size, (b + 1) * size) of the stream counted from the resume point, the
    same partition whatever the worker count. With W workers, worker w decodes the batches
    b = w (mod W) and passes over the others' samples without decoding them (a folder's samples
    are file paths; a tar's are read, not decoded), and the DataLoader hands them back in order.
    """

    def __init__(self, source, run: _Run, processor, min_side: int | None) -> None:
        self.source, self.units, self.split = source, run.files, run.plan.get("split")
        self.size, self.first_batch, self.processor, self.min_side = run.batch_size, run.state.next_batch, \
            processor, min_side
        self.start = (run.state.unit, run.state.offset)
        self.limit_left = None if run.plan.get("sample_limit") is None else run.plan["sample_limit"] - run.state.done
        self.done = run.state.done

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        me, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        b, batch, count, after = self.first_batch, [], 0, self.start
        pos = self.done
        for after, sample in stream(self.source, self.units, self.start, self.split):
            if self.limit_left is not None and pos - self.done >= self.limit_left:
                break
            if (b - self.first_batch) % workers == me:
                batch.append((pos, sample))
            count += 1
            pos += 1
            if count == self.size:
                if batch:
                    yield (b, *_decode_batch(batch, self.processor, self.min_side), after, count)
                b, batch, count = b + 1, [], 0
        if count and (b - self.first_batch) % workers == me:
            yield (b, *_decode_batch(batch, self.processor, self.min_side), after, count)


def _identity(x):
    return x


# ---- checkpoints -----------------------------------------------------------------------------
def _damaged(work: Path, what: str) -> OviError:
    return OviError(f"the interrupted build at {str(work)!r} is damaged ({what}); rerun with --force to start over")


@dataclass
class BuildState:
    next_batch: int
    moments: Moments
    skipped: list[dict] = field(default_factory=list)  # {"pos", "path", "reason"}
    done: int = 0  # samples of the stream finished (encoded or skipped)
    unit: int = 0  # the stream goes on at this unit ...
    offset: int = 0  # ... after this many of its samples
    rows_bytes: int = 0  # length of rows.jsonl at this checkpoint
    finished: bool = False  # the stream ended

    def save(self, work: Path) -> None:
        from safetensors.torch import save

        m = self.moments.to_numpy()
        tensors = {"n": torch.tensor(m.n, dtype=torch.int64), "mean": torch.from_numpy(m.mean.copy()),
                   "m2": torch.from_numpy(np.ascontiguousarray(m.m2)), "m3": torch.from_numpy(m.m3.copy()),
                   "q4": torch.tensor(m.q4, dtype=torch.float64)}
        meta = {"state": json.dumps({"next_batch": self.next_batch, "skipped": self.skipped, "done": self.done,
                                     "unit": self.unit, "offset": self.offset, "rows_bytes": self.rows_bytes,
                                     "finished": self.finished})}
        atomic_write_bytes(work / STATE, save(tensors, metadata=meta))

    @classmethod
    def load(cls, work: Path, plan: dict) -> BuildState:
        """The last checkpoint, checked against the plan (a damaged one is a one-line error)."""
        from safetensors import safe_open

        try:
            with safe_open(str(work / STATE), framework="pt") as f:
                meta = json.loads(f.metadata()["state"])
                t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
            m = Moments(int(t["n"]), t["mean"].numpy(), t["m2"].numpy(), t["m3"].numpy(), float(t["q4"]))
            state = cls(int(meta["next_batch"]), m, list(meta["skipped"]), int(meta["done"]), int(meta["unit"]),
                        int(meta["offset"]), int(meta["rows_bytes"]), bool(meta["finished"]))
        except Exception as exc:  # noqa: BLE001 - SafetensorError, KeyError, JSON ...: a damaged file
            raise _damaged(work, f"{STATE}: {first_line(exc)}") from None
        problem = state.problem(plan)
        if problem:
            raise _damaged(work, f"{STATE}: {problem}")
        return state

    def problem(self, plan: dict) -> str | None:
        files, dim, bs = plan["files"], plan["dim"], plan["batch_size"]
        m = self.moments
        if not 0 <= self.unit <= len(files) or self.offset < 0 or self.rows_bytes < 0:
            return f"stream position {self.unit}/{self.offset} is out of range"
        if not 0 <= self.done <= self.next_batch * bs or self.next_batch < 0:
            return f"next batch {self.next_batch} is out of range"
        if plan.get("single") and self.done != min(self.next_batch * bs, len(files)):
            return f"next batch {self.next_batch} is out of range"
        if tuple(m.mean.shape) != (dim,) or tuple(m.m2.shape) != (dim, dim):
            return f"moments of dimension {m.dim}, the plan says {dim}"
        if not all(isinstance(s, dict) and isinstance(s.get("pos"), int) and 0 <= s["pos"] < self.done
                   for s in self.skipped):
            return "a skipped entry does not name a finished file"
        if m.n + len(self.skipped) != self.done:
            return f"{m.n} embeddings + {len(self.skipped)} skipped files != {self.done} files done"
        return None


@dataclass
class BuildResult:
    store: StatsStore
    skipped: list[dict]
    seconds: float
    processed: int  # samples handled in this run (encoded or skipped)
    resumed_from: int  # samples already done when this run started


def _reason_summary(skipped: Sequence[dict]) -> str:
    kinds: dict[str, int] = {}
    for s in skipped:
        key = str(s.get("reason", "")).split(" (")[0]
        kinds[key] = kinds.get(key, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))


# ---- the plan: what a build does, fixed when it starts -----------------------------------------
def _safe_relative(name: object) -> bool:
    """A plan's file name: relative, inside the source folder (no `..`), no NUL."""
    if not isinstance(name, str) or not name or "\x00" in name:
        return False
    p = PurePosixPath(name)
    return not p.is_absolute() and ".." not in p.parts


def plan_problem(plan: object) -> str | None:
    """What is wrong with a loaded `plan.json` (None when nothing is)."""
    if not isinstance(plan, dict):
        return "not a JSON object"
    if plan.get("work_format") != WORK_FORMAT:
        return f"work_format {plan.get('work_format')!r}, this ovi resumes format {WORK_FORMAT}"
    files = plan.get("files")
    if not isinstance(files, list) or not files or not all(_safe_relative(f) for f in files):
        return "files must be a non-empty list of paths inside the image folder"
    for key in ("batch_size", "dim", "index_memory"):
        if not isinstance(plan.get(key), int) or isinstance(plan.get(key), bool) or plan[key] < 1:
            return f"{key} must be a positive integer"
    if not isinstance(plan.get("source_dir"), str) or not isinstance(plan.get("encoder"), dict) \
            or not isinstance(plan.get("source"), dict):
        return "source, source_dir and encoder are missing"
    if plan.get("index") not in INDEX_TYPES:
        return f"index {plan.get('index')!r} is not one of {', '.join(INDEX_TYPES)}"
    limit, shard, split = plan.get("limit"), plan.get("shard"), plan.get("split")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        return "limit must be null or a positive integer"
    for name, value in (("shard", shard), ("split", split)):
        if value is not None and not (isinstance(value, list) and len(value) == 2
                                      and all(isinstance(x, int) for x in value) and 1 <= value[0] <= value[1]):
            return f"{name} must be null or [I, N]"
    return None


def load_plan(work: Path) -> dict:
    if not (work / PLAN).is_file():  # missing, or a FIFO or device that would block the build
        raise _damaged(work, f"{PLAN}: not a regular file")
    try:
        plan = json.loads((work / PLAN).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise _damaged(work, f"{PLAN}: {first_line(exc)}") from None
    problem = plan_problem(plan)
    if problem:
        raise _damaged(work, f"{PLAN}: {problem}")
    return plan


def _shown(key: str, value: object) -> str:
    if value is None:
        return "none" if key != "batch_size" else "default"
    if key == "shard":
        return f"{value[0]}/{value[1]}"
    return str(value)


RESUMED_SETTINGS = (("limit", "--limit"), ("shard", "--shard"), ("batch_size", "--batch-size"), ("index", "--index"),
                    ("index_memory", "--index-memory"))
AS_PLANNED = ("batch_size", "index", "index_memory")  # asked as None: "as the interrupted build had it"


def changed_settings(plan: dict, asked: dict) -> list[str]:
    """`--flag OLD (now NEW)` for each setting this run asks differently from the plan.

    What differs is the one resume policy's answer (`ovi_cli.resume.settings_differences`);
    the wording is build-stats' own (`(now ...)`, as its tests and users know it). `batch_size`,
    `index` and `index_memory` asked as None mean "as planned"; `limit` and `shard` are compared as
    given (None = all files, no shard), since they decide which files the store holds.
    """
    from ovi_cli.resume import settings_differences

    old = {key: plan.get(key) for key, _ in RESUMED_SETTINGS}
    new = {key: plan.get(key) if key in AS_PLANNED and asked.get(key) is None else asked.get(key)
           for key, _ in RESUMED_SETTINGS}
    differs = {name for name, _, _ in settings_differences(old, new)}
    return [f"{flag} {_shown(key, old[key])} (now {_shown(key, new[key])})"
            for key, flag in RESUMED_SETTINGS if key in differs]


def check_resumable(work: Path, plan: dict, asked: dict) -> None:
    """Refuse to resume with another encoder, source or build settings (naming them)."""
    enc, want = plan["encoder"], asked["encoder"]
    if enc.get("fingerprint") != want["fingerprint"]:
        raise OviError(
            f"the interrupted build at {str(work)!r} used encoder {enc.get('source')!r} "
            f"(fingerprint {enc.get('fingerprint')}), not {want['source']!r} "
            f"(fingerprint {want['fingerprint']}); use the same --encoder-model or --force")
    if plan["source_dir"] != asked["source_dir"] or plan["source"] != asked["source"]:
        was = plan["source"].get("spec", plan["source_dir"])
        now = asked["source"]
        raise OviError(f"the interrupted build at {str(work)!r} reads {was!r} ({plan['source'].get('source')}), "
                       f"not {now.get('spec')!r} ({now.get('source')})")
    changed = changed_settings(plan, asked)
    if changed:
        raise OviError(f"--resume: the interrupted build at {str(work)!r} was started with other settings: "
                       f"{', '.join(changed)}; rerun with its settings, or --force to start over")


def check_work_dir(work: Path) -> None:
    """A work folder holds only ovi's files: anything else there is never deleted."""
    if work.is_symlink() or not work.is_dir():
        raise OviError(f"{str(work)!r} is in the way of the build's work folder: move it away")
    extra = sorted(e.name for e in os.scandir(work) if e.name not in WORK_FILES and not e.name.endswith(TEMP_SUFFIX))
    if extra:
        raise OviError(f"{str(work)!r} holds files a build does not write (e.g. {extra[0]!r}); refusing to touch "
                       "it: move it away")


def new_plan(work: Path, source, asked: dict) -> dict:
    """List the source's units, fix the plan, and create the work folder holding it (removed if that fails)."""
    units_all = source.units()
    if not units_all:
        raise OviError(f"nothing to read in {source.spec!r} (source {source.name})")
    shard = tuple(asked["shard"]) if asked["shard"] else None
    single = bool(getattr(source, "single_sample_units", False))
    files, split = share_units(units_all, shard, single, asked["limit"])
    if not files:
        raise OviError(f"shard {shard[0]}/{shard[1]} of {len(units_all)} images is empty" if shard
                       else "no images selected")
    plan = {**asked, "work_format": WORK_FORMAT, "files": files, "split": split, "single": single,
            "sample_limit": None if single else asked["limit"],
            "batch_size": asked["batch_size"] or DEFAULT_BATCH_SIZE, "index": asked["index"] or "auto",
            "index_memory": asked["index_memory"] or DEFAULT_MEMORY}
    with write_errors(work, "create the work folder"):
        work.mkdir(parents=True)
    try:
        atomic_write_json(work / PLAN, plan)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return plan


def open_work(work: Path, source, asked: dict, *, resume: bool, force: bool) -> tuple[dict, BuildState]:
    """The plan and last checkpoint to continue from (`--resume`), or a new plan.

    A work folder without a plan (a start that failed) holds nothing to resume and is replaced;
    one with a plan needs `--resume` (continue) or `--force` (discard).
    """
    if os.path.lexists(work):
        check_work_dir(work)
        has_plan = (work / PLAN).is_file()
        if resume and has_plan:
            plan = load_plan(work)
            check_resumable(work, plan, asked)
            if (work / STATE).is_file():
                return plan, BuildState.load(work, plan)
            return plan, BuildState(0, Moments.empty(plan["dim"]))
        if has_plan and not force:
            raise OviError(f"an interrupted build exists at {str(work)!r}: rerun with --resume to continue it, "
                           "or --force to start over")
        remove_tree(work)
    plan = new_plan(work, source, asked)
    return plan, BuildState(0, Moments.empty(plan["dim"]))


# ---- encoding ----------------------------------------------------------------------------------
@dataclass
class _Run:
    """One run of a build: what it reads, where it writes, and how far it is."""

    source: Any
    work: Path
    plan: dict
    state: BuildState
    resumed_from: int = 0
    encoded: int = 0  # embeddings added in this run

    @property
    def root(self) -> Path:
        return Path(self.plan["source_dir"])

    @property
    def files(self) -> list[str]:
        return self.plan["files"]

    @property
    def batch_size(self) -> int:
        return int(self.plan["batch_size"])

    @property
    def dim(self) -> int:
        return int(self.plan["dim"])


def _open_raw(run: _Run) -> tuple[IO[bytes], IO[bytes]]:
    """The raw rows file and the rows' keys file, cut back to the last checkpoint."""
    path = run.work / RAW
    keep = run.state.moments.n * run.dim * 2
    raw = open_append(path)
    size = os.fstat(raw.fileno()).st_size
    if size < keep:
        raw.close()
        raise _damaged(run.work, f"{RAW} holds {size // (run.dim * 2)} rows, the checkpoint {run.state.moments.n}")
    raw.truncate(keep)
    rows = open_append(run.work / ROWS)
    if os.fstat(rows.fileno()).st_size < run.state.rows_bytes:
        raw.close()
        rows.close()
        raise _damaged(run.work, f"{ROWS} is shorter than the checkpoint says")
    rows.truncate(run.state.rows_bytes)
    return raw, rows


def _loader(run: _Run, encoders, workers: int | None):
    decoder = _StreamDecoder(run.source, run, encoders.image_processor, getattr(encoders, "image_size", None))
    n_workers = default_workers() if workers is None else int(workers)
    side = getattr(encoders, "image_size", None) or 224
    check_worker_file_limit(n_workers, min(run.batch_size, len(run.files)) * 3 * side * side * 4)  # float32 pixels
    return torch.utils.data.DataLoader(
        decoder, batch_size=None, shuffle=False, num_workers=n_workers, collate_fn=_identity,
        prefetch_factor=4 if n_workers else None,
        pin_memory=getattr(encoders.device, "type", "cpu") == "cuda",
    )


def _fold(run: _Run, encoders, item, raw: IO[bytes], rows_out: IO[bytes], fold_device: torch.device) -> None:
    """Encode one decoded batch, fold it into the moments, append its rows, record its skips."""
    b, good, pixels, bad, after, count = item
    if pixels is not None:
        rows = encoders.encode_pixels(pixels).float()
        finite = torch.isfinite(rows).all(dim=1)
        if not bool(finite.all()):
            flags = finite.cpu().tolist()
            bad = sorted(bad + [(g[0], g[1], "encoder gave non-finite values") for g, ok in zip(good, flags) if not ok])
            good = [g for g, ok in zip(good, flags) if ok]
            rows = rows[finite]
        if len(rows):
            run.state.moments = run.state.moments.merge(batch_moments(rows.to(fold_device)))
            raw.write(rows.half().cpu().numpy().tobytes())
            lines = b"".join((json.dumps({"key": key, "metadata": meta}, ensure_ascii=False, default=str) + "\n")
                             .encode("utf-8") for _, key, meta in good)
            rows_out.write(lines)
            run.state.rows_bytes += len(lines)
            run.encoded += len(rows)
    run.state.skipped.extend({"pos": p, "path": key, "reason": r} for p, key, r in bad)
    run.state.next_batch = b + 1
    run.state.done += count
    run.state.unit, run.state.offset = after


def _checkpoint(run: _Run, raw: IO[bytes], rows: IO[bytes]) -> None:
    for f in (raw, rows):
        f.flush()
        os.fsync(f.fileno())
    run.state.save(run.work)


def encode_all(run: _Run, encoders, *, workers: int | None, checkpoint_seconds: float,
               reporter: Reporter | None, on_batch: Callable[[int], None] | None) -> None:
    """Decode and encode every remaining batch, checkpointing every `checkpoint_seconds`."""
    # fold on the encoder's device (float64; MPS has none, so CPU there): on a GPU this keeps the
    # O(B D^2) update off the host, between two encoder calls
    dev = torch.device(getattr(encoders, "device", "cpu"))
    fold_device = dev if dev.type in ("cpu", "cuda") else torch.device("cpu")
    run.state.moments = run.state.moments.to_torch(fold_device)
    start, last_ckpt = time.perf_counter(), time.monotonic()
    total = len(run.files) if run.plan.get("single") else run.plan.get("sample_limit")
    reporter = reporter or Reporter()
    reporter.start("encoding images", total)
    if run.state.done:
        reporter.advance(run.state.done, "")
    try:
        raw, rows = _open_raw(run)
        with raw, rows:
            if not run.state.finished:
                for item in _loader(run, encoders, workers):
                    before = run.state.done
                    _fold(run, encoders, item, raw, rows, fold_device)
                    if time.monotonic() - last_ckpt >= checkpoint_seconds:
                        _checkpoint(run, raw, rows)
                        last_ckpt = time.monotonic()
                    rate = (run.state.done - run.resumed_from) / max(time.perf_counter() - start, 1e-9)
                    reporter.advance(run.state.done - before,
                                     f"{rate:.1f} img/s, {len(run.state.skipped)} skipped")
                    if on_batch is not None:
                        on_batch(item[0])
            run.state.finished = True
            _checkpoint(run, raw, rows)
    except OSError as exc:  # disk full, folder removed, ...: one line; the last checkpoint stays
        raise OviError(f"cannot write the build in {str(run.work)!r}: {exc.strerror or exc}; fix that and rerun "
                       "with --resume") from exc
    except OutputError as exc:
        raise OviError(f"{exc}; fix that and rerun with --resume") from exc
    except RuntimeError as exc:
        if "DataLoader worker" not in str(exc):
            raise
        raise OviError(f"a decoding worker died ({str(exc).splitlines()[0]}); rerun with --resume, and with "
                       "--workers 0 to see which file") from exc
    run.state.moments = run.state.moments.to_numpy()


# ---- the store ---------------------------------------------------------------------------------
def _write_embeddings(run: _Run, tmp: Path) -> None:
    n = run.state.moments.n
    emb = new_embeddings_file(tmp, n, run.dim)
    with write_errors(tmp / EMBEDDINGS):
        src = np.memmap(run.work / RAW, dtype=np.float16, mode="r", shape=(n, run.dim))
        for i in range(0, n, 65536):
            emb[i : i + 65536] = src[i : i + 65536]
        emb.flush()
    del emb, src


def _rows(run: _Run) -> Iterator[dict]:
    with open(run.work / ROWS, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def finish(run: _Run, final: Path) -> StatsStore:
    """Write the store from the finished run and remove the work folder.

    A deterministic failure (fewer than 2 valid images, zero variance) removes the work folder
    too: rerunning cannot change it. A write failure keeps it, so `--resume` redoes only this step.
    """
    skipped = [{"path": s["path"], "reason": s["reason"]} for s in run.state.skipped]
    if run.state.moments.n < 2:
        shutil.rmtree(run.work, ignore_errors=True)
        what = "no valid image" if run.state.moments.n == 0 else "only 1 valid image (a store needs at least 2)"
        detail = f" ({len(skipped)} skipped: {_reason_summary(skipped)})" if skipped else ""
        raise OviError(f"{what} in {str(run.source.spec)!r}{detail}; nothing written")
    plan = run.plan
    extra = {"build": {"batch_size": run.batch_size, "limit": plan.get("limit"), "shard": plan.get("shard"),
                       "files_seen": run.state.done, "source": plan["source"]}}
    rows_meta = ({"key": r["key"], **r["metadata"]} for r in _rows(run)) \
        if getattr(run.source, "row_metadata", False) else None
    tmp = private_dir(final)
    try:
        _write_embeddings(run, tmp)
        store = finalize_store(final, tmp, run.state.moments, (r["key"] for r in _rows(run)), encoder=plan["encoder"],
                               source_dir=str(run.root), skipped=skipped, index=plan["index"], extra_meta=extra,
                               index_memory=plan["index_memory"], rows_meta=rows_meta)
    except OutputError:
        raise
    except OviError:
        shutil.rmtree(run.work, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(run.work, ignore_errors=True)
    return store


# ---- the builder -------------------------------------------------------------------------------
def check_build_numbers(batch_size: int | None, limit: int | None, workers: int | None,
                        checkpoint_seconds: float) -> None:
    if batch_size is not None:
        check_int(batch_size, "--batch-size", minimum=1, maximum=MAX_BATCH)
    if limit is not None:
        check_int(limit, "--limit", minimum=1)
    if workers is not None:
        check_int(workers, "--workers", minimum=0, maximum=256)
    check_float(checkpoint_seconds, "--checkpoint-every", minimum=0)


def as_source(source: str | os.PathLike | ImageSource) -> ImageSource:
    """A source object: a path is an image folder (`FolderSource`); anything else must be a source."""
    if isinstance(source, ImageSource):
        return source
    root = Path(source).expanduser().absolute()
    if not root.is_dir():
        raise OviError(f"{str(source)!r} is not a folder")
    return FolderSource(str(root))


def build_stats(
    source: str | os.PathLike | ImageSource,
    out: str | os.PathLike,
    encoders,
    *,
    batch_size: int | None = None,
    limit: int | None = None,
    workers: int | None = None,
    index: str | None = None,
    index_memory: int | None = None,
    shard: tuple[int, int] | None = None,
    resume: bool = False,
    force: bool = False,
    checkpoint_seconds: float = 60.0,
    reporter: Reporter | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> BuildResult:
    """Encode every image of `source` (an image folder's path, or an `ImageSource`) and write a
    store at `out` (see the module docstring).

    `batch_size` / `index` / `index_memory` None: the interrupted build's on `resume`, else
    64 / auto / 4 GiB. Progress goes to `reporter` (`start`, `advance`). `on_batch(b)` is called
    after batch b is folded in (and checkpointed when due); tests use it to interrupt a build.
    """
    start_time = time.perf_counter()
    final = Path(out).expanduser().absolute()
    check_build_numbers(batch_size, limit, workers, checkpoint_seconds)
    if index is not None and index not in INDEX_TYPES:
        raise OviError(f"--index must be one of {', '.join(INDEX_TYPES)}, got {index!r}")
    src = as_source(source)
    if src.yields != "images":
        raise OviError(f"source {src.name!r} holds embeddings: build it with --from-embeddings")
    src.check()
    root = Path(src.root())
    asked = {"source_dir": str(root), "source": src.describe(),
             "encoder": {"source": encoders.source, "fingerprint": encoders.fingerprint()},
             "dim": int(encoders.embed_dim), "limit": limit, "shard": list(shard) if shard else None,
             "batch_size": batch_size, "index": index, "index_memory": index_memory}
    with store_lock(final):
        check_store_target(final, force=force, inputs=[root], what="the image folder")
        work = work_dir_for(final)
        plan, state = open_work(work, src, asked, resume=resume, force=force)
        run = _Run(src, work, plan, state)
        run.resumed_from = state.done
        encode_all(run, encoders, workers=workers, checkpoint_seconds=checkpoint_seconds, reporter=reporter,
                   on_batch=on_batch)
        store = finish(run, final)
    return BuildResult(store, [{"path": s["path"], "reason": s["reason"]} for s in run.state.skipped],
                       time.perf_counter() - start_time, run.state.done - run.resumed_from, run.resumed_from)


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
        text = read_input_bytes(path, "file list").decode("utf-8")  # a regular file, bounded (not a FIFO)
    except (OSError, UnicodeDecodeError) as exc:
        raise OviError(f"cannot read file list {str(path)!r}: {exc.__class__.__name__}") from exc
    if path.suffix.lower() == ".json":
        try:
            names = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise OviError(f"file list {str(path)!r} is not valid JSON ({first_line(exc, with_type=False)})") from None
        if not isinstance(names, list) or not all(isinstance(x, (str, int, float)) for x in names):
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
    index_memory: int = DEFAULT_MEMORY,
) -> StatsStore:
    """A store from embedding dumps (rows in the order given), streaming, without encoding."""
    final = Path(out).expanduser().absolute()
    inputs = [Path(p).expanduser() for p in paths] + ([Path(file_list).expanduser()] if file_list else [])
    check_store_target(final, force=force, inputs=inputs, what="the input file")
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
    extra = {"from_embeddings": [str(Path(p).expanduser().absolute()) for p in paths]}
    with store_lock(final):
        check_store_target(final, force=force, inputs=inputs, what="the input file")
        tmp = private_dir(final)
        try:
            moments = _copy_rows(sources, tmp, total, width, chunk)
            return finalize_store(final, tmp, moments, files, encoder=encoder, source_dir=None, index=index,
                                  extra_meta=extra, index_memory=index_memory)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _copy_rows(sources, tmp: Path, total: int, width: int, chunk: int) -> Moments:
    """Copy every source's rows (checked finite) into `tmp/embeddings.npy`; their moments."""
    moments = Moments.empty(width)
    emb = new_embeddings_file(tmp, total, width)
    row = 0
    for p, n, _, read in sources:
        for lo in range(0, n, chunk):
            try:
                block = read(lo, min(n, lo + chunk))
            except Exception as exc:  # noqa: BLE001 - a file damaged past its header
                raise OviError(f"cannot read {str(p)!r} (rows {lo}..): {first_line(exc)}") from None
            if not np.isfinite(block).all():
                raise OviError(f"{str(p)!r} holds NaN or infinite values (rows {lo}..{lo + len(block) - 1})")
            if len(block) and float(np.abs(block).max()) > F16_MAX:
                raise OviError(f"{str(p)!r} holds values beyond float16's range (+-{F16_MAX:g}, rows {lo}.."
                               f"{lo + len(block) - 1}): stores keep embeddings as float16")
            moments = moments.merge(batch_moments(block))
            emb[row : row + len(block)] = block.astype(np.float16)
            row += len(block)
    with write_errors(tmp / EMBEDDINGS):
        emb.flush()
    del emb
    return moments


def build_from_source_embeddings(
    source: ImageSource,
    out: str | os.PathLike,
    encoder: dict,
    *,
    dim: int | None = None,
    index: str = "auto",
    index_memory: int = DEFAULT_MEMORY,
    force: bool = False,
    chunk: int = 8192,
    reporter: Reporter | None = None,
) -> StatsStore:
    """A store from an embedding source (e.g. clip-retrieval's `img_emb/` + `metadata/`), streaming.

    The width is checked against `dim` from the files' headers before any row is read; rows are
    read `chunk` at a time (memory bounded by the chunk, not the count), their moments folded in
    float64, the float16 rows copied into the store, keys and metadata streamed to a side file
    and from it into `files.json` / `metadata.jsonl`.
    """
    final = Path(out).expanduser().absolute()
    root = Path(source.root())
    check_store_target(final, force=force, inputs=[root], what="the embeddings folder")
    source.check()
    width = int(source.embedding_dim())
    if dim is not None and width != dim:
        raise OviError(f"the embeddings in {source.spec!r} are {width}-d but encoder {encoder.get('source')!r} "
                       f"gives {dim}-d embeddings")
    total = int(source.embedding_count())
    reporter = reporter or Reporter()
    side = final.with_name(f".{final.name}.rows.partial")
    with store_lock(final):
        check_store_target(final, force=force, inputs=[root], what="the embeddings folder")
        tmp = private_dir(final)
        try:
            moments = Moments.empty(width)
            row = 0
            reporter.start("reading embeddings", total)
            # written through a file handle, not a memory map, so memory stays flat whatever the count
            with write_errors(tmp / EMBEDDINGS), new_file(tmp / EMBEDDINGS) as emb, \
                    write_errors(side), open(side, "wb") as rows_out:
                np.lib.format.write_array_header_2_0(
                    emb, {"descr": np.dtype(np.float16).str, "fortran_order": False, "shape": (total, width)})
                for c in source.embedding_chunks(chunk):
                    block = np.asarray(c.embeddings, dtype=np.float64)
                    if block.ndim != 2 or block.shape[1] != width or row + len(block) > total:
                        raise OviError(f"{c.where}: {block.shape} rows do not fit the {total} x {width} announced")
                    if not np.isfinite(block).all():
                        raise OviError(f"{c.where}: NaN or infinite values")
                    if len(block) and float(np.abs(block).max()) > F16_MAX:
                        raise OviError(f"{c.where}: values beyond float16's range (+-{F16_MAX:g})")
                    moments = moments.merge(batch_moments(block))
                    emb.write(block.astype(np.float16).tobytes())
                    row += len(block)
                    rows_out.write(b"".join((json.dumps(m, ensure_ascii=False, default=str) + "\n").encode("utf-8")
                                            for m in c.metadata))
                    reporter.advance(len(block), "")
            if row != total:
                raise OviError(f"{source.spec!r}: read {row} rows, the headers announced {total}")

            def side_rows() -> Iterator[dict]:
                with open(side, encoding="utf-8") as f:
                    for line in f:
                        yield json.loads(line)

            extra = {"build": {"source": source.describe(), "chunk": chunk}}
            return finalize_store(final, tmp, moments, (r["key"] for r in side_rows()), encoder=encoder,
                                  source_dir=str(root), index=index, extra_meta=extra, index_memory=index_memory,
                                  rows_meta=side_rows() if source.row_metadata else None)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            side.unlink(missing_ok=True)
