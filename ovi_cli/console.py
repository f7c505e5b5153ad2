"""Terminal output: Rich progress bars on stderr, one-line warnings and errors."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ovi_cli.api import Reporter
from ovi_cli.errors import printable

err_console = Console(stderr=True, highlight=False, soft_wrap=True, log_path=False)


def warn(message: str) -> None:
    from rich.markup import escape

    err_console.print(f"[yellow]ovi: warning:[/yellow] {escape(printable(message))}", markup=True, highlight=False)


def error_line(message: str) -> None:
    # plain write: one line, no wrapping, no markup interpretation of the message
    sys.stderr.write(f"ovi: error: {printable(message)}\n")
    sys.stderr.flush()


def print_table(table, console: Console | None = None) -> None:
    """Print a Rich table without cutting any cell.

    Cells fold (wrap, inside a word if need be) to fit the width instead of ending in "...", and a
    table whose columns cannot be narrower than the width is printed wider, never cropped. On a
    pipe or in a file with no `COLUMNS` set, the table is printed at its natural width, one line
    per row, so `ovi plugins | cat` and `grep` see every cell whole.
    """
    from rich.measure import Measurement

    console = console or Console()
    for column in table.columns:
        column.overflow = "fold"
        column.no_wrap = False
    before = console.width
    measure = Measurement.get(console, console.options.update(width=10**6), table)
    # columns with a minimum width (numbers kept whole) can need more than the width: print wider
    # (the terminal wraps the lines) rather than let the console crop them
    width = max(before, measure.minimum)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        width = max(width, measure.maximum)
    try:
        console.width = width
        console.print(table)
    finally:
        console.width = before


def make_progress(quiet: bool = False) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=quiet,
        transient=True,  # bars vanish when done; results are printed as plain lines
    )


class RichReporter(Reporter):
    """Renders a pipeline's progress: one bar for OVI steps (live cosine), one for decoding."""

    def __init__(self, progress: Progress, quiet: bool = False) -> None:
        self.progress = progress
        self.quiet = quiet
        self._ovi: TaskID | None = None
        self._decode: TaskID | None = None
        self._stage: TaskID | None = None
        self.label = ""
        self._warned: set[str] = set()

    def warn(self, message: str) -> None:
        """Each distinct warning once per run (`ovi compare` runs every prior on the same prompt)."""
        if message not in self._warned:
            self._warned.add(message)
            warn(message)

    def stage(self, name: str) -> None:
        """What is happening now (loading models, ...), shown as a spinner line."""
        if self._stage is None:
            self._stage = self.progress.add_task(name, total=None, info="")
        else:
            self.progress.update(self._stage, description=name)

    def new_batch(self, label: str) -> None:
        """Start fresh bars for the next batch of prompts."""
        for task in (self._ovi, self._decode):
            if task is not None:
                self.progress.remove_task(task)
        self._ovi = self._decode = None
        self.label = label

    def ovi_progress(self, step: int, total: int, values: dict[str, list[float]]) -> None:
        cos = values.get("cos", [])
        info = ""
        if cos:
            info = f"cos {cos[0]:.4f}" if len(cos) == 1 else f"cos {min(cos):.3f}..{max(cos):.3f}"
        if self._ovi is None:
            self._ovi = self.progress.add_task(f"OVI {self.label}".strip(), total=total, info=info)
        self.progress.update(self._ovi, completed=step, total=total, info=info)

    def decode_progress(self, step: int, total: int) -> None:
        if self._decode is None:
            self._decode = self.progress.add_task(f"decode {self.label}".strip(), total=total, info="")
        self.progress.update(self._decode, completed=step, total=total)

    def info(self, message: str) -> None:
        if not self.quiet:
            self.progress.console.print(message, markup=False, highlight=False)

    def start(self, label: str, total: int | None) -> None:
        """A fresh bar for a counted task (the previous one is kept on screen)."""
        self._count = self.progress.add_task(label, total=total, info="")

    def advance(self, done: int = 1, info: str = "") -> None:
        task = getattr(self, "_count", None)
        if task is not None:
            self.progress.update(task, advance=done, info=info)


class UI:
    """Terminal services handed to plugin commands (`register_commands(cli, ui)`): plugins draw with
    these instead of importing ovi's terminal modules, so the layers stay as they are."""

    from ovi_cli import options  # the shared flag types (`ui.options.Quiet`, ...), for plugin commands

    @staticmethod
    def progress(quiet: bool = False) -> Progress:
        """A Rich progress display (a context manager), as ovi's own commands draw it."""
        return make_progress(quiet)

    @staticmethod
    def reporter(progress: Progress, quiet: bool = False) -> RichReporter:
        """A `Reporter` (ovi_cli.reporter) that draws on `progress`: hand it to any library run."""
        return RichReporter(progress, quiet=quiet)

    @staticmethod
    def print_table(table, title: str) -> None:
        """A benchmark table (`ovi_cli.bench.table.Table`) as `ovi bench table` prints it."""
        print_bench_table(table, title)

    @staticmethod
    def warn(message: str) -> None:
        warn(message)

    @staticmethod
    def error(message: str) -> None:
        error_line(message)


def print_bench_table(table, title: str) -> None:
    """The Rich table; never cut: wider than the terminal, it is printed wide (the terminal wraps lines)."""
    from rich.console import Console
    from rich.table import Table as RichTable

    from ovi_cli.bench.table import count_text, fmt

    out = RichTable(title=title, title_justify="left")
    name_width = max([len(r.name) for r in table.rows] + [3])
    out.add_column("run", min_width=name_width, no_wrap=True)
    widths = []
    for c in table.columns:
        width = max(len(c[0]), len(c[1]), max([len(count_text(r.cells.get(c))) for r in table.rows] + [6]))
        widths.append(width)
        out.add_column(f"{c[0]}\n[dim]{c[1]}[/dim]", justify="right", min_width=width, no_wrap=True)
    for r in table.rows:
        cells = []
        for c in table.columns:
            cell = r.cells.get(c)
            cells.append("-" if cell is None else f"{fmt(cell)}\n[dim]{count_text(cell)}[/dim]")
        out.add_row(f"[italic]{r.name}[/italic]" if r.published else r.name, *cells)
    console = Console()
    console.width = max(console.width, name_width + sum(widths) + 3 * (len(widths) + 1) + 1)
    console.print(out)
    if any(r.published for r in table.rows):
        Console().print("[dim]published: the ECLIPSE paper's Table 1 (its spatial column is UniDet's, ovi's "
                        "detector is an OWLv2 substitute)[/dim]")
