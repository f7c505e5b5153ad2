"""`ovi toy dataset|train|eval` and `ovi eval toy`: the offline toy world's commands (docs/toy.md).

Registered through the toy plugin's `register_commands` hook; light on import (Typer only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ovi_cli import options
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
    prompts: Annotated[int, typer.Option("--prompts", help="Held-out prompts to generate (alternately single shapes "
                                         "and two-object binding prompts).")] = 24,
    steps: Annotated[int, typer.Option("--steps", help="OVI optimisation steps per prompt.")] = 300,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for toy_eval.csv, toy_eval.json and "
                                      "toy_eval_grid.png.")] = Path("outputs/toy-eval"),
    seed: Annotated[int, typer.Option(help="Seed for prompts, OVI starts and reference images.")] = 0,
    mahalanobis_weights: Annotated[str, typer.Option(
        help="Comma-separated mahalanobis weights to compare (the largest should collapse).")] = "0.003,0.03,1",
    reference: Annotated[int, typer.Option(help="Real held-out images for FID.")] = 500,
    models: Annotated[Path | None, typer.Option(help="Toy models folder (default: the shipped ones).")] = None,
    quiet: options.Quiet = False,
) -> None:
    """Compare textemb, ovi, ovi+mahalanobis, ovi+nn and the trained toy prior on held-out prompts."""
    from rich.console import Console
    from rich.table import Table

    from ovi_cli.console import err_console
    from ovi_plugins.toy.eval import COLUMNS, default_methods, format_row, run_eval
    from ovi_plugins.toy.preset import MODELS_DIR

    check_int(prompts, "--prompts", minimum=1, maximum=100_000)
    check_int(steps, "--steps", minimum=1, maximum=MAX_STEPS)
    check_int(reference, "--reference", minimum=2, maximum=1_000_000)
    check_seed(seed, count=prompts + 1)
    check_output_folder(out)
    result = run_eval(
        out, prompts=prompts, steps=steps, seed=seed, models_dir=models or MODELS_DIR,
        methods=default_methods(_weights(mahalanobis_weights)), reference_images=reference,
        log=(lambda s: None) if quiet else (lambda s: err_console.print(s, highlight=False)),
    )
    table = Table(title=f"ovi eval toy: {len(result.prompts)} held-out prompts, {steps} OVI steps")
    for col in COLUMNS:
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in result.rows:
        table.add_row(*format_row(r))
    Console(width=160).print(table)
    typer.echo(f"wrote {result.files['csv']}, {result.files['json']}, {result.files['grid']}")


def add_commands(app: typer.Typer) -> None:
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
            "--reuse-clip", help="Keep the CLIP towers already in --out (same config) and retrain the rest.")] = False,
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
            train_all(out, cfg, log=typer.echo, reuse_clip=reuse_clip)
        except ValueError as exc:
            raise OviError(str(exc)) from exc

    toy.command("eval")(eval_toy_command)
    evaluate.command("toy")(eval_toy_command)
    app.add_typer(toy, name="toy")
    app.add_typer(evaluate, name="eval")
