"""`ovi bench table`: scored runs side by side, one row per run, one column per category and scorer.

Rows are read from each run's `scores.json` (written by `ovi bench score`); a run is named by its
prior and constraints (`ovi+nn:0.5`). Columns follow the T2I-CompBench++ paper's order (color,
shape, texture, spatial, 3d_spatial, numeracy, non_spatial, complex, then other categories as scored); a
category scored by several scorers has one column per scorer, the paper's scorer first. Every
number is a mean over the images counted beside it. `published=True` adds the ECLIPSE paper's rows
(`ovi_cli.bench.published`), marked as published. Pure: formatting only; the CLI prints.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovi_cli.bench.layout import scores_json_path
from ovi_cli.bench.published import PAPER_SCORERS, PUBLISHED
from ovi_cli.bench.runlog import read_run_file
from ovi_cli.bench.score import SCORES_FORMAT, order_categories
from ovi_cli.errors import OviError

Column = tuple[str, str]  # (category, scorer)


@dataclass
class Cell:
    mean: float
    images: int | None = None  # None: a published number
    prompts: int | None = None
    unscored: int = 0
    low: float | None = None  # an interval, where the number has one (fidelity: FD's bootstrap, KID's std)
    high: float | None = None


@dataclass
class Row:
    name: str
    cells: dict[Column, Cell] = field(default_factory=dict)
    published: bool = False
    source: str = ""  # the run folder, or the citation of a published row
    primary: dict[str, str] = field(default_factory=dict)
    requires: dict[str, list[str]] = field(default_factory=dict)  # scorer -> the scorers it combines


@dataclass
class Table:
    columns: list[Column]
    rows: list[Row]
    primary: dict[str, str] = field(default_factory=dict)  # category -> its compositional (paper's) scorer


FIDELITY = "fidelity"  # the column group of `ovi bench fidelity`'s numbers: (FIDELITY, "fd:clip"), ...


def fidelity_cells(run: Path) -> dict[Column, Cell]:
    """(FIDELITY, "<metric>:<space>") cells from RUN/fidelity.json (whole run), if the run has one."""
    from ovi_cli.bench.fidelity import ALL, read_fidelity

    doc = read_fidelity(run) or {}
    cells: dict[Column, Cell] = {}
    for space, entry in (doc.get("spaces") or {}).items():
        for key, v in ((entry or {}).get(ALL) or {}).items():
            try:
                cells[(FIDELITY, f"{key}:{space}")] = Cell(
                    float("nan") if v["value"] is None else float(v["value"]), int(v["n"]),
                    low=None if v.get("low") is None else float(v["low"]),
                    high=None if v.get("high") is None else float(v["high"]))
            except (KeyError, TypeError, ValueError):
                continue
    return cells


def load_run(run: Path) -> Row:
    """One row from `RUN/scores.json`, or a one-line error."""
    run = Path(run)
    path = scores_json_path(run)
    if not run.is_dir():
        raise OviError(f"run folder {str(run)!r} does not exist")
    if not path.is_file():
        fidelity = fidelity_cells(run)
        if fidelity:  # measured with `ovi bench fidelity` only
            from ovi_cli.bench.score import read_bench_json, run_name

            return Row(run_name(read_bench_json(run), run.resolve().name), fidelity, source=str(run))
        raise OviError(f"{str(run)!r} has no scores.json: score it first with `ovi bench score {run}`")
    doc = read_run_file(path, SCORES_FORMAT, "an ovi scores file")
    row = Row(str(doc.get("name") or run.resolve().name), source=str(run),
              primary={k: v for k, v in (doc.get("primary") or {}).items() if isinstance(v, str)})
    for name, info in (doc.get("scorers") or {}).items():
        if isinstance(info, dict) and isinstance(info.get("requires"), list):
            row.requires[name] = [str(r) for r in info["requires"]]
    for category, per_scorer in (doc.get("categories") or {}).items():
        for scorer, v in (per_scorer or {}).items():
            try:
                row.cells[(category, scorer)] = Cell(float(v["mean"]), int(v["images"]), int(v.get("prompts", 0)),
                                                     int(v.get("unscored", 0)))
            except (KeyError, TypeError, ValueError):
                continue
    row.cells.update(fidelity_cells(run))
    return row


def published_rows() -> list[Row]:
    return [Row(f"{p.name} (published)", {(c, PAPER_SCORERS[c]): Cell(v) for c, v in p.scores.items()},
                published=True, source=p.source, primary={c: PAPER_SCORERS[c] for c in p.scores})
            for p in PUBLISHED]


def unique_names(rows: Sequence[Row]) -> None:
    """Two runs with the same prior and constraints get their folder names added."""
    seen: dict[str, int] = {}
    for r in rows:
        seen[r.name] = seen.get(r.name, 0) + 1
    for r in rows:
        if seen[r.name] > 1 and not r.published:
            r.name = f"{r.name} ({Path(r.source).name or r.source})"


def components(row: Row) -> set[Column]:
    """(category, scorer) cells computed only as parts of another scorer of the category (3-in-1's three)."""
    out = set()
    for category, scorer in row.cells:
        for part in row.requires.get(scorer, []):
            if (category, part) in row.cells:
                out.add((category, part))
    return out


def build_table(runs: Sequence[Row], published: bool = False, show_all: bool = False) -> Table:
    """Columns from the runs' scores (published rows fill only those columns).

    A score that is only a part of another scorer's on the same category (BLIP-VQA, detector and
    CLIPScore under complex's 3-in-1) gets no column unless `show_all`.
    """
    rows = list(runs)
    unique_names(rows)
    if not show_all:
        for r in rows:
            for col in components(r):
                r.cells.pop(col, None)
    columns = list(dict.fromkeys(col for r in rows for col in r.cells))  # first seen first
    primary: dict[str, str] = {}
    for r in rows:
        for c, s in r.primary.items():
            primary.setdefault(c, s)
    ordered: list[Column] = []
    for category in order_categories(c for c, _ in columns):
        scorers = [s for c, s in columns if c == category]
        first = primary.get(category, PAPER_SCORERS.get(category))
        ordered += sorted(((category, s) for s in scorers), key=lambda col: col[1] != first)  # stable
    if published:
        for p in published_rows():
            p.cells = {col: cell for col, cell in p.cells.items() if col in columns}
            rows.append(p)
    return Table(ordered, rows, {c: primary.get(c, PAPER_SCORERS.get(c, "")) for c in order_categories(
        c for c, _ in columns)})


def column_key(col: Column) -> str:
    return f"{col[0]}:{col[1]}"


def column_label(col: Column, table: Table, sep: str = " ") -> str:
    """`color` when the category has one column, else `color (clip-score)`; `sep="\\n"` puts the scorer below."""
    if sep == "\n":
        return f"{col[0]}\n{col[1]}"
    shared = sum(1 for c in table.columns if c[0] == col[0]) > 1
    return f"{col[0]} ({col[1]})" if shared else col[0]


def fmt(cell: Cell | None, digits: int = 4) -> str:
    if cell is None or math.isnan(cell.mean):
        return "-"
    return f"{cell.mean:.{digits}f}"


def count_text(cell: Cell | None) -> str:
    """`n=3000`, `n=120/3000` when some images are not scored yet, `published` for a paper's number."""
    if cell is None:
        return ""
    if cell.images is None:
        return "published"
    return f"n={cell.images}" if not cell.unscored else f"n={cell.images}/{cell.images + cell.unscored}"


def to_json(table: Table) -> dict[str, Any]:
    return {
        "columns": [{"key": column_key(c), "category": c[0], "scorer": c[1]} for c in table.columns],
        "rows": [{"name": r.name, "published": r.published, "source": r.source,
                  "scores": {column_key(c): {"mean": r.cells[c].mean, "images": r.cells[c].images,
                                             "prompts": r.cells[c].prompts, "unscored": r.cells[c].unscored,
                                             **({"low": r.cells[c].low, "high": r.cells[c].high}
                                                if r.cells[c].low is not None else {})}
                             for c in table.columns if c in r.cells}}
                 for r in table.rows],
    }


def to_csv(table: Table) -> str:
    """`run,published,source,<category:scorer>,<category:scorer>:images,...`; empty where a run has no score."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head = ["run", "published", "source"]
    for c in table.columns:
        head += [column_key(c), f"{column_key(c)}:images"]
    w.writerow(head)
    for r in table.rows:
        line: list[Any] = [r.name, "yes" if r.published else "no", r.source]
        for c in table.columns:
            cell = r.cells.get(c)
            line += [repr(cell.mean) if cell else "", "" if cell is None or cell.images is None else cell.images]
        w.writerow(line)
    return buf.getvalue()


def to_markdown(table: Table) -> str:
    """A GitHub table; each number is followed by its image count, published rows in italics."""
    head = ["run", *[column_label(c, table) for c in table.columns]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * len(table.columns)]
    for r in table.rows:
        cells = []
        for c in table.columns:
            cell = r.cells.get(c)
            if cell is None:
                cells.append("-")
            elif cell.images is None:
                cells.append(f"*{fmt(cell)}*")
            else:
                cells.append(f"{fmt(cell)} ({count_text(cell)})")
        name = f"*{r.name}*" if r.published else r.name
        lines.append("| " + " | ".join([name, *cells]) + " |")
    notes = sorted({r.source for r in table.rows if r.published})
    if notes:
        lines.append("")
        lines += [f"*Published* rows: {n}; their spatial column is UniDet's." for n in notes]
    return "\n".join(lines) + "\n"


def compositional_mean(row: Row, table: Table) -> float:
    """The mean of a row's compositional scores: each category's primary (paper's) scorer, fidelity aside."""
    values = [row.cells[(c, s)].mean for c, s in table.primary.items()
              if c != FIDELITY and (c, s) in row.cells and not math.isnan(row.cells[(c, s)].mean)]
    return sum(values) / len(values) if values else float("nan")


def fd_column(table: Table) -> Column | None:
    """The first Frechet-distance column (`fd:<space>`), if the runs have fidelity numbers."""
    return next((c for c in table.columns if c[0] == FIDELITY and c[1].startswith("fd:")), None)


def render_plot(path: Path | str, table: Table, title: str = "") -> None:
    """With fidelity numbers: each run a point, mean compositional score against FD (the paper's
    argument at a glance; FD's interval as a horizontal bar). Otherwise grouped bars: one group per
    column, one bar per row (published rows hatched)."""
    col = fd_column(table)
    if col is not None and any(col in r.cells and not math.isnan(compositional_mean(r, table)) for r in table.rows):
        render_scatter(path, table, title)
        return
    plot_figure(table, title).savefig(path, format="png")


def plot_figure(table: Table, title: str = ""):
    """The figure of `render_plot`'s bars; the legend sits outside the axes, right of them, so it never
    hides a bar (it covered the `real` bar of `ovi eval toy`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_cols, n_rows = len(table.columns), max(1, len(table.rows))
    fig = Figure(figsize=(max(8.0, 1.1 * n_cols * max(1, n_rows) ** 0.5 + 4), 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / n_rows
    for k, r in enumerate(table.rows):
        xs, ys = [], []
        for j, c in enumerate(table.columns):
            if c in r.cells and not math.isnan(r.cells[c].mean):
                xs.append(j - 0.4 + width * (k + 0.5))
                ys.append(r.cells[c].mean)
        ax.bar(xs, ys, width=width, label=r.name, color=f"C{k % 10}", hatch="//" if r.published else None,
               edgecolor="white" if r.published else None)
    ax.set_xticks(range(n_cols), [column_label(c, table, "\n") for c in table.columns], fontsize="small")
    ax.set_ylabel("score (mean over images)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    if title:
        ax.set_title(title, fontsize="medium")
    return fig


def render_scatter(path: Path | str, table: Table, title: str = "") -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    col = fd_column(table)
    assert col is not None
    fig = Figure(figsize=(8.0, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for k, r in enumerate(table.rows):
        cell = r.cells.get(col)
        y = compositional_mean(r, table)
        if cell is None or math.isnan(cell.mean) or math.isnan(y):
            continue
        err = None
        if cell.low is not None and cell.high is not None:
            err = [[max(0.0, cell.mean - cell.low)], [max(0.0, cell.high - cell.mean)]]
        ax.errorbar([cell.mean], [y], xerr=err, fmt="o", color=f"C{k % 10}", label=r.name, capsize=3)
        ax.annotate(r.name, (cell.mean, y), textcoords="offset points", xytext=(5, 4), fontsize="small")
    ax.set_xlabel(f"Frechet distance, {col[1].split(':', 1)[1]} features (lower: more realistic)")
    ax.set_ylabel("mean compositional score (higher: more faithful)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)  # as the bars
    if title:
        ax.set_title(title, fontsize="medium")
    fig.savefig(path, format="png")


def write_plot(path: Path, table: Table, title: str = "") -> None:
    from ovi_cli.outputs import atomic_outputs

    if not table.columns:
        raise OviError("nothing to plot: the runs have no scores")
    with atomic_outputs() as out:
        out.write_with(path, lambda p: render_plot(p, table, title))
