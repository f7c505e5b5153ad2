"""What the built-in scorers share: model folders, their settings, images, the official text files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ovi_cli.api import ImageScore, ScoreItem
from ovi_cli.hub import resolve_model_dir

MEMORY_FRACTION = 0.5  # of the device's free memory one pass may take (the estimates are upper bounds)


def vit_bytes_per_image(size: int, patch: int, hidden: int, heads: int, extra: int = 0) -> int:
    """Peak bytes one image adds to a pass through a ViT (float32, no gradients), an upper estimate:
    the attention at T = (size / patch)^2 + 1 tokens (scores, softmax and its copy: 3 x heads x T^2),
    the hidden states (16 x T x hidden: q, k, v, MLP, residuals), the pixels, and `extra` floats."""
    tokens = (size // patch) ** 2 + 1
    return 4 * (3 * heads * tokens * tokens + 16 * tokens * hidden + 3 * size * size + extra)


def images_per_pass(scorer: Any, count: int, per_image: int, size: int) -> int:
    """How many of `count` images a scorer runs through its model at once: all of them when `count x
    per_image` fits in `MEMORY_FRACTION` of the device's free memory, else fewer, with one warning per
    run (same scores: images are scored independently). A batch that fits at one resolution can need
    tens of GB at another (attention grows with the fourth power of the image size)."""
    from ovi_stats.matmul_search import free_bytes

    free = free_bytes(scorer.context.device)
    if free is None or count * per_image <= MEMORY_FRACTION * free:
        return count
    fit = max(1, int(MEMORY_FRACTION * free // per_image))
    if not getattr(scorer, "_warned_memory", False):
        scorer._warned_memory = True
        scorer.context.warn(
            f"{scorer.name}: {count} images at {size} px need about {count * per_image / 2**30:.1f} GiB, "
            f"{free / 2**30:.1f} GiB are free: scoring {fit} at a time (same scores; a smaller --batch-size "
            "avoids this estimate)")
    return fit


def score_in_parts(scorer: Any, items: list[Any], vision_config: Any, score_pass: Any) -> list[Any]:
    """`score_pass(part)` over `items` in parts that fit in memory (`images_per_pass`, the estimate of a
    ViT with `vision_config`), concatenated: for scorers that score each image independently."""
    v = vision_config
    per_image = vit_bytes_per_image(int(v.image_size), int(v.patch_size), int(v.hidden_size),
                                    int(v.num_attention_heads))
    step = images_per_pass(scorer, len(items), per_image, int(v.image_size))
    return [r for start in range(0, len(items), step) for r in score_pass(items[start:start + step])]


def model_settings(source: str, what: str, flag: str) -> dict[str, Any]:
    """`{"model_fingerprint": ...}`: what a scorer's numbers depend on about its model (not where it lies).

    Raises `ModelUnavailable` (one line) when the model is neither a folder nor in the hub cache.
    """
    from ovi_cli.bench.score import folder_fingerprint

    root = resolve_model_dir(source, what=what, flag=flag)
    return {"model_fingerprint": folder_fingerprint(root)}


def load_rgb(path: Path) -> Any:
    """A sample as an RGB PIL image (read fully, so the file is closed)."""
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def answers(scored: Sequence[tuple[ScoreItem, ImageScore]], *, key: str = "position",
            text: bool = False) -> list[dict[str, Any]]:
    """The official `vqa_result.json` rows: `question_id` = position in the sorted list (BLIP, CLIP,
    3-in-1) or the file counter (UniDet's scripts); `answer` a number, or text with 4 decimals (BLIP)."""
    rows = []
    for pos, (item, result) in enumerate(scored):
        qid = pos if key == "position" else item.index
        rows.append({"question_id": qid, "answer": f"{result.score:.4f}" if text else result.score})
    return rows
