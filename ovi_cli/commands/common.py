"""What several commands share: which flags the user gave, plugin options, settings from flags."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from ovi_cli.api import parse_option_assignments
from ovi_cli.settings import GenSettings


def explicit_params(ctx: typer.Context) -> set[str]:
    """Names of the parameters given on the command line (or by environment variable)."""
    out = set()
    for name in ctx.params:
        source = str(ctx.get_parameter_source(name))
        if source.endswith(("COMMANDLINE", "ENVIRONMENT")):
            out.add(name)
    return out


def plugin_options(option: list[str] | None, aliases: dict[tuple[str, str], Any]) -> dict[str, dict[str, Any]]:
    """`--option PLUGIN.KEY=VALUE` items, plus the alias flags that were given (`--option` wins)."""
    out: dict[str, dict[str, Any]] = parse_option_assignments(option)
    for (owner, key), value in aliases.items():
        if value is not None:
            out.setdefault(owner, {}).setdefault(key, value)
    return out


def settings_from_flags(ctx: typer.Context, model: str | None, **values: Any) -> GenSettings:
    """`GenSettings(**values)` with the model preset applied to the flags the user did not give."""
    from ovi_cli.presets import apply_model

    settings = GenSettings(**values)
    return apply_model(settings, model, explicit_params(ctx))


# `ovi gen`-style flags that are not GenSettings fields: --constraint, --option and its aliases
def _alias_values(params: dict[str, Any]) -> dict[tuple[str, str], Any]:
    prior = params.get("prior", GenSettings.prior)
    return {("nn", "every"): params.get("nn_every"), ("nn", "k"): params.get("nn_k"),
            (prior, "model"): params.get("prior_model"), ("kandinsky", "steps"): params.get("prior_steps"),
            ("kandinsky", "guidance"): params.get("prior_guidance")}


def settings_from_params(ctx: typer.Context) -> GenSettings:
    """`GenSettings` from a command that takes `ovi gen`'s flags (same parameter names), `--model` applied.

    Every parameter named like a `GenSettings` field is taken as is; `--constraint`, `--option` and
    the option aliases (`--nn-k`, `--prior-model`, ...) are gathered into `constraints` and `options`.
    """
    from dataclasses import fields

    params = dict(ctx.params)
    values = {f.name: params[f.name] for f in fields(GenSettings)
              if f.name in params and f.name not in ("constraints", "options")}
    values["constraints"] = list(params.get("constraint") or [])
    values["options"] = plugin_options(params.get("option"), _alias_values(params))
    return settings_from_flags(ctx, params.get("model"), **values)


def warn_about_prompts(model: str | None, prompts: list[str], warn: Callable[[str], None]) -> None:
    """The model preset's warnings about the prompts (e.g. words the toy vocabulary lacks), once per run."""
    from ovi_cli.presets import prompt_warnings

    for message in prompt_warnings(model, prompts):
        warn(message)
