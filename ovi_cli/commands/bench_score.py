"""`ovi bench score` (score a run's images with scorer plugins) and `ovi bench table` (runs side by side)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ovi_cli import options
from ovi_cli.commands.common import plugin_aliases, plugin_options, run_command
from ovi_cli.errors import OviError

SCORING = "Scoring"


def _names(text: str | None, flag: str) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise OviError(f"{flag} needs at least one name")
    return list(dict.fromkeys(names))


# the scorers' own flags (`PluginOption(flag=...)`), mounted from the registry
ScoreCommand = run_command(shared=False, kinds=("scorer",))


def score(
    ctx: typer.Context,
    run: Annotated[Path, typer.Argument(help="A benchmark run folder (RUN/<category>/samples/*.png).")],
    scorers: Annotated[str | None, typer.Option(
        rich_help_panel=SCORING, show_default=False,
        help="Comma-separated scorers to run on every category (default: the paper's scorer per category: "
        "color/shape/texture blip-vqa, spatial/numeracy detector, non_spatial clip-score, complex 3-in-1; "
        "oracle for toy runs). `ovi plugins` lists them.")] = None,
    categories: Annotated[str | None, typer.Option(
        rich_help_panel=SCORING, show_default=False,
        help="Comma-separated categories to score (default: every category in RUN).")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", rich_help_panel=options.MODELS, show_default=False,
        help="Model preset whose CLIP the CLIP-based scorers use, e.g. `toy` (the toy CLIP, offline). "
        "Default: the preset the run's benchmark names (the toy benchmark: toy), else none.")] = None,
    option: Annotated[list[str] | None, typer.Option(
        "--option", "-O", rich_help_panel=options.PLUGIN_OPTIONS, metavar="SCORER.KEY=VALUE",
        help="A scorer option, repeatable: detector.threshold=0.2, blip-vqa.image_size=0 ... "
        "(`ovi plugins --options` lists them).")] = None,
    nlp: Annotated[str, typer.Option(
        rich_help_panel=SCORING,
        help="Noun phrases and parts of speech: auto (spaCy en_core_web_sm where installed, as the official "
        "scripts; else ovi's rule-based parser), spacy, rules.")] = "auto",
    rescore: Annotated[bool, typer.Option(
        "--rescore", rich_help_panel=SCORING,
        help="Discard earlier scores made with other settings (model, options, parser) and score again.")] = False,
    device: options.Device = "auto",
    batch_size: Annotated[int, typer.Option(rich_help_panel=options.RUN, help="Images per scorer batch.")] = 16,
    quiet: options.Quiet = False,
    as_json: options.Json = False,
) -> None:
    """Score a benchmark run: per-image scores, the official result files and RUN/scores.json (resumable)."""
    from ovi_cli.bench.score import ScoreRequest, open_run, score_run
    from ovi_cli.bench.table import build_table, load_run
    from ovi_cli.console import RichReporter, make_progress, print_bench_table

    info = open_run(run)  # a bad folder is one line before anything loads
    if model is None:
        model = _score_preset(info.bench.get("benchmark"))
    request = ScoreRequest(
        scorers=_names(scorers, "--scorers"), categories=_names(categories, "--categories"), device=device,
        batch_size=batch_size, nlp=nlp, rescore=rescore,
        options=plugin_options(option, plugin_aliases(ctx)),
    )
    if model is not None:
        from ovi_cli.presets import apply_model
        from ovi_cli.settings import GenSettings

        preset = apply_model(GenSettings(), model)
        request.encoder_model = preset.encoder_model
    progress = make_progress(quiet)
    with progress:
        doc = score_run(run, request, reporter=RichReporter(progress, quiet=quiet))
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    print_bench_table(build_table([load_run(run)]), f"{doc['name']}: {run}")
    typer.echo(f"wrote {run / 'scores.json'} and the official result files under each category")


def _score_preset(benchmark: object) -> str | None:
    """The model preset the run's benchmark asks its runs to be scored with (None: none, or the
    benchmark's plugin is not installed here)."""
    from ovi_cli.plugins import get_registry

    registry = get_registry()
    if not isinstance(benchmark, str) or benchmark not in registry.names("benchmark"):
        return None
    return getattr(registry.get("benchmark", benchmark), "score_preset", None)


def strict_json(value):
    """`value` with every NaN or infinity as null: what `--json` prints is JSON every parser reads."""
    if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def table(
    runs: Annotated[list[Path], typer.Argument(help="Scored run folders (each with scores.json).")],
    published: Annotated[bool, typer.Option(
        "--published", help="Add the ECLIPSE paper's published rows (Kandinsky 2.2 prior, ECLIPSE), marked.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV instead of the table.")] = False,
    as_json: options.Json = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown table instead.")] = False,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Also write grouped bars (PNG) of the table to this file.")] = None,
    show_all: Annotated[bool, typer.Option(
        "--all", help="Also show the scores that are parts of another (BLIP-VQA, detector, CLIP under 3-in-1).")]
        = False,
) -> None:
    """One row per run (named by prior and constraints), one column per category as in the paper."""
    from ovi_cli.bench.table import build_table, load_run, to_csv, to_json, to_markdown, write_plot

    if sum([as_csv, as_json, markdown]) > 1:
        raise OviError("choose one of --csv, --json, --markdown")
    if plot is not None:
        if plot.exists() and plot.is_dir():
            raise OviError(f"--plot {str(plot)!r} is a folder; name a .png file")
        if not plot.parent.exists():
            raise OviError(f"--plot: folder {str(plot.parent)!r} does not exist")
    from ovi_cli.console import print_bench_table

    tab = build_table([load_run(r) for r in runs], published=published, show_all=show_all)
    if published and not any(r.cells for r in tab.rows if r.published):
        from ovi_cli.console import warn

        warn("--published: the runs share no category with the published rows (color, shape, texture, spatial, "
             "non_spatial)")
    if as_csv:
        typer.echo(to_csv(tab), nl=False)
    elif as_json:
        typer.echo(json.dumps(strict_json(to_json(tab)), indent=2))
    elif markdown:
        typer.echo(to_markdown(tab), nl=False)
    else:
        print_bench_table(tab, f"ovi bench table: {len(runs)} run(s)")
    if plot is not None:
        write_plot(plot, tab)
        if not (as_csv or as_json or markdown):
            typer.echo(f"wrote {plot}")
