"""The `ovi` console script: Ctrl-C while ovi is still importing is one line and exit 130.

`ovi_cli.cli.main` maps Ctrl-C to one line once it runs, but importing Typer, Rich and the
commands takes a few hundred milliseconds before that; this module imports nothing heavy, holds a
quiet SIGINT handler over that window, hands over to `cli.main`, and holds it again once the command
is over (the interpreter's shutdown). (The first ~0.1 s, while the
Python interpreter itself starts, are Python's.)
"""

from __future__ import annotations

import os
import signal
from typing import Any

from ovi_cli.errors import INTERRUPTED


def _interrupted(signum: int, frame: Any) -> None:
    os.write(2, f"ovi: error: {INTERRUPTED}\n".encode())
    os._exit(130)


def main() -> Any:
    previous = signal.signal(signal.SIGINT, _interrupted)
    from ovi_cli.cli import main as cli_main

    signal.signal(signal.SIGINT, previous)
    try:
        return cli_main()
    finally:
        # the command is over (its result written, or its error line printed): a Ctrl-C while the
        # interpreter shuts down (atexit handlers, thread joins) is the same one line and exit 130,
        # not "Exception ignored in atexit callback ... KeyboardInterrupt"
        signal.signal(signal.SIGINT, _interrupted)
