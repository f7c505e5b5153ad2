"""The hooks an ovi plugin can implement. These docstrings are the plugin author's manual.

A plugin is a module (or object) with functions decorated by `ovi_cli.hookimpl`, listed in its
package's `pyproject.toml` under `[project.entry-points.ovi]`. Each `register_*` hook receives a
`register` callback; call it once per class you provide. Classes subclass the bases in
`ovi_cli.api` and carry a unique `name` (ovi's own names win a collision). Keep the module that
the entry point names light: import torch and other heavy modules inside methods, so that
`ovi --help` does not load them.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("ovi")
hookimpl = pluggy.HookimplMarker("ovi")


@hookspec
def register_priors(register):
    """Register `ovi_cli.api.Prior` subclasses (text -> image embedding): `register(MyPrior)`."""


@hookspec
def register_constraints(register):
    """Register `ovi_cli.api.Constraint` subclasses (penalties added to OVI's loss)."""


@hookspec
def register_decoders(register):
    """Register `ovi_cli.api.Decoder` subclasses (image embedding -> images)."""


@hookspec
def register_models(register):
    """Register `ovi_cli.api.ModelPreset` subclasses: `--model NAME` for gen, compare, build-stats."""


@hookspec
def register_benchmarks(register):
    """Register `ovi_cli.api.Benchmark` subclasses: prompt suites for `ovi bench generate NAME`."""


@hookspec
def register_scorers(register):
    """Register `ovi_cli.api.Scorer` subclasses: image scorers for `ovi bench score --scorers NAME`."""


@hookspec
def register_encoder_families(register):
    """Register `ovi_cli.api.EncoderFamily` subclasses: how a CLIP space's towers load (`--encoder-family NAME`)."""


@hookspec
def register_feature_spaces(register):
    """Register `ovi_cli.api.FeatureSpace` subclasses: image -> feature vector, for set metrics (clip, dinov2, ...)."""


@hookspec
def register_metrics(register):
    """Register `ovi_cli.api.SetMetric` subclasses: a run's features and a reference's in, named numbers out."""


@hookspec
def register_image_sources(register):
    """Register `ovi_cli.api.ImageSource` subclasses: where `ovi build-stats SOURCE` reads images or embeddings."""


@hookspec
def register_commands(cli, ui):
    """Add commands to the `ovi` Typer app: `@cli.command()` or `cli.add_typer(...)` (not ovi's own names).

    `ui` (`ovi_cli.console.UI`) gives terminal services: `ui.progress()`, `ui.reporter(progress)` (a Rich
    `Reporter` for library runs), `ui.print_table(...)`, `ui.options` (ovi's shared flag types). A hook
    may take `cli` alone.
    """
