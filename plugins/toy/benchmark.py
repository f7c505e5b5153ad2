"""The toy world's benchmark `toy` (`ovi bench generate toy --model toy`): held-out toy prompts.

Every prompt is built on colour-shape pairs that no training image of the toy world shows
(`dataset.heldout_prompts`, seed 0: the prompts `ovi eval toy` uses). Two categories:
- `single`: one shape, "a purple circle", "a small purple circle" (all 12);
- `binding`: two shapes of different colours, "a red star and a green circle" (attribute binding; 24).
"""

from __future__ import annotations

from ovi_cli.api import Benchmark

BINDING_PROMPTS = 24
SINGLE_PROMPTS = 12  # every single-shape held-out prompt there is


def toy_prompts(category: str) -> list[str]:
    """The prompts of a toy category, in the order `heldout_prompts` gives them."""
    from ovi_plugins.toy.dataset import heldout_prompts, parse_prompt

    prompts = heldout_prompts(SINGLE_PROMPTS + BINDING_PROMPTS)
    wanted = 1 if category == "single" else 2
    return [p for p in prompts if len(parse_prompt(p)) == wanted]


class ToyBenchmark(Benchmark):
    """Held-out toy prompts: single shapes and two-object attribute binding (offline, --model toy)."""

    name = "toy"
    description = "toy world held-out prompts: single (12) and binding (24); offline with --model toy"
    categories = ("single", "binding")
    score_preset = "toy"  # clip-score with the toy CLIP, offline

    def prompts(self, category: str) -> list[str]:
        return toy_prompts(category)

    def source(self, category: str) -> str:
        return f"toy held-out prompts ({category})"
