"""`ovi gen`: one prompt or a prompt file -> prior -> image embedding -> decoder -> PNG + JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ovi_cli import options
from ovi_cli.errors import OviError
from ovi_cli.settings import GenSettings

if TYPE_CHECKING:
    from ovi_cli.distributed import Share


def plan_outputs(
    prompt: str | None, prompts_file: Path | None, out: Path | None, seed: int
) -> tuple[list[str], list[int], list[Path]]:
    """(prompts, seeds, image paths) for one prompt or a prompt file."""
    from ovi_cli.checks import check_output_file, check_output_folder
    from ovi_cli.outputs import default_output_path, slugify
    from ovi_cli.prompts import prompts_from

    prompts = prompts_from(prompt, prompts_file)
    if prompt is not None:
        path = check_output_file(out or default_output_path(prompt))
        if path.suffix.lower() != ".png":
            if path.suffix.lower() in (".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"):
                raise OviError(f"--out {str(path)!r}: ovi writes PNG images; name the file .png")
            path = path.with_suffix(path.suffix + ".png") if path.suffix else path.with_suffix(".png")
        return prompts, [seed], [path]
    assert prompts_file is not None
    folder = out or Path("outputs") / slugify(prompts_file.stem)
    if folder.suffix.lower() == ".png":
        raise OviError("with --prompts, --out is a folder, not a .png file")
    check_output_folder(folder)
    paths = [folder / f"{i:04d}-{slugify(p)}.png" for i, p in enumerate(prompts)]
    return prompts, [seed + i for i in range(len(prompts))], paths


def batch_groups(count: int, batch: int, share: Share) -> list[list[int]]:
    """The prompt indices of each batch this process makes: batches of `batch` consecutive lines,
    dealt round robin to the shares (fixed batches: any split gives the single-process files)."""
    groups = [list(range(s, min(count, s + batch))) for s in range(0, count, batch)]
    return [g for n, g in enumerate(groups) if share.owns(n)]


def unfinished(todo: list[int], paths: list[Path], settings: GenSettings, overwrite: bool) -> list[int]:
    """The prompts of `todo` still to make: those without a sidecar (all of them with `overwrite`).

    A finished prompt made with other settings is refused (one line naming them), not skipped.
    """
    from ovi_cli.resume import describe_differences, settings_differences

    if overwrite:
        return list(todo)
    out, clashes = [], []
    for i in todo:
        side = read_sidecar(paths[i].with_suffix(".json"))
        if side is None:
            out.append(i)
            continue
        diffs = settings_differences(*sidecar_settings(side, settings.to_dict()))
        if diffs:
            clashes.append((paths[i], diffs))
    if clashes:
        path, diffs = clashes[0]
        raise OviError(f"{len(clashes)} finished prompt(s) in {str(path.parent)!r} were made with other settings "
                       f"({describe_differences(diffs)}; e.g. {path.name}); rerun with --overwrite to make them "
                       "again, or choose another --out")
    return out


def read_sidecar(path: Path) -> dict | None:
    """A finished prompt's sidecar, or None (missing, or unreadable: then the prompt is made again)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# what a sidecar written before sidecars held "settings" still tells about them
LEGACY_SETTINGS = ("prior", "decoder", "tokens", "steps", "lr", "weight_decay", "negative")


def sidecar_settings(side: dict, new: dict) -> tuple[dict, dict]:
    """(old, new) settings to compare: the sidecar's own, or what an older sidecar recorded."""
    if isinstance(side.get("settings"), dict):
        return side["settings"], new
    keys = [k for k in LEGACY_SETTINGS if k in side]
    return {k: side[k] for k in keys}, {k: new[k] for k in keys}


def check_gen_run(settings: GenSettings, paths: Sequence[Path], seeds: Sequence[int], batch: int) -> None:
    """`ovi gen` before anything loads: every number, the seeds of every prompt, every output file."""
    from ovi_cli.checks import MAX_BATCH, check_int, check_result_paths, check_seed

    check_int(batch, "--batch", minimum=1, maximum=MAX_BATCH)
    settings.check()
    if seeds:
        check_seed(min(seeds), count=max(seeds) - min(seeds) + 1)
    check_result_paths(paths)


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
    model: options.Model = None,
    prior: options.Prior = GenSettings.prior,
    decoder: options.Decoder = GenSettings.decoder,
    encoder_model: options.EncoderModel = GenSettings.encoder_model,
    encoder_family: options.EncoderFamily = GenSettings.encoder_family,
    decoder_model: options.DecoderModel = GenSettings.decoder_model,
    tokens: options.Tokens = GenSettings.tokens,
    steps: options.Steps = GenSettings.steps,
    schedule: options.Schedule = GenSettings.schedule,
    lr: options.Lr = GenSettings.lr,
    weight_decay: options.WeightDecay = GenSettings.weight_decay,
    patience: options.Patience = GenSettings.patience,
    min_delta: options.MinDelta = GenSettings.min_delta,
    seed: Annotated[int, typer.Option(
        rich_help_panel=options.OVI,
        help="Seed for the pseudo-tokens and the decoder noise (with --prompts, line i uses seed + i).")] = 0,
    constraint: options.Constraint = None,
    stats: options.Stats = None,
    option: options.Option = None,
    nn_every: options.NnEvery = None,
    nn_k: options.NnK = None,
    prior_model: options.PriorModel = None,
    prior_steps: options.PriorSteps = None,
    prior_guidance: options.PriorGuidance = None,
    negative: options.Negative = GenSettings.negative,
    height: options.Height = GenSettings.height,
    width: options.Width = GenSettings.width,
    decoder_steps: options.DecoderSteps = GenSettings.decoder_steps,
    guidance_scale: options.GuidanceScale = GenSettings.guidance_scale,
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
    device: options.Device = GenSettings.device,
    dtype: options.Dtype = GenSettings.dtype,
    compile: options.Compile = False,
    save_embedding: Annotated[bool, typer.Option(
        "--save-embedding", rich_help_panel=options.OUTPUT,
        help="Also write PATH.safetensors (image_embeds, negative_image_embeds, text_embeds).")] = False,
    plot: options.Plot = False,
    quiet: options.Quiet = False,
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
    from dataclasses import replace

    from ovi_cli.commands.common import settings_from_params, warn_about_prompts
    from ovi_cli.console import RichReporter, make_progress
    from ovi_cli.distributed import cuda_device_count, device_for, launch_from_env, parse_shard, work_share
    from ovi_cli.pipeline import OviPipeline

    launch = launch_from_env()
    shard_t = parse_shard(shard)
    settings = settings_from_params(ctx)
    if recipe is not None:  # --from: the recipe's prompt and settings, the flags given on top
        from ovi_cli.commands.common import explicit_params
        from ovi_cli.png_recipe import settings_from_recipe

        if prompt is not None or prompts_file is not None:
            raise OviError("--from makes one image again from its recipe: give no PROMPT and no --prompts")
        prompt, settings = settings_from_recipe(recipe, settings, explicit_params(ctx))
        seed = settings.seed
    prompts, seeds, paths = plan_outputs(prompt, prompts_file, out, seed)
    if prompts_file is None and (shard_t or launch.distributed):
        raise OviError("--shard and torchrun split a prompt file: give --prompts FILE")
    check_gen_run(settings, paths, seeds, batch)  # every number and output file, before any model loads
    groups = batch_groups(len(prompts), batch, work_share(shard_t, launch))
    todo = [i for g in groups for i in g]
    if prompts_file is not None:
        todo = unfinished(todo, paths, settings, overwrite)
    show = not quiet and launch.leader  # one process draws progress
    progress = make_progress(not show)
    reporter = RichReporter(progress, quiet=not show)
    device = device_for(settings.device, launch, cuda_device_count())
    pipe = OviPipeline(replace(settings, device=device), reporter=reporter)
    if launch.leader:
        warn_about_prompts(model, [prompts[i] for i in todo], reporter.warn)
    mine = sum(len(g) for g in groups)
    skipped = mine - len(todo)
    if skipped and show:
        progress.console.print(f"resuming: {skipped} of {mine} prompts already done, skipped")
    todo_set = set(todo)
    batches = [idx for idx in ([i for i in g if i in todo_set] for g in groups) if idx]
    with progress:
        for idx in batches:
            reporter.new_batch(f"[{idx[0] + 1}/{len(paths)}]" if len(paths) > 1 else "")
            sidecars = pipe.generate(
                [prompts[i] for i in idx], [paths[i] for i in idx],
                seeds=[seeds[i] for i in idx], save_embedding=save_embedding,
            )
            if plot:
                from ovi_cli.plots import write_gen_plots

                write_gen_plots(sidecars, [paths[i] for i in idx], reporter.warn)
            for sc in sidecars:
                if json_out:
                    typer.echo(json.dumps(sc))
                elif not quiet:
                    files = ", ".join(sc["files"].values())
                    progress.console.print(f"text cosine {sc['text_cosine']:.4f} -> {files}")
