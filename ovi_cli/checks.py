"""Checks every command runs on its flags and output locations before it loads any model.

Light on purpose (no torch, no numpy): a command calls these first, so a typo costs milliseconds,
not a model load followed by a traceback. Each failure is one `OviError` line naming the flag.

Bounds (docs/reliability.md):
- seeds: 0 .. 2**64 - 1 (what `torch.Generator.manual_seed` accepts without wrapping); with
  `--prompts`, seed + (number of prompts - 1) must fit too.
- `--height` / `--width`: 1 .. 4096 pixels (Kandinsky 2.2 is trained at 512-768; 4096 x 4096 already
  needs tens of GB on the decoder).
- counts such as `--steps` have an upper bound so that an extra zero is a message, not an
  allocation of many GB (`MAX_STEPS`).
- floats: finite (NaN and infinity are refused everywhere).
"""

from __future__ import annotations

import math
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ovi_cli.errors import OviError

SEED_MAX = 2**64 - 1
MAX_SIDE = 4096
MAX_STEPS = 1_000_000
MAX_TOKENS = 4096
MAX_BATCH = 65_536
MAX_THREADS = 4096
MAX_WEIGHT = 1e6  # a constraint weight above this only overflows the loss
MAX_LR = 1e6  # a learning rate above this only throws the embedding away (near 1e38 it overflows float32)
MAX_TEXT_INPUT = 64 * 2**20  # bytes of a prompt file or file list (about a million long prompts)
STDIN = "-"  # a prompt file named `-` is standard input
# pseudo-filesystems: nothing ovi writes belongs there (writes there fail late, or worse, succeed)
PSEUDO_FS = ("/proc", "/sys", "/dev")
PSEUDO_FS_OK = ("/dev/shm",)


# ---- numbers -----------------------------------------------------------------------------------
def check_int(value: Any, flag: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer within [minimum, maximum] (either bound optional)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise OviError(f"{flag} must be a whole number, got {value!r}")
    if minimum is not None and value < minimum:
        raise OviError(f"{flag} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise OviError(f"{flag} must be <= {maximum}, got {value}")
    return value


def check_float(value: Any, flag: str, *, minimum: float | None = None, above: float | None = None,
                maximum: float | None = None) -> float:
    """A finite number, >= `minimum`, > `above`, <= `maximum` (each optional)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise OviError(f"{flag} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise OviError(f"{flag} must be a finite number, got {value!r}")
    if minimum is not None and x < minimum:
        raise OviError(f"{flag} must be >= {minimum:g}, got {value!r}")
    if above is not None and not x > above:
        raise OviError(f"{flag} must be > {above:g}, got {value!r}")
    if maximum is not None and x > maximum:
        raise OviError(f"{flag} must be <= {maximum:g}, got {value!r}")
    return x


def check_seed(seed: Any, flag: str = "--seed", count: int = 1) -> int:
    """A seed in 0 .. 2**64-1; `count` seeds seed, seed+1, ... must all fit."""
    check_int(seed, flag, minimum=0, maximum=SEED_MAX)
    if seed + max(count, 1) - 1 > SEED_MAX:
        raise OviError(f"{flag} {seed}: with {count} prompts the last seed, {seed + count - 1}, exceeds 2**64-1")
    return seed


# ---- output locations --------------------------------------------------------------------------
def _pseudo_fs(path: Path) -> str | None:
    real = os.path.realpath(path)
    for root in PSEUDO_FS:
        if (real == root or real.startswith(root + "/")) and not any(
                real == ok or real.startswith(ok + "/") for ok in PSEUDO_FS_OK):
            return root
    return None


def _nearest_existing(path: Path) -> Path:
    p = path
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def _check_parent_chain(path: Path, flag: str) -> None:
    """Every existing ancestor of `path` is a folder, and the nearest one is writable."""
    base = _nearest_existing(path.parent if path.name else path)
    if not base.is_dir():
        raise OviError(f"{flag} {str(path)!r}: {str(base)!r} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OviError(f"{flag} {str(path)!r}: cannot write in {str(base)!r} (permission denied or read-only)")


def check_output_file(path: Path | str, flag: str = "--out") -> Path:
    """`path` can be written as a file: not a folder, its folder exists or can be created, writable."""
    path = Path(path)
    if not path.name or path.name in (".", ".."):
        raise OviError(f"{flag} {str(path)!r} is a folder; give a file name")
    root = _pseudo_fs(path)
    if root:
        raise OviError(f"{flag} {str(path)!r} is under {root}, a system pseudo-filesystem; choose another place")
    if path.is_dir():
        raise OviError(f"{flag} {str(path)!r} is a folder; give a file name")
    _check_parent_chain(path, flag)
    return path


def check_output_folder(path: Path | str, flag: str = "--out") -> Path:
    """`path` can be used as an output folder: a folder (or creatable), writable."""
    path = Path(path)
    root = _pseudo_fs(path)
    if root:
        raise OviError(f"{flag} {str(path)!r} is under {root}, a system pseudo-filesystem; choose another place")
    if os.path.lexists(path):
        if not path.is_dir():
            raise OviError(f"{flag} {str(path)!r} is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OviError(f"{flag} {str(path)!r}: cannot write in it (permission denied or read-only)")
        return path
    _check_parent_chain(path, flag)
    return path


def check_result_paths(paths: Sequence[Path], flag: str = "--out") -> None:
    """Every file of every result (the image and its .json / .safetensors) can be written there."""
    folders: set[Path] = set()
    for p in paths:
        for f in (p, p.with_suffix(".json"), p.with_suffix(".safetensors")):
            if f.is_dir():
                raise OviError(f"{flag}: {str(f)!r} is a folder, in the way of a result file")
        folders.add(p.parent)
    for folder in sorted(folders):
        check_output_folder(folder, flag)


# ---- input files -------------------------------------------------------------------------------
def check_input_file(path: Path | str, what: str) -> Path:
    """`path` is a regular file (after symlinks): not a folder, a FIFO, a device or a socket, which
    could block ovi forever (a FIFO with no writer) or feed it without end (`/dev/zero`)."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise OviError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc.__class__.__name__}") from None
    if stat.S_ISDIR(mode):
        raise OviError(f"{what} {str(path)!r} is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise OviError(f"{what} {str(path)!r} is not a regular file (a pipe, device or socket); "
                       "give a file" + (", or - for standard input" if what == "prompt file" else ""))
    return path


def refuse_stdin_when_distributed(paths: list[Path | str], distributed: bool, flag: str) -> None:
    """Under torchrun each process has its own standard input: a `-` input would be read by one
    process (or none) and the processes would plan different work. One line, before anything loads."""
    if distributed and any(str(p) == STDIN for p in paths):
        raise OviError(f"{flag} -: under torchrun each process reads its own standard input; write the prompts "
                       "to a file and name it")


def read_input_bytes(path: Path | str, what: str, max_bytes: int = MAX_TEXT_INPUT) -> bytes:
    """The bytes of a small input file (a regular file, or standard input for `-`), at most `max_bytes`:
    a bigger input is a one-line error, never an unbounded read."""
    if str(path) == STDIN:
        stream = sys.stdin.buffer if sys.stdin is not None else None
        if stream is None:
            raise OviError(f"cannot read {what} from standard input: there is none")
        data = stream.read(max_bytes + 1)
        source = "standard input"
    else:
        check_input_file(path, what)
        try:
            with open(path, "rb") as f:
                data = f.read(max_bytes + 1)
        except OSError as exc:
            raise OviError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc.__class__.__name__}") from None
        source = repr(str(path))
    if len(data) > max_bytes:
        raise OviError(f"{what} {source} is larger than {max_bytes // 2**20} MiB; split it")
    return data


# ---- names plugins give ------------------------------------------------------------------------
def check_path_name(name: object, what: str) -> str:
    """A name a plugin gives (scorer, benchmark, category, ...) that ovi uses as a file or folder
    name: one plain path component, printable, not hidden, not `.`/`..`, at most 100 characters."""
    if not isinstance(name, str) or not name:
        raise OviError(f"{what} {name!r} must be a non-empty string")
    bad = (name in (".", "..") or name.startswith(".") or "/" in name or "\\" in name or "\0" in name
           or not name.isprintable() or name != name.strip() or len(name) > 100)
    if bad:
        raise OviError(f"{what} {name!r} cannot be used as a file name: use letters, digits, '-' or '_' "
                       "(no '/', no leading '.', at most 100 characters)")
    return name


# ---- limits of the process ---------------------------------------------------------------------
def check_worker_file_limit(workers: int, batch_bytes: int, flag: str = "--workers") -> None:
    """Worker processes hand each decoded batch to the main process in a shared-memory file, which
    the file-size limit (`ulimit -f`) also bounds: a batch larger than that fails inside the worker
    and the main process would wait for it forever. Refused (one line) before any worker starts."""
    if workers <= 0:
        return
    try:
        import resource
    except ImportError:  # not on POSIX: no such limit
        return
    soft, _hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft == resource.RLIM_INFINITY or soft >= batch_bytes:
        return
    raise OviError(f"{flag} {workers}: the file-size limit (ulimit -f) is {soft} bytes, smaller than one "
                   f"decoded batch ({batch_bytes} bytes), which worker processes pass on in shared-memory files; "
                   "rerun with --resume --workers 0, or raise the limit")
