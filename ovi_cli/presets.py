"""Model presets (`--model NAME`): settings a plugin bundles under one name, e.g. `toy`."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import fields, replace

from ovi_cli.errors import OviError
from ovi_cli.plugins import Registry, get_registry
from ovi_cli.settings import GenSettings


def apply_model(
    settings: GenSettings,
    name: str | None,
    explicit: Collection[str] = frozenset(),
    registry: Registry | None = None,
) -> GenSettings:
    """`settings` with the preset `name` applied to every field not in `explicit` (given by the user)."""
    if name is None:
        return settings
    preset = (registry or get_registry()).get("model", name)()
    known = {f.name for f in fields(GenSettings)}
    values = preset.overrides()
    unknown = sorted(set(values) - known)
    if unknown:
        raise OviError(f"model preset {name!r} sets unknown settings: {', '.join(unknown)}")
    if "schedule" in explicit:  # a preset's step count is for the default schedule; --schedule brings its own
        values.pop("steps", None)
    preset.activate()
    return replace(settings, **{k: v for k, v in values.items() if k not in explicit})


def prompt_warnings(name: str | None, prompts: Sequence[str], registry: Registry | None = None) -> list[str]:
    """The preset `name`'s warnings about `prompts` (none without a preset), e.g. unknown words."""
    if name is None:
        return []
    return list((registry or get_registry()).get("model", name)().check_prompts(list(prompts)))
