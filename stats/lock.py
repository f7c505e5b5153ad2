"""One writer per store: a build, resume or merge holds an exclusive lock on its output path.

The lock is `fcntl.flock` on `.NAME.lock` beside the store (not inside it: `--force` replaces the
store and the work folder). The kernel drops a flock when its holder dies, so a lock file left by
a crash (its pid no longer running) is simply taken over; the file holds the holder's pid so the
refusal can name it. After locking, the holder checks that the path still names the file it
locked (a finishing holder unlinks it), so two processes never both believe they hold the lock.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ovi_cli.errors import OviError
from ovi_cli.outputs import ensure_folder, file_mode, write_errors

_OPEN = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class BuildInProgress(OviError):
    """Another process holds the lock of this store."""


@dataclass
class LockInfo:
    path: Path
    stale_pid: int | None  # a crashed holder's pid found in the lock file, if any


def lock_path_for(final: Path) -> Path:
    return final.with_name(f".{final.name}.lock")


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _refusal(final: Path, pid: int | None) -> BuildInProgress:
    who = f"pid {pid}" if pid else "pid unknown"
    if pid and not _alive(pid):
        who += ", no longer running: its worker processes still hold the lock; retry in a few seconds"
    return BuildInProgress(f"build in progress ({who}) into {str(final)!r}: wait for it to finish, or stop it "
                           "and rerun with --resume")


@contextmanager
def store_lock(final: Path) -> Iterator[LockInfo]:
    """Hold the exclusive lock of the store at `final` for the block; refuse if another holds it."""
    final = Path(final)
    path = lock_path_for(final)
    ensure_folder(final.parent)
    while True:
        with write_errors(path, "create the lock file"):
            fd = os.open(path, _OPEN, file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise _refusal(final, pid) from None
        try:
            same = os.stat(path, follow_symlinks=False)
            st = os.fstat(fd)
            if (same.st_dev, same.st_ino) == (st.st_dev, st.st_ino):
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder before us removed the file after we opened it: lock the new one
    stale = _read_pid(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield LockInfo(path, stale if stale and stale != os.getpid() else None)
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
        os.close(fd)
