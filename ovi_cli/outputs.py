"""Writing result files atomically: all of a result's files appear together, or none does.

Each file is written to a hidden temporary name in its final folder, then renamed into place
once every file of the set is complete. An exception or Ctrl-C before that removes the temporaries.
"""

from __future__ import annotations

import json
import os
import re
import time
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


class Staging:
    """Collects the files of one result under temporary names; `commit` renames them all."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def path(self, final: Path | str) -> Path:
        """A temporary path to write `final`'s content to."""
        final = Path(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_name(final)
        self._pending.append((tmp, final))
        return tmp

    def write_bytes(self, final: Path | str, data: bytes) -> None:
        self.path(final).write_bytes(data)

    def write_text(self, final: Path | str, text: str) -> None:
        self.path(final).write_text(text, encoding="utf-8")

    def write_json(self, final: Path | str, obj: Any) -> None:
        self.write_text(final, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")

    def write_with(self, final: Path | str, writer: Callable[[Path], None]) -> None:
        writer(self.path(final))

    def commit(self) -> list[Path]:
        done: list[Path] = []
        try:
            mode = 0o666 & ~_umask()
            for tmp, final in self._pending:
                os.chmod(tmp, mode)  # some writers create 0600 files
                os.replace(tmp, final)
                done.append(final)
        except BaseException:
            for final in done:  # a half-renamed set is worse than none
                final.unlink(missing_ok=True)
            raise
        finally:
            self.discard()
        return done

    def discard(self) -> None:
        for tmp, _ in self._pending:
            tmp.unlink(missing_ok=True)
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


def atomic_write_text(path: Path | str, text: str) -> None:
    with atomic_outputs() as out:
        out.write_text(path, text)


def atomic_write_json(path: Path | str, obj: Any) -> None:
    with atomic_outputs() as out:
        out.write_json(path, obj)


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
