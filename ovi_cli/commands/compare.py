"""`ovi compare`: several priors on the same prompt(s), one grid and one table per prompt."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ovi_cli import options
from ovi_cli.commands.common import flag_values, run_command, settings_from_params, warn_about_prompts
from ovi_cli.errors import OviError

# compare runs the priors of --priors, each with its own constraints: no --prior, --constraint or
# early stopping; a flag several priors declare is mounted once per prior, as --PRIOR-KEY
CompareCommand = run_command(exclude=("prior", "constraint", "patience", "min_delta", "compile"),
                             several_priors=True)


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def render_table(rows: list[dict[str, Any]], labels: list[str], title: str, with_store: bool,
                 preference: list[str] | None = None):
    """A Rich table of comparison rows (per prompt, or the means of a summary); `preference`: one more
    column per scorer of `--preference`."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    # numbers and prior names are never cut short; headers wrap instead when the terminal is narrow
    table.add_column("prior", min_width=max([len(str(r["prior"])) for r in rows] + [5]))
    numeric = ["cos text"] + [f"cos {lab}" for lab in labels]
    numeric += ["mahalanobis", "nn cos"] if with_store else []
    numeric += list(preference or [])
    for name in numeric + ["norm", "s"]:
        table.add_column(name, justify="right", min_width=6)
    for r in rows:
        cells = [r["prior"], _fmt(r.get("text_cosine"))]
        cells += [_fmt(r.get("cosine", {}).get(lab)) for lab in labels]
        if with_store:
            cells += [_fmt(r.get("mahalanobis"), 2), _fmt(r.get("nn_cosine"))]
        cells += [_fmt((r.get("preference") or {}).get(name)) for name in preference or []]
        cells += [_fmt(r.get("norm"), 3), _fmt(r.get("seconds"), 2)]
        table.add_row(*cells)
    return table


def _preset_priors(ctx: typer.Context, model: str | None, priors: str) -> str:
    """--priors as given, else the --model preset's `compare_priors` (e.g. the toy world's, which work
    offline), else compare's defaults."""
    source = ctx.get_parameter_source("priors")
    if model is None or (source is not None and source.name != "DEFAULT"):
        return priors
    from ovi_cli.plugins import get_registry

    return getattr(get_registry().get("model", model), "compare_priors", None) or priors


def compare(
    ctx: typer.Context,
    prompt: Annotated[str | None, typer.Argument(help="The text to compare the priors on (in quotes).")] = None,
    prompts_file: Annotated[Path | None, typer.Option(
        "--prompts", rich_help_panel=options.OUTPUT,
        help="A file with one prompt per line: one folder (grid, table) per prompt "
        "and summary.csv/.json with the means per prior.")] = None,
    priors: Annotated[str, typer.Option(
        rich_help_panel=options.MODELS,
        help="Comma-separated priors, in grid order: textemb, ovi, ovi+CONSTRAINT[:WEIGHT] "
        "(e.g. ovi+mahalanobis, ovi+nn:0.5), eclipse, kandinsky, or any registered prior. "
        "Default with --model: the preset's own list, when it has one (the toy world's works offline).")]
        = "textemb,ovi,eclipse,kandinsky",
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", rich_help_panel=options.OUTPUT,
        help="Output folder. Default: outputs/compare-<time>-<slug> (outputs/compare-<file stem> with --prompts).")]
        = None,
    seed: Annotated[int, typer.Option(
        rich_help_panel=options.OVI,
        help="Seed of every prior and of the decoder noise (the same for all priors; with --prompts, line i "
        "uses seed + i).")] = 0,
    stats: Annotated[str | None, typer.Option(
        rich_help_panel=options.CONSTRAINTS,
        help="Statistics store (name or folder): used by ovi+mahalanobis / ovi+nn and adds the "
        "Mahalanobis and nearest-neighbour columns; default: the newest store of this encoder "
        "when a constrained prior is listed.")] = None,
    plot: Annotated[bool, typer.Option(
        "--plot", rich_help_panel=options.OUTPUT,
        help="Also write plot.png (cosine over OVI steps to the text and to the trained priors' "
        "embeddings, constraint terms) and history.csv per prompt.")] = False,
    json_out: Annotated[bool, typer.Option(
        "--json", rich_help_panel=options.OUTPUT,
        help="Print each prompt's table JSON to stdout (one line each), then the summary.")] = False,
    preference: Annotated[str | None, typer.Option(
        "--preference", rich_help_panel=options.OUTPUT, show_default=False, metavar="SCORERS",
        help="Comma-separated scorers that score every prior's image against the prompt, one column each: "
        "pickscore, hps, imagereward, clip-score (the scorers of `ovi bench score` that need no benchmark "
        "category); their models as there, e.g. --option pickscore.model=DIR.")] = None,
) -> None:
    """Compare priors (TextEmb, OVI, constrained OVI, ECLIPSE, Kandinsky) on the same prompt(s).

    Try it offline: ovi compare "a red circle" --model toy --priors textemb,ovi,ovi+nn,toy-prior
    """
    from rich.console import Console

    from ovi_cli.checks import check_output_folder, check_seed
    from ovi_cli.compare import Comparison, parse_priors
    from ovi_cli.compare_preference import preference_request
    from ovi_cli.console import RichReporter, make_progress, print_table
    from ovi_cli.outputs import slugify
    from ovi_cli.prompts import prompts_from

    quiet, model = bool(flag_values(ctx).get("quiet")), flag_values(ctx).get("model")
    prompts = prompts_from(prompt, prompts_file)
    choices = parse_priors(_preset_priors(ctx, model, priors))
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = Path("outputs") / (f"compare-{stamp}-{slugify(prompts[0])}" if prompts_file is None
                                 else f"compare-{slugify(prompts_file.stem)}")
    if out.exists() and not out.is_dir():
        raise OviError(f"--out {str(out)!r} is a file; compare writes a folder")
    check_output_folder(out)
    check_seed(seed, count=len(prompts))
    settings = settings_from_params(ctx, prior="ovi")
    settings.check()
    # the scorers' --options leave the run's; CLIP-based scorers use the --model preset's CLIP, as in bench score
    settings, request = preference_request(preference, settings,
                                           encoder_model=settings.encoder_model if model else None)
    progress = make_progress(quiet)
    reporter = RichReporter(progress, quiet=quiet)
    cmp = Comparison(choices, settings, reporter=reporter, preference=request)
    warn_about_prompts(model, prompts, reporter.warn)
    console = Console()

    def shown(result) -> None:
        if json_out:
            typer.echo(json.dumps(cmp.table_json(result)))
        elif not quiet:
            print_table(render_table(result.rows, result.labels, result.prompt, cmp.store is not None,
                                     cmp.preference_names), progress.console)
            progress.console.print(f"-> {', '.join(result.files.values())}", highlight=False)

    with progress:
        run = cmp.run(prompts, out, plot=plot, per_prompt_folders=prompts_file is not None, on_result=shown)
    if json_out:
        typer.echo(json.dumps({"summary": run.summary, "files": run.files}))
    elif not quiet:
        if len(prompts) > 1:
            print_table(render_table(run.summary, cmp.labels, f"means over {len(prompts)} prompts",
                                     cmp.store is not None, cmp.preference_names), console)
        console.print(f"summary -> {run.files['summary_csv']}, {run.files['summary_json']}", highlight=False)
        if not cmp.produces_images:
            console.print("decoder 'embeds': no images, no grid", highlight=False)
