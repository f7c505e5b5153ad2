"""What the built-in scorers share: model folders, their settings, images, the official text files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ovi_cli.api import ImageScore, ScoreItem
from ovi_cli.hub import resolve_model_dir


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
