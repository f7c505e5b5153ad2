"""`--model toy`: the shipped toy encoder, decoder, prior and stats store, as one model preset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ovi_cli.api import ModelPreset
from ovi_cli.errors import OviError

MODELS_DIR = Path(__file__).parent / "models"


def toy_paths(models_dir: Path = MODELS_DIR) -> dict[str, Path]:
    return {"encoder": models_dir / "prior", "decoder": models_dir / "decoder",
            "prior": models_dir / "toy_prior", "stats": models_dir / "stats"}


class ToyModels(ModelPreset):
    """The toy world: tiny CLIP towers, a conv decoder and a stats store, shipped in the package."""

    name = "toy"
    description = ("the shipped toy world: tiny CLIP, decoder and stats store (offline, seconds on a CPU; "
                   f"encoder folder {toy_paths()['encoder']})")
    # ECLIPSE and Kandinsky's prior need hub models: the toy world compares what it ships
    compare_priors = "textemb,ovi,ovi+nn,toy-prior"

    def overrides(self) -> dict[str, Any]:
        if not (MODELS_DIR / "prior").is_dir():
            raise OviError(f"the toy models are missing from this install ({MODELS_DIR}); "
                           "train them with `ovi toy train --out DIR` and pass --encoder-model DIR/prior ...")
        p = toy_paths()
        return {"encoder_model": str(p["encoder"]), "decoder_model": str(p["decoder"]), "decoder": "toy",
                "stats": str(p["stats"]), "height": 64, "width": 64, "steps": 300}

    def check_prompts(self, prompts: list[str]) -> list[str]:
        """One warning naming the words the toy vocabulary lacks (the toy CLIP spells them letter by letter)."""
        from ovi_plugins.toy.tokenizer import unknown_words, vocabulary_summary

        words = unknown_words(prompts)
        if not words:
            return []
        shown = ", ".join(repr(w) for w in words[:8]) + (f" and {len(words) - 8} more" if len(words) > 8 else "")
        return [f"the toy world does not know {shown}: its CLIP reads only a small vocabulary, so the image "
                f"will not show them ({vocabulary_summary()}; e.g. \"a small red star on the left\")"]

    def activate(self) -> None:
        # The toy models are so small that extra threads only add overhead; on a busy machine
        # (more runnable threads than cores) a multi-threaded run was measured 9x slower.
        import torch

        torch.set_num_threads(1)
