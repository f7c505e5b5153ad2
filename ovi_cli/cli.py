"""The `ovi` command line: thin over `ovi_cli.pipeline` and `ovi_stats`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ovi_cli import __version__, options
from ovi_cli.console import RichReporter, error_line, make_progress
from ovi_cli.errors import OviError
from ovi_cli.settings import DEFAULT_DECODER_MODEL, GenSettings

app = typer.Typer(
    name="ovi",
    help="Text-to-image with Kandinsky 2.2 and no trained prior: Optimization-based Visual "
    "Inversion (OVI).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# Typer may vendor its own click: take the exception classes from Typer's own hierarchy.
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ovi {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Text-to-image with Kandinsky 2.2 and no trained prior (OVI)."""


def read_prompt_file(path: Path) -> list[str]:
    """One prompt per line; blank lines and lines starting with `#` are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise OviError(f"cannot read prompt file {str(path)!r}: {exc.__class__.__name__}") from exc
    prompts = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not prompts:
        raise OviError(f"prompt file {str(path)!r} holds no prompt")
    return prompts


def prompts_from(prompt: str | None, prompts_file: Path | None) -> list[str]:
    """The prompts of a command that takes a PROMPT or `--prompts FILE` (exactly one of them)."""
    if (prompt is None) == (prompts_file is None):
        raise OviError("give a PROMPT or --prompts FILE (not both)")
    if prompt is not None:
        if not prompt.strip():
            raise OviError("empty prompt: give some text to generate from")
        return [prompt]
    assert prompts_file is not None
    return read_prompt_file(prompts_file)


def _gen_plan(prompt: str | None, prompts_file: Path | None, out: Path | None, seed: int):
    """(prompts, seeds, output paths) for one prompt or a prompt file."""
    from ovi_cli.outputs import default_output_path, slugify

    prompts = prompts_from(prompt, prompts_file)
    if prompt is not None:
        path = out or default_output_path(prompt)
        if path.suffix.lower() != ".png":
            path = path.with_suffix(path.suffix + ".png") if path.suffix else path.with_suffix(".png")
        return prompts, [seed], [path]
    assert prompts_file is not None
    folder = out or Path("outputs") / slugify(prompts_file.stem)
    if folder.suffix.lower() == ".png":
        raise OviError("with --prompts, --out is a folder, not a .png file")
    paths = [folder / f"{i:04d}-{slugify(p)}.png" for i, p in enumerate(prompts)]
    return prompts, [seed + i for i in range(len(prompts))], paths


@app.command()
def gen(
    ctx: typer.Context,
    prompt: Annotated[str | None, typer.Argument(help="The text to generate an image from.")] = None,
    prompts_file: Annotated[Path | None, typer.Option(
        "--prompts", help="A file with one prompt per line; --out is then a folder and files are "
        "named NNNN-<slug>.png/.json. Finished prompts are skipped when re-run (resume).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Output image path (.png); sidecar .json and .safetensors beside it. "
        "Default: outputs/<time>-<slug>.png")] = None,
    prior: Annotated[str, typer.Option(help="Prior plugin: ovi, textemb, ... (see `ovi plugins`).")] = "ovi",
    decoder: Annotated[str, typer.Option(help="Decoder plugin: kandinsky22, or embeds (no image).")] = "kandinsky22",
    encoder_model: options.EncoderModel = GenSettings.encoder_model,
    model: Annotated[str | None, typer.Option(
        help="Model preset: `toy` = the shipped toy-world encoder, decoder and stats store (offline, "
        "seconds on a CPU); flags given explicitly still win.")] = None,
    decoder_model: options.DecoderModel = DEFAULT_DECODER_MODEL,
    tokens: options.Tokens = GenSettings.tokens,
    steps: options.Steps = GenSettings.steps,
    schedule: options.Schedule = GenSettings.schedule,
    lr: options.Lr = GenSettings.lr,
    weight_decay: options.WeightDecay = GenSettings.weight_decay,
    patience: Annotated[int, typer.Option(
        help="Early stopping: stop a prompt after this many steps without the objective improving "
        "by --min-delta, checked every 10 steps (0 = run all --steps, the paper's setting; "
        "faster: --patience 50 --min-delta 1e-3).")] = 0,
    min_delta: Annotated[float, typer.Option(help="Smallest improvement that resets --patience.")] = 1e-4,
    seed: Annotated[int, typer.Option(help="Seed for the pseudo-tokens and the decoder noise "
                                      "(with --prompts, line i uses seed + i).")] = 0,
    constraint: Annotated[list[str] | None, typer.Option(
        "--constraint", "-c", help="OVI constraint NAME[:WEIGHT], repeatable (see `ovi plugins`).")] = None,
    stats: Annotated[str | None, typer.Option(
        help="Statistics store (name or folder) for constraints; default: the newest one built "
        "with the same encoder.")] = None,
    nn_every: options.NnEvery = 1,
    nn_k: options.NnK = 1,
    prior_model: Annotated[str | None, typer.Option(
        help="Model for the eclipse/kandinsky priors: hub id or folder (default: their hub id).")] = None,
    prior_steps: options.PriorSteps = 25,
    prior_guidance: options.PriorGuidance = 4.0,
    negative: options.Negative = GenSettings.negative,
    height: options.Height = GenSettings.height,
    width: options.Width = GenSettings.width,
    decoder_steps: options.DecoderSteps = GenSettings.decoder_steps,
    guidance_scale: options.GuidanceScale = GenSettings.guidance_scale,
    batch: Annotated[int, typer.Option(help="Prompts optimised together in one batch.")] = 1,
    device: options.Device = GenSettings.device,
    dtype: options.Dtype = GenSettings.dtype,
    compile: Annotated[bool, typer.Option(
        "--compile", help="torch.compile the OVI step where it works (falls back with a message).")] = False,
    save_embedding: Annotated[bool, typer.Option(
        "--save-embedding", help="Also write PATH.safetensors (image_embeds, negative_image_embeds).")] = False,
    plot: Annotated[bool, typer.Option(
        "--plot", help="Also write PATH.plot.png (cosine over OVI steps, constraint terms) and "
        "PATH.history.csv (the raw values).")] = False,
    quiet: options.Quiet = False,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Print the sidecar JSON to stdout (one line per prompt).")] = False,
) -> None:
    """Generate an image from a prompt: OVI (or another prior) + the Kandinsky 2.2 decoder."""
    from ovi_cli.pipeline import OviPipeline

    if batch < 1:
        raise OviError("--batch must be >= 1")
    prompts, seeds, paths = _gen_plan(prompt, prompts_file, out, seed)
    settings = GenSettings(
        prior=prior, decoder=decoder, encoder_model=encoder_model, decoder_model=decoder_model,
        tokens=tokens, steps=steps, schedule=schedule, lr=lr, weight_decay=weight_decay, patience=patience,
        min_delta=min_delta, seed=seed, constraints=list(constraint or []), stats=stats,
        negative=negative, height=height, width=width, decoder_steps=decoder_steps,
        guidance_scale=guidance_scale, device=device, dtype=dtype, compile=compile,
        constraint_options={"nn_every": nn_every, "nn_k": nn_k},
        prior_model=prior_model,
        prior_options={"steps": prior_steps, "guidance_scale": prior_guidance},
    )
    if model is not None:
        from ovi_cli.toy.preset import apply_model

        explicit = {k for k in ctx.params if str(ctx.get_parameter_source(k)).endswith("COMMANDLINE")}
        settings = apply_model(settings, model, explicit)
    todo = [i for i, p in enumerate(paths) if not (prompts_file and p.with_suffix(".json").exists())]
    progress = make_progress(quiet)
    reporter = RichReporter(progress, quiet=quiet)
    pipe = OviPipeline(settings, reporter=reporter)
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


@app.command("plugins")
def plugins_cmd(
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List loaded plugins: what each registers, from which package and version."""
    from rich.console import Console
    from rich.table import Table

    from ovi_cli.plugins import KINDS, get_registry

    reg = get_registry()
    rows = [
        {"name": e.name, "kind": e.kind, "plugin": e.plugin, "package": e.package,
         "version": e.version, "description": getattr(e.cls, "description", "")}
        for kind in KINDS for e in sorted(reg.entries[kind].values(), key=lambda e: e.name)
    ]
    failures = [f.__dict__ for f in reg.failures]
    if json_out:
        typer.echo(json.dumps({"plugins": rows, "failures": failures}, indent=2))
        return
    table = Table(title="ovi plugins")
    for col in ("name", "kind", "package", "version", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["kind"], r["package"], r["version"], r["description"])
    console = Console()
    console.print(table)
    for f in reg.failures:
        console.print(f"[red]failed to load[/red] plugin {f.plugin!r} from {f.package} "
                      f"{f.version}: {f.error}", highlight=False)


def _register_plugin_commands() -> None:
    from ovi_cli.plugins import get_registry

    reg = get_registry()
    if reg.manager is not None:
        try:
            reg.manager.hook.register_commands(cli=app)
        except Exception as exc:  # a broken plugin command must not break the CLI
            error_line(f"a plugin failed to add its commands: {exc}")


def quiet_libraries() -> None:
    """transformers/diffusers log and draw their own bars; ovi shows its own progress instead."""
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import diffusers.utils.logging as dlog
        import transformers.utils.logging as tlog

        for log in (tlog, dlog):
            log.set_verbosity_error()
            log.disable_progress_bar()
    except Exception:  # pragma: no cover - logging tweaks must never break the CLI
        pass


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry: user errors become one line on stderr and a non-zero exit."""
    quiet_libraries()
    _register_plugin_commands()
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="ovi", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except _UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `ovi` alone: Typer has printed the help
            sys.exit(0)
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        error_line(exc.format_message().replace("\n", " ") + hint)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        error_line("interrupted; files of unfinished results were not written")
        sys.exit(130)
    except OviError as exc:
        error_line(str(exc))
        sys.exit(exc.exit_code)
    except _ClickException as exc:
        error_line(exc.format_message())
        sys.exit(exc.exit_code)
    if isinstance(rv, int) and rv != 0:
        if rv == 130:  # Typer turns Ctrl-C into Exit(130) before our except clause sees it
            error_line("interrupted; files of unfinished results were not written")
        sys.exit(rv)
    return rv


from ovi_cli import commands_compare, commands_stats  # noqa: E402  (compare; build-stats and stats)

commands_stats.add_commands(app)
commands_compare.add_commands(app)

from ovi_cli import commands_toy  # noqa: E402  (toy dataset/train/eval, eval toy)

commands_toy.add_commands(app)
