"""The recipe inside every PNG ovi writes, and the settings it gives back (`ovi gen --from`).

Two text chunks ride in the image:

- `ovi` (iTXt, compressed): the recipe as JSON: prompt, seed, prior, decoder, constraints, every
  setting, resolved plugin options, model ids and fingerprints, device, dtype and package
  versions (the sidecar without what changes from run to run: timings, file paths, the OVI
  history). Written with sorted keys, so the same run gives the same bytes.
- `parameters` (tEXt, iTXt when not Latin-1): the same in the form AUTOMATIC1111's web UI
  writes and reads ("prompt", then "Steps: 50, CFG scale: 4.0, Seed: 0, Size: 512x512, ...").

`read_recipe(path)` reads a PNG's `ovi` chunk or a sidecar `.json`; `settings_from_recipe`
turns it into `(prompt, GenSettings)` with the flags the user gave on top. Light: no torch.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import fields
from pathlib import Path
from typing import IO, Any

from ovi_cli.errors import OviError
from ovi_cli.settings import GenSettings

RECIPE_FORMAT = "ovi-recipe/1"
CHUNK = "ovi"  # the iTXt keyword of the recipe
PARAMETERS = "parameters"  # AUTOMATIC1111's keyword
VOLATILE = ("timings", "files", "history")  # sidecar keys that are not part of the recipe


def recipe_of(sidecar: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The recipe of one image from its sidecar: everything but timings, file paths and the history.

    `settings.seed` is this image's own seed (with `--prompts`, line i used seed + i), so that the
    recipe regenerates this one image; `extra` adds facts (e.g. a bench image's `decoder_seed`).
    """
    out = {k: v for k, v in sidecar.items() if k not in VOLATILE}
    if isinstance(out.get("settings"), dict) and "seed" in out:
        out["settings"] = {**out["settings"], "seed": out["seed"]}
    return {"format": RECIPE_FORMAT, **out, **extra}


def a1111_parameters(recipe: dict[str, Any]) -> str:
    """The recipe as AUTOMATIC1111 writes `parameters`: the prompt, then one line of `Key: value` pairs."""
    s = recipe.get("settings") or {}
    decoding = recipe.get("decoding") or {}
    pairs: list[tuple[str, Any]] = []
    if decoding:
        pairs += [("Steps", decoding.get("steps")), ("CFG scale", decoding.get("guidance_scale"))]
    pairs += [("Seed", recipe.get("seed"))]
    if decoding.get("width") is not None:
        pairs += [("Size", f"{decoding.get('width')}x{decoding.get('height')}")]
    pairs += [("Model", s.get("decoder_model")), ("Decoder", recipe.get("decoder")), ("Prior", recipe.get("prior"))]
    if recipe.get("prior") == "ovi":
        pairs += [("OVI steps", s.get("steps")), ("OVI tokens", s.get("tokens")), ("OVI lr", s.get("lr")),
                  ("OVI schedule", s.get("schedule") if isinstance(s.get("schedule"), str) else "custom")]
    constraints = recipe.get("constraints") or []
    if constraints:
        pairs += [("Constraints", " ".join(f"{c['name']}:{c['weight']:g}" for c in constraints))]
    if s.get("stats"):
        pairs += [("Stats", s.get("stats"))]
    pairs += [("Encoder", s.get("encoder_model")), ("Encoder family", s.get("encoder_family")),
              ("Negative", recipe.get("negative")),
              ("Version", f"ovi {(recipe.get('versions') or {}).get('ovi', '?')}")]

    def value(v: Any) -> str:
        text = str(v)
        return json.dumps(text) if any(c in text for c in ",:\n\"") else text

    line = ", ".join(f"{k}: {value(v)}" for k, v in pairs if v is not None)
    return f"{recipe.get('prompt', '')}\n{line}"


def png_info(recipe: dict[str, Any]) -> Any:
    """A `PIL.PngImagePlugin.PngInfo` with the `ovi` and `parameters` chunks."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_itxt(CHUNK, json.dumps(recipe, sort_keys=True, ensure_ascii=False, allow_nan=False), zip=True)
    info.add_text(PARAMETERS, a1111_parameters(recipe))
    return info


def write_png(target: str | Path | IO[bytes], image: Any, sidecar: dict[str, Any], **extra: Any) -> None:
    """Save PIL `image` as PNG to a path or an open binary handle, its recipe inside."""
    image.save(target, format="PNG", pnginfo=png_info(recipe_of(sidecar, **extra)))


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The recipe of a PNG ovi wrote (its `ovi` chunk) or of a sidecar `.json` (one-line errors)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise OviError(f"--from {str(path)!r}: no such file")
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise OviError(f"--from {str(path)!r}: not a readable JSON sidecar ({exc})") from None
        if not isinstance(data, dict) or "prompt" not in data:
            raise OviError(f"--from {str(path)!r}: not an ovi sidecar (no prompt)")
        return recipe_of(data)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            text = dict(getattr(im, "text", None) or im.info).get(CHUNK)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise OviError(f"--from {str(path)!r}: not a readable image ({type(exc).__name__})") from None
    if not text:
        raise OviError(f"--from {str(path)!r}: the image carries no ovi recipe (it was not written by ovi, or its "
                       "text chunks were stripped); use its .json sidecar")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise OviError(f"--from {str(path)!r}: its ovi recipe is not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
        raise OviError(f"--from {str(path)!r}: its ovi recipe has no settings")
    return data


# flags that are not GenSettings fields but change one: --constraint, --option and its aliases
_CONSTRAINT_FLAGS = {"constraint"}
_OPTION_FLAGS = {"option", "nn_every", "nn_k", "prior_model", "prior_steps", "prior_guidance"}


def settings_from_recipe(
    source: str | Path,
    flags: GenSettings,
    explicit: Collection[str] = frozenset(),
    *,
    registry: Any = None,
) -> tuple[str, GenSettings]:
    """`(prompt, settings)` that make the image `source` (PNG or sidecar) again.

    The recipe's settings, with the flags named in `explicit` (given on the command line) taken
    from `flags` instead: `--seed 7`, `-c nn:0.3` (replaces the constraints), `--option` (merged
    per plugin). A plugin or a local model folder the recipe names that is not here is one line.
    """
    from ovi_cli.plugins import get_registry
    from ovi_cli.schedule import Schedule

    recipe = read_recipe(source)
    where = f"the recipe in {str(source)!r}"
    values = dict(recipe["settings"])
    known = {f.name for f in fields(GenSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        made_by = (recipe.get("versions") or {}).get("ovi", "?")
        raise OviError(f"{where} has settings this ovi does not know: {', '.join(unknown)} (written by ovi {made_by})")
    if isinstance(values.get("schedule"), dict):
        sched = dict(values["schedule"])
        sched["betas"] = tuple(sched.get("betas", (0.9, 0.999)))
        values["schedule"] = Schedule(**sched)
    given = set(explicit)
    for name in known & given:
        values[name] = getattr(flags, name)
    if given & _CONSTRAINT_FLAGS:
        values["constraints"] = list(flags.constraints)
    if given & _OPTION_FLAGS:
        merged = {k: dict(v) for k, v in (values.get("options") or {}).items()}
        for owner, opts in flags.options.items():
            merged.setdefault(owner, {}).update(opts)
        values["options"] = merged
    settings = GenSettings(**values)
    _check_names(settings, where, registry or get_registry())
    _check_local_models(settings, where)
    return str(recipe.get("prompt", "")), settings


def _check_names(settings: GenSettings, where: str, registry: Any) -> None:
    from ovi_cli.api import ConstraintSpec

    wanted = [("prior", settings.prior), ("decoder", settings.decoder),
              ("encoder_family", settings.encoder_family)]
    wanted += [("constraint", ConstraintSpec.parse(c).name) for c in settings.constraints]
    for kind, name in wanted:
        if name not in registry.entries[kind]:
            label = kind.replace("_", " ")
            raise OviError(f"{where} names {label} {name!r}, which is not installed here (installed: "
                           f"{', '.join(registry.names(kind)) or 'none'}; see `ovi plugins`)")


def _check_local_models(settings: GenSettings, where: str) -> None:
    """A model or store the recipe names by a local path that is not on this machine."""
    for what, flag, value in (("encoder model", "--encoder-model", settings.encoder_model),
                              ("decoder model", "--decoder-model", settings.decoder_model),
                              ("statistics store", "--stats", settings.stats)):
        if not value:
            continue
        looks_local = value.startswith(("/", ".", "~")) or value.count("/") > 1  # a hub id has one slash
        if looks_local and not Path(value).expanduser().exists():
            raise OviError(f"{where} names {what} {value!r}, which is not on this machine; pass {flag} to use "
                           "another")
