"""`ovi bench fidelity RUN... --reference REF`: Frechet distance, KID, precision/recall/density/coverage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ovi_cli import options
from ovi_cli.commands.common import plugin_options
from ovi_cli.errors import OviError

FIDELITY = "Fidelity"


def _names(text: str, flag: str) -> list[str]:
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise OviError(f"{flag} needs at least one name")
    return names


def fidelity(
    runs: Annotated[list[Path], typer.Argument(help="Benchmark run folders (RUN/<category>/samples/*.png).")],
    reference: Annotated[str, typer.Option(
        "--reference", "-r", rich_help_panel=FIDELITY, show_default=False,
        help="Real images: a folder of images, or an ovi statistics store (path or name; its stored embeddings "
        "and moments serve directly, nothing is re-encoded; --features clip only).")],
    features: Annotated[str, typer.Option(
        rich_help_panel=FIDELITY,
        help="Comma-separated feature spaces: clip (the runs' own CLIP image tower), dinov2, inception.")] = "clip",
    metrics: Annotated[str, typer.Option(
        rich_help_panel=FIDELITY,
        help="Comma-separated set metrics: fd (Frechet distance, bootstrap interval), kid, prdc "
        "(precision, recall, density, coverage).")] = "fd,kid,prdc",
    nearest_k: Annotated[int | None, typer.Option(
        rich_help_panel=FIDELITY, show_default=False,
        help="k nearest neighbours of precision/recall/density/coverage (default 5). Alias of --option prdc.k=K.")]
        = None,
    bootstrap: Annotated[int | None, typer.Option(
        rich_help_panel=FIDELITY, show_default=False,
        help="Bootstrap resamples for the FD interval (default 100; 0: none). Alias of --option fd.bootstrap=B.")]
        = None,
    model: Annotated[str | None, typer.Option(
        "--model", rich_help_panel=options.MODELS, show_default=False,
        help="Model preset whose CLIP the clip space uses, e.g. `toy` (default: the runs' own, from bench.json).")]
        = None,
    encoder_model: Annotated[str | None, typer.Option(
        rich_help_panel=options.MODELS, show_default=False,
        help="CLIP for the clip space: hub id or folder in the kandinsky-2-2-prior layout (default: bench.json's).")]
        = None,
    dinov2_model: Annotated[str | None, typer.Option(
        rich_help_panel=options.MODELS, show_default=False,
        help="DINOv2 for the dinov2 space (default facebook/dinov2-base). Alias of --option dinov2.model=M.")] = None,
    inception_weights: Annotated[str | None, typer.Option(
        rich_help_panel=options.MODELS, show_default=False,
        help="torch-fidelity's InceptionV3 weights file for the inception space. "
        "Alias of --option inception.weights=FILE.")] = None,
    option: Annotated[list[str] | None, typer.Option(
        "--option", "-O", rich_help_panel=options.PLUGIN_OPTIONS, metavar="PLUGIN.KEY=VALUE",
        help="A feature-space or metric option, repeatable: kid.subsets=50, fd.seed=1 ... "
        "(`ovi plugins --options` lists them).")] = None,
    no_categories: Annotated[bool, typer.Option(
        "--no-categories", rich_help_panel=FIDELITY, help="Only the whole run, not each category.")] = False,
    cache: Annotated[Path | None, typer.Option(
        rich_help_panel=options.RUN, show_default=False,
        help="Feature cache folder (default $OVI_HOME/cache/features): features by image content hash and space.")]
        = None,
    device: options.Device = "auto",
    batch_size: Annotated[int, typer.Option(rich_help_panel=options.RUN, help="Images per batch.")] = 32,
    quiet: options.Quiet = False,
    as_json: options.Json = False,
) -> None:
    """How real a run's images look: per run and category, against real images (writes RUN/fidelity.json)."""
    from ovi_cli.bench.fidelity import ALL, FidelityRequest, bench_fidelity
    from ovi_cli.console import RichReporter, make_progress

    if model is not None and encoder_model is None:
        from ovi_cli.presets import apply_model
        from ovi_cli.settings import GenSettings

        encoder_model = apply_model(GenSettings(), model).encoder_model
    request = FidelityRequest(
        reference=reference, features=_names(features, "--features"), metrics=_names(metrics, "--metrics"),
        options=plugin_options(option, {
            ("prdc", "k"): nearest_k, ("fd", "bootstrap"): bootstrap, ("dinov2", "model"): dinov2_model,
            ("inception", "weights"): inception_weights}),
        encoder_model=encoder_model, batch_size=batch_size, device=device, cache=cache,
        per_category=not no_categories)
    progress = make_progress(quiet)
    with progress:
        docs = bench_fidelity(runs, request, reporter=RichReporter(progress, quiet))
    if as_json:
        typer.echo(json.dumps(docs, indent=2))
        return
    for run, doc in zip(runs, docs):
        for space, entry in doc["spaces"].items():
            if space not in request.features:
                continue
            parts = []
            for key, v in entry[ALL].items():
                iv = f" [{v['low']:.4g}, {v['high']:.4g}]" if v.get("low") is not None else ""
                parts.append(f"{key} {v['value']:.4g}{iv}")
            n = next(iter(entry[ALL].values()), {})
            typer.echo(f"{doc['name']} ({space}, n={n.get('n')}, reference n={n.get('n_ref')}): " + ", ".join(parts))
        typer.echo(f"wrote {run / 'fidelity.json'}")
