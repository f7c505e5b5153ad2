"""`ovi toy dataset|train|eval` and `ovi eval toy`: the offline toy world's commands (docs/toy.md).

Registered through the toy plugin's `register_commands` hook, which hands over the terminal services
(`ui`: progress, reporter, tables, the shared flag types); light on import (Typer only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ovi_cli.checks import MAX_STEPS, MAX_THREADS, check_int, check_output_folder, check_seed
from ovi_cli.errors import OviError


def _weights(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise OviError(f"--mahalanobis-weights {text!r}: expected numbers separated by commas") from None
    if not values or any(not w >= 0 for w in values):
        raise OviError("--mahalanobis-weights needs at least one weight >= 0")
    return values


def eval_toy_command(
    prompts: Annotated[int | None, typer.Option(
        "--prompts", help="Only the first N prompts of each toy category (default: all, 12 single and 24 binding).",
        show_default=False)] = None,
    images_per_prompt: Annotated[int, typer.Option("--images-per-prompt", "-k", help="Images per prompt.")] = 1,
    steps: Annotated[int, typer.Option("--steps", help="OVI optimisation steps per image.")] = 300,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for one benchmark run per method and "
                                      "table.{md,csv,json,png}.")] = Path("outputs/toy-eval"),
    seed: Annotated[int, typer.Option(help="Image j of every prompt uses seed + j.")] = 42,
    mahalanobis_weights: Annotated[str, typer.Option(
        help="Comma-separated mahalanobis weights to compare (the largest should collapse).")] = "0.003,0.03,1",
    real: Annotated[bool, typer.Option("--real/--no-real", help="Add real rendered images of the prompts "
                                       "(the ceiling).")] = True,
    models: Annotated[Path | None, typer.Option(
        "--models", help="A toy models folder made by `ovi toy train --out DIR` (default: the shipped models).",
        show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """The benchmark harness's toy preset: textemb, ovi, ovi+mahalanobis, ovi+nn and the toy prior, each
    `ovi bench generate toy --model toy` + `ovi bench score --scorers oracle,clip-score`, then one table."""
    from ovi_plugins.toy.eval import default_methods, generate_runs, models_overrides, score_runs, write_table

    if prompts is not None:
        check_int(prompts, "--prompts", minimum=1, maximum=100_000)
    check_int(images_per_prompt, "--images-per-prompt", minimum=1, maximum=10_000)
    check_int(steps, "--steps", minimum=1, maximum=MAX_STEPS)
    check_seed(seed, count=images_per_prompt)
    check_output_folder(out)
    overrides = models_overrides(models)
    methods = default_methods(_weights(mahalanobis_weights))
    progress = _ui.progress(quiet)
    reporter = _ui.reporter(progress, quiet=quiet)
    with progress:  # the library's bench and score runs, reporting through the Reporter
        runs = generate_runs(out, steps=steps, images_per_prompt=images_per_prompt, seed=seed, limit=prompts,
                             methods=methods, real=real, reporter=reporter, overrides=overrides)
        score_runs(runs, reporter, overrides.get("encoder_model"))
    table = write_table(out, runs)
    _ui.print_table(table, f"ovi eval toy: {len(runs)} runs, {steps} OVI steps, "
                    f"{images_per_prompt} image(s) per prompt")
    typer.echo(f"wrote {out}/table.md, table.csv, table.json, table.png and one run folder per method")


_ui: Any = None  # the terminal services `register_commands` hands over


def add_commands(app: typer.Typer, ui: Any) -> None:
    global _ui
    _ui = ui
    toy = typer.Typer(help="The offline toy world: synthetic shapes, tiny trained models, evaluation.",
                      no_args_is_help=True)
    evaluate = typer.Typer(help="Evaluations.", no_args_is_help=True)

    @toy.command("dataset")
    def dataset_cmd(
        out: Annotated[Path, typer.Argument(help="Folder to create (must not exist or be empty).")],
        n: Annotated[int, typer.Option("--n", help="Training images.")] = 1000,
        heldout: Annotated[int | None, typer.Option(help="Held-out images (default: N/5).")] = None,
        seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    ) -> None:
        """Write synthetic shape images with captions and a held-out split of unseen colour-shape pairs."""
        from ovi_plugins.toy.dataset import write_dataset

        check_int(n, "--n", minimum=1, maximum=10_000_000)
        if heldout is not None:
            check_int(heldout, "--heldout", minimum=0, maximum=10_000_000)
        check_seed(seed)
        check_output_folder(out, "OUT")
        info = write_dataset(out, n, heldout=heldout, seed=seed)
        typer.echo(f"wrote {info['counts']['train']} training and {info['counts']['heldout']} held-out images "
                   f"to {out} (captions in metadata.jsonl)")

    @toy.command("train")
    def train_cmd(
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the trained models.")] = Path("toy-models"),
        seed: Annotated[int, typer.Option(help="Seed.")] = 0,
        tiny: Annotated[bool, typer.Option("--tiny", help="Seconds-long smoke run (barely trained models).")] = False,
        threads: Annotated[int, typer.Option(help="CPU threads (1 = bit-reproducible on one machine).")] = 1,
        reuse_clip: Annotated[bool, typer.Option(
            "--reuse-clip", help="Keep the CLIP towers already in --out (same data and CLIP settings) and "
            "retrain the rest.")] = False,
        set_: Annotated[list[str] | None, typer.Option(
            "--set", help="A training setting KEY=VALUE (repeatable; the fields of TrainConfig in "
            "plugins/toy/train.py, e.g. decoder_noise=0 or clip_temperature=0.01).", show_default=False)] = None,
    ) -> None:
        """Train the toy CLIP, decoder and prior on CPU (about 15 minutes) and write them in the hub layouts."""
        from dataclasses import replace

        from ovi_plugins.toy.train import TrainConfig, train_all

        check_int(threads, "--threads", minimum=1, maximum=MAX_THREADS)
        check_seed(seed, count=3)  # the stages seed seed, seed + 1 and seed + 2
        check_output_folder(out)
        if reuse_clip and not (out / "train.json").is_file():
            raise OviError(f"--reuse-clip: {str(out)!r} holds no earlier training run (train.json)")
        if not reuse_clip and out.exists() and any(out.iterdir()):
            raise OviError(f"--out {str(out)!r} exists and is not empty")
        cfg = replace(TrainConfig.tiny() if tiny else TrainConfig(), seed=seed, threads=threads)
        try:
            cfg = cfg.with_settings(set_ or [])
        except ValueError as exc:
            raise OviError(f"--set: {exc}") from exc
        try:
            train_all(out, cfg, log=typer.echo, reuse_clip=reuse_clip)
        except ValueError as exc:
            raise OviError(str(exc)) from exc

    toy.command("eval")(eval_toy_command)
    evaluate.command("toy")(eval_toy_command)
    app.add_typer(toy, name="toy")
    app.add_typer(evaluate, name="eval")
