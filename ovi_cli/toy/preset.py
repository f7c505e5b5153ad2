"""`--model toy`: the shipped toy encoder, decoder and stats store, as one switch for `ovi gen`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ovi_cli.errors import OviError
from ovi_cli.settings import GenSettings

MODELS_DIR = Path(__file__).parent / "models"
MODEL_CHOICES = ("toy",)


def toy_paths(models_dir: Path = MODELS_DIR) -> dict[str, Path]:
    return {"encoder": models_dir / "prior", "decoder": models_dir / "decoder",
            "prior": models_dir / "toy_prior", "stats": models_dir / "stats"}


def toy_overrides(models_dir: Path = MODELS_DIR) -> dict[str, Any]:
    """GenSettings fields that `--model toy` sets (unless given explicitly on the command line)."""
    p = toy_paths(models_dir)
    return {"encoder_model": str(p["encoder"]), "decoder_model": str(p["decoder"]), "decoder": "toy",
            "stats": str(p["stats"]), "height": 64, "width": 64, "steps": 300}


def apply_model(settings: GenSettings, model: str | None, explicit: set[str] = frozenset()) -> GenSettings:
    """`settings` with the preset of `model` applied to every field not in `explicit`."""
    if model is None:
        return settings
    if model not in MODEL_CHOICES:
        raise OviError(f"unknown --model {model!r}; available: {', '.join(MODEL_CHOICES)}")
    if not (MODELS_DIR / "prior").is_dir():
        raise OviError(f"the toy models are missing from this install ({MODELS_DIR}); "
                       "train them with `ovi toy train --out DIR` and pass --encoder-model DIR/prior ...")
    # The toy models are so small that extra threads only add overhead; on a busy machine
    # (more runnable threads than cores) a multi-threaded run was measured 9x slower.
    import torch

    torch.set_num_threads(1)
    values = {k: v for k, v in toy_overrides().items() if k not in explicit}
    if "prior_model" not in explicit and settings.prior == "toy-prior" and settings.prior_model is None:
        values["prior_model"] = str(toy_paths()["prior"])
    return replace(settings, **values)
