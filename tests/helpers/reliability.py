"""Shared by the reliability tests and the fuzz: one error line, nothing left behind, a Ctrl-C on cue."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def one_line_error(res, *needles: str) -> str:
    """The single `ovi: error:` line of a failed run (no traceback), containing every needle."""
    assert res.code != 0, (res.code, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ovi: error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes | None]]:
    """Every entry under `root` (symlinks not followed): (mode, size, content of small files)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            small = p.is_file() and not p.is_symlink() and st.st_size <= 1 << 16
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, p.read_bytes() if small else None)
    return out


class Stop(KeyboardInterrupt):
    """A Ctrl-C raised by a test's callback (a subclass, so `pytest.raises(Stop)` catches only it)."""


def interrupt_when(matches: Callable[[Any], bool]) -> Callable[[Any], None]:
    """A progress callback that raises `Stop` at the first value `matches`: a Ctrl-C at that moment."""
    def callback(value: Any) -> None:
        if matches(value):
            raise Stop()

    return callback
