"""Cosine curves over OVI steps (like the paper's Fig. 2 and 4), as a PNG and the raw CSV.

A *history* is what OVI records per prompt and step (`OviResult.history`, the sidecar's
`history`): `text_cosine`, `loss`, one list per constraint (its unweighted term) and, in
`ovi compare`, `cos_<prior>` (cosine to another prior's embedding, e.g. `cos_eclipse`).
Values are measured on the embedding before each step's update.

Drawn with matplotlib's Agg canvas directly (no pyplot, no global backend switch), so it works
headless and does not disturb a caller's matplotlib state.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from ovi_cli.outputs import Staging, atomic_outputs, atomic_write_json

COSINE_PREFIX = "cos_"
TEXT = "text_cosine"
LOSS = "loss"

History = Mapping[str, Sequence[float]]


def cosine_series(history: History) -> list[str]:
    """The series drawn on the cosine panel: the text cosine, then cosines to other priors."""
    names = [TEXT] if TEXT in history else []
    return names + sorted(k for k in history if k.startswith(COSINE_PREFIX))


def term_series(history: History) -> list[str]:
    """The constraint terms: everything but the cosines and the total loss."""
    return sorted(k for k in history if k != LOSS and k != TEXT and not k.startswith(COSINE_PREFIX))


def series_label(name: str) -> str:
    if name == TEXT:
        return "cos to text"
    if name.startswith(COSINE_PREFIX):
        return f"cos to {name[len(COSINE_PREFIX):]}"
    return f"{name} term"


def has_curves(history: History | None) -> bool:
    return bool(history) and any(len(v) for v in history.values())


def history_csv(runs: Mapping[str, History]) -> str:
    """`run,step,<series...>`: one row per run and step; blank where a run lacks a series."""
    names: list[str] = []
    for h in runs.values():
        for k in [TEXT, LOSS, *sorted(h)]:
            if k in h and k not in names:
                names.append(k)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["run", "step", *names])
    for run, h in runs.items():
        steps = max((len(v) for v in h.values()), default=0)
        for step in range(steps):
            row: list[object] = [run, step]
            for k in names:
                values = h.get(k, ())
                row.append(repr(float(values[step])) if step < len(values) else "")
            writer.writerow(row)
    return buf.getvalue()


def render_history_png(path: Path | str, runs: Mapping[str, History], title: str = "") -> None:
    """Write the figure: a cosine panel and, when a run has constraint terms, a terms panel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    any_terms = any(term_series(h) for h in runs.values())
    fig = Figure(figsize=(8.0, 6.5 if any_terms else 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2 if any_terms else 1, 1, sharex=True, squeeze=False)[:, 0]
    colours = [f"C{i % 10}" for i in range(len(runs))]
    styles = ["-", "--", ":", "-."]
    multi = len(runs) > 1
    for colour, (run, h) in zip(colours, runs.items()):
        for j, name in enumerate(cosine_series(h)):
            label = f"{run}: {series_label(name)}" if multi else series_label(name)
            axes[0].plot(range(len(h[name])), list(h[name]), color=colour if multi else f"C{j}",
                         linestyle=styles[j % len(styles)] if multi else "-", label=label)
        if any_terms:
            for j, name in enumerate(term_series(h)):
                label = f"{run}: {series_label(name)}" if multi else series_label(name)
                axes[1].plot(range(len(h[name])), list(h[name]), color=colour if multi else f"C{j}",
                             linestyle=styles[j % len(styles)] if multi else "-", label=label)
    axes[0].set_ylabel("cosine similarity")
    axes[0].grid(alpha=0.3)
    if axes[0].lines:
        axes[0].legend(fontsize="small")
    if any_terms:
        values = [v for line in axes[1].lines for v in line.get_ydata()]
        if values and min(values) > 0 and max(values) / min(values) > 100:  # e.g. mahalanobis next to nn
            axes[1].set_yscale("log")
        axes[1].set_ylabel("constraint term (unweighted)")
        axes[1].grid(alpha=0.3)
        if axes[1].lines:
            axes[1].legend(fontsize="small")
    axes[-1].set_xlabel("OVI step")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        axes[0].set_title(title if len(title) <= 90 else title[:87] + "...", fontsize="medium")
    fig.savefig(path, format="png")


def stage_history_plot(
    staging: Staging, png: Path, csv_path: Path, runs: Mapping[str, History], title: str = ""
) -> None:
    """Add the PNG and the CSV of `runs` to a set of files being written atomically."""
    staging.write_with(png, lambda p: render_history_png(p, runs, title))
    staging.write_text(csv_path, history_csv(runs))


def plot_paths(out: Path) -> tuple[Path, Path]:
    """`<out>.plot.png`, `<out>.history.csv` beside an image `<out>.png` (`gen --plot`)."""
    stem = out.with_suffix("") if out.suffix.lower() == ".png" else out
    return stem.with_name(stem.name + ".plot.png"), stem.with_name(stem.name + ".history.csv")


def write_gen_plot(sidecar: Mapping, out: Path) -> tuple[Path, Path] | None:
    """`gen --plot`: the curves of one result from its sidecar; None when it has no OVI history."""
    history = sidecar.get("history") or {}
    if not has_curves(history):
        return None
    png, csv_path = plot_paths(Path(out))
    with atomic_outputs() as staging:
        stage_history_plot(staging, png, csv_path, {str(sidecar.get("prior", "ovi")): history},
                           title=str(sidecar.get("prompt", "")))
    return png, csv_path


def write_gen_plots(sidecars: Sequence[Mapping], outs: Sequence[Path], warn=None) -> list[tuple[Path, Path]]:
    """`gen --plot` for a batch; a result without OVI history (e.g. `--prior textemb`) gets a warning."""
    written = []
    for sc, out in zip(sidecars, outs):
        paths = write_gen_plot(sc, Path(out))
        if paths is None:
            if warn is not None:
                warn(f"--plot: prior {sc.get('prior')!r} records no per-step history; no plot for {str(out)!r}")
            continue
        sc.setdefault("files", {}).update({"plot": str(paths[0]), "history": str(paths[1])})
        atomic_write_json(Path(out).with_suffix(".json"), sc)  # the sidecar on disk lists them too
        written.append(paths)
    return written
