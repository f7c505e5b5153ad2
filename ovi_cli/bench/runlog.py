"""A benchmark run's own files: `bench.json` and the per-image records (JSON lines).

Records: each process appends one JSON line per finished image to its own part file
(`RUN/<category>/records.parts/part-I-of-N.jsonl`), after the image itself has landed (atomically).
An image counts as done when its file exists and its record line does, so an interrupt between
the two only costs that image again. A torn last line (a kill in the middle of a write) is cut
off before the next append. `records.jsonl` is the merge of all parts, one line per image sorted
by index, rewritten atomically by rank 0 at the end of a run; `read_records` reads it together
with the parts, so a reader sees every finished image even while other shards still run.

`bench.json`: what the run is (settings, prompt-list hashes, models, versions) plus its progress.
The first process creates it exclusively; every later one (another shard, a resume) must match it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ovi_cli.bench import layout
from ovi_cli.checks import check_input_file
from ovi_cli.errors import OviError
from ovi_cli.outputs import atomic_write_json, atomic_write_text, create_exclusive, json_text, write_errors
from ovi_cli.resume import check_resume

FORMAT = "ovi-bench-run"
FORMAT_VERSION = 1
RESTART_ADVICE = "write to a new --out folder, or rerun with the settings it was made with"


# ---- records ---------------------------------------------------------------------------------
def _cut_torn_tail(path: Path) -> None:
    """Drop a last line that has no newline (a write cut short), so the next line starts clean."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)


class RecordLog:
    """This process's part file of one category: one JSON line per finished image, flushed to disk."""

    def __init__(self, run: Path, category: str, part: str) -> None:
        folder = layout.record_parts_dir(run, category)
        self.path = folder / f"{part}.jsonl"
        self._fd = -1
        with write_errors(self.path, "open the record file"):
            folder.mkdir(parents=True, exist_ok=True)
            _cut_torn_tail(self.path)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                               0o666)

    def append(self, record: Mapping[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        with write_errors(self.path, "append a record to"):  # disk full, a file-size limit: one line
            written = os.write(self._fd, line)  # one write: a line is whole, or torn at the very end
            if written != len(line):
                raise OSError(28, "No space left on device (the record was cut short)")
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RecordLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists() and not path.is_symlink():
        return
    check_input_file(path, "a record file")  # a FIFO there would block the run forever
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError):  # a torn line: that image is simply not done
            continue
        if isinstance(rec, dict) and isinstance(rec.get("index"), int):
            yield rec


def read_records(run: Path, category: str) -> dict[int, dict[str, Any]]:
    """Every record of `category` by image index: `records.jsonl`, then the part files (later wins)."""
    out = {r["index"]: r for r in _lines(layout.records_path(run, category))}
    parts = layout.record_parts_dir(run, category)
    if parts.is_dir():
        for part in sorted(parts.glob("*.jsonl")):
            out.update((r["index"], r) for r in _lines(part))
    return out


def merge_records(run: Path, category: str) -> int:
    """Rewrite `records.jsonl` (atomically) as every record, sorted by index; the number of records."""
    records = read_records(run, category)
    if not records and not layout.category_dir(run, category).is_dir():
        return 0
    text = "".join(json.dumps(records[i], ensure_ascii=False, separators=(",", ":")) + "\n" for i in sorted(records))
    atomic_write_text(layout.records_path(run, category), text)
    return len(records)


def finished(run: Path, category: str, records: Mapping[int, Mapping[str, Any]], indices: Iterable[int],
             prompts: Mapping[int, str]) -> set[int]:
    """The indices among `indices` whose image file and record are both there (`prompts`: index -> prompt)."""
    out = set()
    for i in indices:
        rec = records.get(i)
        if rec is not None and rec.get("prompt") == prompts[i] and \
                layout.sample_path(run, category, prompts[i], i).is_file():
            out.add(i)
    return out


# ---- what a run's models and store are -----------------------------------------------------------
WHOLE_FILE_BYTES = 1 << 20  # files up to this size are hashed whole; larger ones by size, head and tail
SAMPLE_BYTES = 1 << 16


def content_fingerprint(folder: Path) -> str:
    """A short id of a folder's content (a model folder, a statistics store), wherever it lies: small
    files hashed whole, large ones (weights, moments, indexes) by size and their first and last 64 KiB.
    A folder replaced in place (a retrained model, `build-stats --force`) gets another id."""
    import hashlib

    folder = Path(folder)
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if not p.is_file() or any(part.startswith(".") for part in rel.parts):
            continue  # hidden: caches, locks, temporaries
        try:
            size = p.stat().st_size
            with p.open("rb") as f:
                data = f.read() if size <= WHOLE_FILE_BYTES else f.read(SAMPLE_BYTES)
                if size > WHOLE_FILE_BYTES:
                    f.seek(size - SAMPLE_BYTES)
                    data += f.read(SAMPLE_BYTES)
        except OSError:
            continue
        h.update(f"{rel.as_posix()}:{size}\n".encode())
        h.update(data)
    return h.hexdigest()[:16]


# ---- bench.json ------------------------------------------------------------------------------
def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_run_file(path: Path, fmt: str, what: str) -> dict[str, Any]:
    """A format-stamped JSON file of a run (scores.json, fidelity.json): its object; unreadable, not
    JSON, not an object or of another format: a one-line `OviError` naming the file."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise OviError(f"cannot read {str(path)!r}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise OviError(f"{str(path)!r} is not {what} ({fmt})")
    return doc


def read_bench_json(run: Path) -> dict[str, Any] | None:
    """THE reader of `RUN/bench.json` (generating and scoring alike): its object, None when there is
    none; unreadable, not JSON or not an object: a one-line `OviError` naming the file."""
    path = layout.bench_json_path(run)
    if path.exists() or path.is_symlink():
        check_input_file(path, "bench.json")  # a FIFO there would block the run forever
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OviError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        where = f"{exc.msg}, line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise OviError(f"{str(path)!r} is not valid JSON ({where}); "
                       "move it away if this folder is not a benchmark run") from exc
    if not isinstance(data, dict):
        raise OviError(f"{str(path)!r} is not an ovi benchmark run's bench.json (not a JSON object)")
    return data


def check_header(existing: Mapping[str, Any], header: Mapping[str, Any], run: Path) -> None:
    """Refuse (one line naming what differs) a run whose benchmark, settings or prompt lists differ."""
    where = f"the run in {str(run)!r}"
    if existing.get("format") != FORMAT:  # e.g. the toy evaluation's folder of real images
        raise OviError(f"{str(layout.bench_json_path(run))!r} is not the bench.json of an `ovi bench generate` "
                       "run; choose another --out")
    if existing.get("benchmark") != header["benchmark"]:
        raise OviError(f"{where} is benchmark {existing.get('benchmark')!r}, not {header['benchmark']!r}; "
                       f"{RESTART_ADVICE}")
    prompt_lists = []
    old_cats = existing.get("categories", {})
    for cat, rec in header["categories"].items():
        old = old_cats.get(cat)
        if old is not None and old.get("sha256") != rec["sha256"]:
            prompt_lists.append((f"prompts of {cat}", f"{old.get('source')} (sha256 {str(old.get('sha256'))[:12]})",
                                 f"{rec['source']} (sha256 {rec['sha256'][:12]})"))
    check_resume(existing.get("settings", {}), header["settings"], where, RESTART_ADVICE, extra=prompt_lists,
                 unrecorded_ok=True)  # a setting added since the run began (encoder_family) is not compared


def check_identity(existing: Mapping[str, Any], identity: Mapping[str, Any], run: Path) -> None:
    """Refuse models that differ from the run's (known once they are loaded: the fingerprints of the
    encoder, the decoder and the statistics store). What an older run did not record is not compared."""
    old = existing.get("identity")
    if not old:
        return
    check_resume(old, identity, f"the run in {str(run)!r}", RESTART_ADVICE, ignore=(), only_shared=True)


def create_exclusive_json(path: Path, obj: Mapping[str, Any]) -> bool:
    """Write `path` only if it does not exist, atomically (True), even against another process (False)."""
    return create_exclusive(path, json_text(obj, path).encode("utf-8"))


def extend_run(run: Path, header: Mapping[str, Any]) -> dict[str, Any] | None:
    """An existing run's bench.json, checked against `header` (one-line refusal naming what differs)
    and extended with the categories it does not have yet; None when there is no run yet."""
    existing = read_bench_json(run)
    if existing is None:
        return None
    check_header(existing, header, run)
    new_cats = {c: r for c, r in header["categories"].items() if c not in existing.get("categories", {})}
    if new_cats:
        existing["categories"] = {**existing.get("categories", {}), **new_cats}
        atomic_write_json(layout.bench_json_path(run), existing)
    return existing


def create_or_join(run: Path, header: Mapping[str, Any]) -> dict[str, Any]:
    """bench.json of `run` (models loaded: `header` holds `identity`): created if absent, else checked
    (settings, prompt lists, models) and extended with new categories. Returns what the file holds."""
    run.mkdir(parents=True, exist_ok=True)
    if create_exclusive_json(layout.bench_json_path(run), {**header, "created": now(), "progress": {}}):
        return read_bench_json(run) or {}
    existing = extend_run(run, header) or {}
    check_identity(existing, header.get("identity", {}), run)
    return existing


def update_progress(run: Path, progress: Mapping[str, Any]) -> None:
    """Replace the progress section of bench.json (nothing else changes)."""
    existing = read_bench_json(run)
    if existing is None:
        return
    existing["progress"] = {**existing.get("progress", {}), **progress}
    existing["updated"] = now()
    atomic_write_json(layout.bench_json_path(run), existing)
