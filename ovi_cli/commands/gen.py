"""`ovi gen`: one prompt or a prompt file -> prior -> image embedding -> decoder -> PNG + JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ovi_cli import options
from ovi_cli.commands.common import plugin_options, settings_from_flags, warn_about_prompts
from ovi_cli.errors import OviError
from ovi_cli.settings import GenSettings


def plan_outputs(
    prompt: str | None, prompts_file: Path | None, out: Path | None, seed: int
) -> tuple[list[str], list[int], list[Path]]:
    """(prompts, seeds, image paths) for one prompt or a prompt file."""
    from ovi_cli.outputs import default_output_path, slugify
    from ovi_cli.prompts import prompts_from

    prompts = prompts_from(prompt, prompts_file)
    if prompt is not None:
        path = out or default_output_path(prompt)
        if path.suffix.lower() != ".png":
            if path.suffix.lower() in (".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"):
                raise OviError(f"--out {str(path)!r}: ovi writes PNG images; name the file .png")
            path = path.with_suffix(path.suffix + ".png") if path.suffix else path.with_suffix(".png")
        return prompts, [seed], [path]
    assert prompts_file is not None
    folder = out or Path("outputs") / slugify(prompts_file.stem)
    if folder.suffix.lower() == ".png":
        raise OviError("with --prompts, --out is a folder, not a .png file")
    paths = [folder / f"{i:04d}-{slugify(p)}.png" for i, p in enumerate(prompts)]
    return prompts, [seed + i for i in range(len(prompts))], paths


def gen(
    ctx: typer.Context,
    prompt: Annotated[str | None, typer.Argument(help="The text to generate an image from (in quotes).")] = None,
    prompts_file: Annotated[Path | None, typer.Option(
        "--prompts", rich_help_panel=options.OUTPUT,
        help="A file with one prompt per line; --out is then a folder and files are named "
        "NNNN-<slug>.png/.json. Finished prompts are skipped when re-run (resume).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", rich_help_panel=options.OUTPUT,
        help="Output image path (.png), its sidecar .json beside it. Default: outputs/<time>-<slug>.png")] = None,
    model: options.Model = None,
    prior: options.Prior = GenSettings.prior,
    decoder: options.Decoder = GenSettings.decoder,
    encoder_model: options.EncoderModel = GenSettings.encoder_model,
    decoder_model: options.DecoderModel = GenSettings.decoder_model,
    tokens: options.Tokens = GenSettings.tokens,
    steps: options.Steps = GenSettings.steps,
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
    prior_model: Annotated[str | None, typer.Option(
        rich_help_panel=options.PLUGIN_OPTIONS, show_default=False,
        help="Alias of --option PRIOR.model=M for the chosen --prior (eclipse, kandinsky, toy-prior).")] = None,
    prior_steps: options.PriorSteps = None,
    prior_guidance: options.PriorGuidance = None,
    negative: options.Negative = GenSettings.negative,
    height: options.Height = GenSettings.height,
    width: options.Width = GenSettings.width,
    decoder_steps: options.DecoderSteps = GenSettings.decoder_steps,
    guidance_scale: options.GuidanceScale = GenSettings.guidance_scale,
    batch: Annotated[int, typer.Option(rich_help_panel=options.RUN,
                                       help="Prompts optimised together in one batch.")] = 1,
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
) -> None:
    """Generate an image from a prompt: OVI (or another prior) + the Kandinsky 2.2 decoder.

    Try it offline in seconds: ovi gen "a red circle" --model toy
    """
    from ovi_cli.console import RichReporter, make_progress
    from ovi_cli.pipeline import OviPipeline

    if batch < 1:
        raise OviError("--batch must be >= 1")
    prompts, seeds, paths = plan_outputs(prompt, prompts_file, out, seed)
    settings = settings_from_flags(
        ctx, model,
        prior=prior, decoder=decoder, encoder_model=encoder_model, decoder_model=decoder_model,
        tokens=tokens, steps=steps, lr=lr, weight_decay=weight_decay, patience=patience,
        min_delta=min_delta, seed=seed, constraints=list(constraint or []), stats=stats,
        negative=negative, height=height, width=width, decoder_steps=decoder_steps,
        guidance_scale=guidance_scale, device=device, dtype=dtype, compile=compile,
        options=plugin_options(option, {
            ("nn", "every"): nn_every, ("nn", "k"): nn_k, (prior, "model"): prior_model,
            ("kandinsky", "steps"): prior_steps, ("kandinsky", "guidance"): prior_guidance,
        }),
    )
    todo = [i for i, p in enumerate(paths) if not (prompts_file and p.with_suffix(".json").exists())]
    progress = make_progress(quiet)
    reporter = RichReporter(progress, quiet=quiet)
    pipe = OviPipeline(settings, reporter=reporter)
    warn_about_prompts(model, [prompts[i] for i in todo], reporter.warn)
    skipped = len(paths) - len(todo)
    if skipped and not quiet:
        progress.console.print(f"resuming: {skipped} of {len(paths)} prompts already done, skipped")
    with progress:
        for start in range(0, len(todo), batch):
            idx = todo[start : start + batch]
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
