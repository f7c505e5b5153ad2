"""`ovi gen`: one prompt or a prompt file -> prior -> image embedding -> decoder -> PNG + JSON.

Thin over `ovi_cli.gen_run.GenRun`: parse the flags, build the run, render its reports and results.
The shared run flags (models, OVI, constraints, decoding, execution) and the plugins' flag aliases
are mounted by `GenCommand` (`ovi_cli.commands.common.RunCommand`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ovi_cli import options
from ovi_cli.commands.common import run_command
from ovi_cli.errors import OviError

GenCommand = run_command()


def gen(
    ctx: typer.Context,
    prompt: Annotated[str | None, typer.Argument(help="The text to generate an image from (in quotes).")] = None,
    prompts_file: Annotated[Path | None, typer.Option(
        "--prompts", rich_help_panel=options.OUTPUT,
        help="A file with one prompt per line; --out is then a folder and files are named "
        "NNNN-<slug>.png/.json. Finished prompts are skipped when re-run (resume); finished prompts made "
        "with other settings are refused (see --overwrite).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", rich_help_panel=options.OUTPUT,
        help="Output image path (.png), its sidecar .json beside it. Default: outputs/<time>-<slug>.png")] = None,
    seed: Annotated[int, typer.Option(
        rich_help_panel=options.OVI,
        help="Seed for the pseudo-tokens and the decoder noise (with --prompts, line i uses seed + i).")] = 0,
    batch: Annotated[int, typer.Option(rich_help_panel=options.RUN,
                                       help="Prompts optimised together in one batch.")] = 1,
    shard: Annotated[str | None, typer.Option(
        rich_help_panel=options.RUN, show_default=False,
        help="With --prompts: make only share I of N (I/N) of the batches, for separate jobs writing the same "
        "--out; under torchrun the ranks split the work the same way.")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", rich_help_panel=options.OUTPUT,
        help="With --prompts: make finished prompts again and replace them (needed when they were made with "
        "other settings).")] = False,
    save_embedding: Annotated[bool, typer.Option(
        "--save-embedding", rich_help_panel=options.OUTPUT,
        help="Also write PATH.safetensors (image_embeds, negative_image_embeds, text_embeds).")] = False,
    plot: options.Plot = False,
    json_out: Annotated[bool, typer.Option(
        "--json", rich_help_panel=options.OUTPUT, help="Print the sidecar JSON to stdout (one line per prompt).")]
        = False,
    recipe: Annotated[Path | None, typer.Option(
        "--from", rich_help_panel=options.OUTPUT, show_default=False,
        help="Make an image again from its recipe: a PNG ovi wrote (its `ovi` chunk) or its .json sidecar. "
        "Flags given beside it change the recipe (--seed 7, -c nn:0.3).")] = None,
) -> None:
    """Generate an image from a prompt: OVI (or another prior) + the Kandinsky 2.2 decoder.

    Try it offline in seconds: ovi gen "a red circle" --model toy
    """
    from ovi_cli.commands.common import flag_values, settings_from_params
    from ovi_cli.console import RichReporter, make_progress
    from ovi_cli.distributed import launch_from_env, parse_shard
    from ovi_cli.gen_run import GenRun

    launch = launch_from_env()
    quiet = bool(flag_values(ctx).get("quiet"))
    settings = settings_from_params(ctx)
    if recipe is not None:  # --from: the recipe's prompt and settings, the flags given on top
        from ovi_cli.commands.common import explicit_params
        from ovi_cli.png_recipe import settings_from_recipe

        if prompt is not None or prompts_file is not None:
            raise OviError("--from makes one image again from its recipe: give no PROMPT and no --prompts")
        prompt, settings = settings_from_recipe(recipe, settings, explicit_params(ctx))
    show = not quiet and launch.leader  # one process draws progress
    progress = make_progress(not show)
    reporter = RichReporter(progress, quiet=not show)
    run = GenRun(settings, prompt=prompt, prompts_file=prompts_file, out=out, shard=parse_shard(shard),
                 overwrite=overwrite, save_embedding=save_embedding, plot=plot, model=flag_values(ctx).get("model"),
                 reporter=reporter, launch=launch)
    run.plan()  # every number and output file, and what is already done, before any model loads

    def shown(sc: dict) -> None:
        if json_out:
            typer.echo(json.dumps(sc))
        elif not quiet:
            files = ", ".join(sc["files"].values())
            progress.console.print(f"text cosine {sc['text_cosine']:.4f} -> {files}")

    with progress:
        run.run(on_result=shown)
