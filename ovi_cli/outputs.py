"""Every file ovi writes goes through here: atomic, exclusive, no symlinks followed, one-line errors.

The rules (docs/reliability.md):

- A result's files are written under temporary names in their final folder and renamed into place
  once every file of the set is complete (`atomic_outputs`); an exception or Ctrl-C before that
  removes the temporaries, so a reader sees all of a result or none of it.
- Temporary names are unpredictable (`.NAME.HOST-PID-RANDOM.ovi-tmp`) and created exclusively
  (`O_CREAT | O_EXCL | O_NOFOLLOW`): a file or symlink planted in an output folder is never
  opened, followed or overwritten through; only the final rename replaces what is at the path
  (a symlink there is replaced, not followed).
- Permissions are set through the open handle (`fchmod`), never by path: every output file is
  0666 and every output folder 0777, less the umask (0644 / 0755 with the usual umask), store
  files included.
- Any failure to write (`OSError` such as a full disk, `SafetensorError`, faiss or PIL errors) is
  an `OutputError`: one line naming the path and the reason.
- Numbers written as JSON are finite: a NaN or infinity is an `OutputError` naming the field
  (callers map values that may legitimately be missing to `null` themselves).
- Temporaries left by a process that died (same host, pid no longer running) are removed the next
  time ovi writes into that folder.

Folder outputs (statistics stores, the toy dataset) are built in a private temporary folder
(`private_dir`) and moved into place by `install_dir`.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import socket
import stat
import time
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ovi_cli.errors import OviError, first_line

TEMP_SUFFIX = ".ovi-tmp"
_TEMP_RE = re.compile(r"^\..*\.(?P<host>[A-Za-z0-9-]{1,16})-(?P<pid>\d+)-[0-9a-f]{16}\.ovi-tmp$")
_NAME_KEEP = 120  # bytes of the final name kept in a temporary name (names are at most 255 bytes)


class OutputError(OviError):
    """A file or folder could not be written; the message is one line naming it and why."""


# ---- modes -------------------------------------------------------------------------------------
_UMASK: int | None = None


def _umask() -> int:
    global _UMASK
    if _UMASK is None:
        mask = os.umask(0o022)
        os.umask(mask)
        _UMASK = mask
    return _UMASK


def file_mode() -> int:
    """The mode of every output file: 0666 less the umask."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode of every output folder: 0777 less the umask."""
    return 0o777 & ~_umask()


# ---- errors ------------------------------------------------------------------------------------
def reason(exc: BaseException) -> str:
    """A short reason for a write failure: the OS's words when there are some."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return first_line(exc)


def write_error(path: Path | str, exc: BaseException, what: str = "write") -> OutputError:
    return OutputError(f"cannot {what} {str(path)!r}: {reason(exc)}")


@contextmanager
def write_errors(path: Path | str, what: str = "write") -> Iterator[None]:
    """Turn any failure inside the block (not an `OviError`) into a one-line `OutputError`."""
    try:
        yield
    except OviError:
        raise
    except Exception as exc:  # OSError, SafetensorError, faiss RuntimeError, PIL errors, MemoryError ...
        raise write_error(path, exc, what) from exc


# ---- temporary names and stale ones ------------------------------------------------------------
def _host() -> str:
    name = re.sub(r"[^A-Za-z0-9-]", "", socket.gethostname())[:16]
    return name or "host"


def temp_name(final_name: str) -> str:
    """`.NAME.HOST-PID-RANDOM.ovi-tmp`: hidden, unpredictable, and recognisable as ovi's."""
    kept = final_name.encode("utf-8", "surrogateescape")[:_NAME_KEEP].decode("utf-8", "ignore")
    return f".{kept}.{_host()}-{os.getpid()}-{secrets.token_hex(8)}{TEMP_SUFFIX}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    except OverflowError:
        return False
    return True


def stale_temps(folder: Path) -> list[Path]:
    """ovi's temporaries in `folder` whose process (on this host) is no longer running."""
    out = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    host = _host()
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if m and m["host"] == host and not _pid_alive(int(m["pid"])):
            out.append(Path(entry.path))
    return out


_cleaned: set[str] = set()


def clean_stale_temps(folder: Path | str, *, again: bool = False) -> list[Path]:
    """Remove the temporaries of dead ovi processes in `folder` (once per folder and process)."""
    key = os.path.abspath(folder)
    if key in _cleaned and not again:
        return []
    _cleaned.add(key)
    removed = []
    for path in stale_temps(Path(folder)):
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            continue  # best effort: another process may be cleaning too
    return removed


# ---- folders -----------------------------------------------------------------------------------
def ensure_folder(folder: Path | str) -> Path:
    """Create `folder` (and its parents) if needed; a failure is one line."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise OutputError(f"cannot create folder {str(folder)!r}: a file is in the way") from exc
    except OSError as exc:
        raise write_error(folder, exc, "create folder") from exc
    return folder


_OPEN_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_OPEN_CHECK = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def new_file(path: Path | str) -> IO[bytes]:
    """Create `path` exclusively (never an existing file, never through a symlink), mode 0600 until
    committed, and return it open for binary writing."""
    with write_errors(path, "create"):
        fd = os.open(path, _OPEN_NEW, 0o600)
    return os.fdopen(fd, "wb")


def open_append(path: Path | str) -> IO[bytes]:
    """A file ovi appends to (a build's raw rows), created if missing, never through a symlink."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    with write_errors(path, "open"):
        fd = os.open(path, flags, file_mode())
    return os.fdopen(fd, "ab")


_ATTEMPTS = 16  # fresh random names tried before giving up (a clash needs a planted name: 2**-64)


def _new_temp(final: Path) -> tuple[Path, IO[bytes]]:
    ensure_folder(final.parent)
    clean_stale_temps(final.parent)
    for _ in range(_ATTEMPTS):
        tmp = final.parent / temp_name(final.name)
        try:
            return tmp, new_file(tmp)
        except OutputError as exc:
            if not isinstance(exc.__cause__, FileExistsError):
                raise
    raise OutputError(f"cannot write {str(final)!r}: every temporary name tried already exists")


def _finish_file(path: Path, ident: tuple[int, int] | None, mode: int) -> None:
    """fchmod + fsync `path` through a handle that did not follow a symlink; check it is still ours."""
    fd = os.open(path, _OPEN_CHECK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (ident is not None and (st.st_dev, st.st_ino) != ident):
            raise OutputError(f"cannot write {str(path)!r}: the temporary file was replaced while it was written")
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- JSON --------------------------------------------------------------------------------------
def non_finite_field(obj: Any, where: str = "") -> str | None:
    """The path (`a.b[3]`) of the first NaN or infinite number in `obj`, or None."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (where or "the value")
    if isinstance(obj, dict):
        for k, v in obj.items():
            found = non_finite_field(v, f"{where}.{k}" if where else str(k))
            if found:
                return found
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found = non_finite_field(v, f"{where}[{i}]")
            if found:
                return found
    return None


def json_text(obj: Any, path: Path | str = "JSON output", *, indent: int | None = 2) -> str:
    """`obj` as JSON; a NaN or infinity anywhere is a one-line `OutputError` naming the field."""
    try:
        text = json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False)
    except ValueError:
        field = non_finite_field(obj) or "a number"
        raise OutputError(f"refusing to write {str(path)!r}: {field} is not a finite number") from None
    return text + ("\n" if indent is not None else "")


def finite_or_none(values: Any) -> Any:
    """Lists/dicts of numbers with every NaN or infinity replaced by None (JSON `null`)."""
    if isinstance(values, float):
        return values if math.isfinite(values) else None
    if isinstance(values, dict):
        return {k: finite_or_none(v) for k, v in values.items()}
    if isinstance(values, (list, tuple)):
        return [finite_or_none(v) for v in values]
    return values


# ---- sets of files -----------------------------------------------------------------------------
@dataclass
class _Pending:
    tmp: Path
    final: Path
    ident: tuple[int, int]


class Staging:
    """Collects the files of one result under temporary names; `commit` renames them all."""

    def __init__(self) -> None:
        self._pending: list[_Pending] = []

    def _add(self, final: Path | str) -> tuple[Path, IO[bytes]]:
        final = Path(final)
        tmp, handle = _new_temp(final)
        st = os.fstat(handle.fileno())
        self._pending.append(_Pending(tmp, final, (st.st_dev, st.st_ino)))
        return tmp, handle

    def path(self, final: Path | str) -> Path:
        """A temporary path for `final`'s content, for writers that insist on a path.

        The file already exists (created exclusively, so the name is ours); the writer opens it
        by that path and writes into it. Prefer `write_with`, which hands over an open handle.
        """
        tmp, handle = self._add(final)
        handle.close()
        return tmp

    def write_with(self, final: Path | str, writer: Callable[[IO[bytes]], Any]) -> None:
        """`writer(handle)` writes `final`'s content to an open binary handle (PIL `save`,
        matplotlib `savefig`, `handle.write(bytes)` ...)."""
        final = Path(final)
        tmp, handle = self._add(final)
        with write_errors(final):
            with handle:
                writer(handle)

    def write_bytes(self, final: Path | str, data: bytes) -> None:
        self.write_with(final, lambda f: f.write(data))

    def staged(self, final: Path | str) -> Path:
        """The temporary file that holds `final`'s content until `commit`: what will land, to read back
        before it does (e.g. to score an image as written)."""
        final = Path(final)
        for p in reversed(self._pending):
            if p.final == final:
                return p.tmp
        raise KeyError(f"{str(final)!r} is not staged")

    def write_text(self, final: Path | str, text: str) -> None:
        self.write_bytes(final, text.encode("utf-8"))

    def write_json(self, final: Path | str, obj: Any) -> None:
        self.write_text(final, json_text(obj, final))

    def commit(self) -> list[Path]:
        done: list[Path] = []
        mode = file_mode()
        try:
            for p in self._pending:
                with write_errors(p.final):
                    _finish_file(p.tmp, p.ident, mode)
                    if p.final.is_dir() and not p.final.is_symlink():
                        raise IsADirectoryError(21, "a folder is in the way")
                    os.replace(p.tmp, p.final)
                done.append(p.final)
            for folder in {p.final.parent for p in self._pending}:
                _fsync_dir(folder)
        except BaseException:
            for final in done:  # a half-renamed set is worse than none
                final.unlink(missing_ok=True)
            raise
        finally:
            self.discard()
        return done

    def discard(self) -> None:
        for p in self._pending:
            try:
                p.tmp.unlink(missing_ok=True)
            except OSError:
                pass
        self._pending = []


@contextmanager
def atomic_outputs() -> Iterator[Staging]:
    """`with atomic_outputs() as out: out.write_json(p, obj)`: all files land at the end, or none."""
    staging = Staging()
    try:
        yield staging
    except BaseException:
        staging.discard()
        raise
    staging.commit()


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_outputs() as out:
        out.write_bytes(path, data)


def atomic_write_text(path: Path | str, text: str) -> None:
    with atomic_outputs() as out:
        out.write_text(path, text)


def atomic_write_json(path: Path | str, obj: Any) -> None:
    with atomic_outputs() as out:
        out.write_json(path, obj)


def create_exclusive(path: Path | str, data: bytes) -> bool:
    """Write `path` only if nothing is there yet, atomically: True if this call created it, False if
    another file (another process's, say) was there first. Same temporaries, modes and errors as
    every other write; on a filesystem without hard links the first writer wins barring a tie."""
    path = Path(path)
    tmp, handle = _new_temp(path)
    try:
        with write_errors(path):
            with handle:
                handle.write(data)
            _finish_file(tmp, None, file_mode())
            try:
                os.link(tmp, path)  # fails if the path exists, whatever it is
            except FileExistsError:
                return False
            except OSError:
                if os.path.lexists(path):
                    return False
                os.replace(tmp, path)
            _fsync_dir(path.parent)
            return True
    finally:
        tmp.unlink(missing_ok=True)


# ---- folder outputs ----------------------------------------------------------------------------
def private_dir(final: Path | str) -> Path:
    """A new private (0700) temporary folder beside `final` (same filesystem: the last rename is
    atomic), named like every ovi temporary so a crash leaves nothing that is not cleaned later."""
    final = Path(final)
    ensure_folder(final.parent)
    clean_stale_temps(final.parent)
    for _ in range(_ATTEMPTS):
        tmp = final.parent / temp_name(final.name)
        try:
            os.mkdir(tmp, 0o700)
            return tmp
        except FileExistsError:
            continue
        except OSError as exc:
            raise write_error(final.parent, exc, "write in") from exc
    raise OutputError(f"cannot write {str(final)!r}: every temporary name tried already exists")


def _finish_tree(root: Path) -> None:
    """Every file under `root` to the output file mode, every folder to the folder mode, by handle."""
    fmode, dmode = file_mode(), dir_mode()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            _finish_file(Path(dirpath) / name, None, fmode)
        fd = os.open(dirpath, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0))
        try:
            os.fchmod(fd, dmode)
            os.fsync(fd)
        finally:
            os.close(fd)
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]


def install_dir(tmp: Path, final: Path) -> None:
    """Move the finished private folder `tmp` to `final` (modes fixed first).

    An existing `final` is replaced; callers decide beforehand whether it may be (e.g. only an ovi
    store may be replaced by a store). The old folder is first renamed to a temporary name, so a
    crash in between leaves it to the stale-temporary cleaner, never half deleted at `final`.
    """
    with write_errors(final):
        _finish_tree(tmp)
        if final.is_symlink() or final.is_file():
            raise OutputError(f"cannot write {str(final)!r}: a file is in the way")
        if final.exists():
            old = final.parent / temp_name(final.name)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)


def remove_tree(path: Path) -> None:
    """Delete a folder ovi made (a store, a work folder); a failure is one line."""
    with write_errors(path, "remove"):
        shutil.rmtree(path)


# ---- names -------------------------------------------------------------------------------------
def slugify(text: str, max_len: int = 48) -> str:
    """`"Blue old car on a beach!"` -> `"blue-old-car-on-a-beach"`."""
    norm = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", norm).strip("-").lower()
    return slug[:max_len].rstrip("-") or "prompt"


def default_output_path(prompt: str, folder: Path | str = "outputs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(folder) / f"{stamp}-{slugify(prompt)}.png"


def result_paths(out: Path) -> dict[str, Path]:
    """The files of one result: `out` (the image) and its `.json` / `.safetensors` siblings."""
    return {
        "image": out,
        "sidecar": out.with_suffix(".json"),
        "embedding": out.with_suffix(".safetensors"),
    }
