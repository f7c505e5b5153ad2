"""`ovi compare`: several priors on the same prompt(s), one grid and one table per prompt."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ovi_cli import options
from ovi_cli.commands.common import plugin_options, settings_from_flags, warn_about_prompts
from ovi_cli.errors import OviError
from ovi_cli.settings import GenSettings


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def render_table(rows: list[dict[str, Any]], labels: list[str], title: str, with_store: bool):
    """A Rich table of comparison rows (per prompt, or the means of a summary)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    # numbers and prior names are never cut short; headers wrap instead when the terminal is narrow
    table.add_column("prior", min_width=max([len(str(r["prior"])) for r in rows] + [5]))
    numeric = ["cos text"] + [f"cos {lab}" for lab in labels]
    numeric += ["mahalanobis", "nn cos"] if with_store else []
    for name in numeric + ["norm", "s"]:
        table.add_column(name, justify="right", min_width=6)
    for r in rows:
        cells = [r["prior"], _fmt(r.get("text_cosine"))]
        cells += [_fmt(r.get("cosine", {}).get(lab)) for lab in labels]
        if with_store:
            cells += [_fmt(r.get("mahalanobis"), 2), _fmt(r.get("nn_cosine"))]
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
    model: options.Model = None,
    decoder: options.Decoder = GenSettings.decoder,
    encoder_model: options.EncoderModel = GenSettings.encoder_model,
    decoder_model: options.DecoderModel = GenSettings.decoder_model,
    tokens: options.Tokens = GenSettings.tokens,
    steps: options.Steps = GenSettings.steps,
    schedule: options.Schedule = GenSettings.schedule,
    lr: options.Lr = GenSettings.lr,
    weight_decay: options.WeightDecay = GenSettings.weight_decay,
    seed: Annotated[int, typer.Option(
        rich_help_panel=options.OVI,
        help="Seed of every prior and of the decoder noise (the same for all priors; with --prompts, line i "
        "uses seed + i).")] = 0,
    stats: Annotated[str | None, typer.Option(
        rich_help_panel=options.CONSTRAINTS,
        help="Statistics store (name or folder): used by ovi+mahalanobis / ovi+nn and adds the "
        "Mahalanobis and nearest-neighbour columns; default: the newest store of this encoder "
        "when a constrained prior is listed.")] = None,
    option: options.Option = None,
    eclipse_model: Annotated[str | None, typer.Option(
        rich_help_panel=options.PLUGIN_OPTIONS, show_default=False,
        help="Alias of --option eclipse.model=M (default ECLIPSE-Community/ECLIPSE_KandinskyV22_Prior).")] = None,
    kandinsky_model: Annotated[str | None, typer.Option(
        rich_help_panel=options.PLUGIN_OPTIONS, show_default=False,
        help="Alias of --option kandinsky.model=M (default: --encoder-model when it holds prior/ and "
        "scheduler/, else kandinsky-community/kandinsky-2-2-prior).")] = None,
    prior_steps: options.PriorSteps = None,
    prior_guidance: options.PriorGuidance = None,
    nn_every: options.NnEvery = None,
    nn_k: options.NnK = None,
    negative: options.Negative = GenSettings.negative,
    height: options.Height = GenSettings.height,
    width: options.Width = GenSettings.width,
    decoder_steps: options.DecoderSteps = GenSettings.decoder_steps,
    guidance_scale: options.GuidanceScale = GenSettings.guidance_scale,
    device: options.Device = GenSettings.device,
    dtype: options.Dtype = GenSettings.dtype,
    plot: Annotated[bool, typer.Option(
        "--plot", rich_help_panel=options.OUTPUT,
        help="Also write plot.png (cosine over OVI steps to the text and to the trained priors' "
        "embeddings, constraint terms) and history.csv per prompt.")] = False,
    quiet: options.Quiet = False,
    json_out: Annotated[bool, typer.Option(
        "--json", rich_help_panel=options.OUTPUT,
        help="Print each prompt's table JSON to stdout (one line each), then the summary.")] = False,
) -> None:
    """Compare priors (TextEmb, OVI, constrained OVI, ECLIPSE, Kandinsky) on the same prompt(s).

    Try it offline: ovi compare "a red circle" --model toy --priors textemb,ovi,ovi+nn,toy-prior
    """
    from rich.console import Console

    from ovi_cli.checks import check_output_folder, check_seed
    from ovi_cli.compare import Comparison, parse_priors
    from ovi_cli.console import RichReporter, make_progress, print_table
    from ovi_cli.outputs import slugify
    from ovi_cli.prompts import prompts_from

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
    settings = settings_from_flags(
        ctx, model,
        prior="ovi", decoder=decoder, encoder_model=encoder_model, decoder_model=decoder_model,
        tokens=tokens, steps=steps, schedule=schedule, lr=lr, weight_decay=weight_decay, seed=seed,
        stats=stats,
        negative=negative, height=height, width=width, decoder_steps=decoder_steps,
        guidance_scale=guidance_scale, device=device, dtype=dtype,
        options=plugin_options(option, {
            ("nn", "every"): nn_every, ("nn", "k"): nn_k, ("eclipse", "model"): eclipse_model,
            ("kandinsky", "model"): kandinsky_model, ("kandinsky", "steps"): prior_steps,
            ("kandinsky", "guidance"): prior_guidance,
        }),
    )
    settings.check()
    progress = make_progress(quiet)
    reporter = RichReporter(progress, quiet=quiet)
    cmp = Comparison(choices, settings, reporter=reporter)
    warn_about_prompts(model, prompts, reporter.warn)
    console = Console()

    def shown(result) -> None:
        if json_out:
            typer.echo(json.dumps(cmp.table_json(result)))
        elif not quiet:
            print_table(render_table(result.rows, result.labels, result.prompt, cmp.store is not None),
                        progress.console)
            progress.console.print(f"-> {', '.join(result.files.values())}", highlight=False)

    with progress:
        run = cmp.run(prompts, out, plot=plot, per_prompt_folders=prompts_file is not None, on_result=shown)
    if json_out:
        typer.echo(json.dumps({"summary": run.summary, "files": run.files}))
    elif not quiet:
        if len(prompts) > 1:
            print_table(render_table(run.summary, cmp.labels, f"means over {len(prompts)} prompts",
                                     cmp.store is not None), console)
        console.print(f"summary -> {run.files['summary_csv']}, {run.files['summary_json']}", highlight=False)
        if not cmp.produces_images:
            console.print("decoder 'embeds': no images, no grid", highlight=False)
