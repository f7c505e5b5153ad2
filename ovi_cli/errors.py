"""The one exception type whose message is shown to a user as a single line, and its helpers."""

from __future__ import annotations

# the one line for Ctrl-C, from `ovi_cli.entry` (while importing) and `ovi_cli.cli.main` (after)
INTERRUPTED = "interrupted; files of unfinished results were not written"


class OviError(Exception):
    """A problem the user can fix: the CLI prints `ovi: error: <message>` and exits non-zero."""

    exit_code: int = 2


def first_line(exc: BaseException, *, with_type: bool = True) -> str:
    """`TypeName: first line of the message` (the type name alone for an empty message)."""
    text = str(exc).strip().splitlines()
    if not text:
        return type(exc).__name__
    return f"{type(exc).__name__}: {text[0]}" if with_type else text[0]


def printable(text: str) -> str:
    """`text` with control characters (terminal escapes, newlines, ...) shown as `\\xNN` escapes."""
    return "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in str(text))
