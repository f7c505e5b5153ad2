"""`3-in-1`: T2I-CompBench's score for the complex category (`3_in_1_eval/3_in_1.py`).

It combines, per image, BLIP-VQA (attribute binding), the 2D spatial detector score and CLIPScore
(action), all three computed on the complex prompts in the official complex mode (spatial objects
around the preposition, CLIP without adjectives): (spatial + attribute) / 2 for the prompts of
`complex_val_spatial.txt`, (action + attribute) / 2 for those of `complex_val_action.txt`, the mean of
the three for the others (`complex_val_spatialaction.txt`, and any prompt in no list).
"""

from __future__ import annotations

from typing import Any

from ovi_cli.api import ImageScore, ScoreItem, Scorer
from ovi_plugins.scorers.common import answers, mean
from ovi_plugins.scorers.rules import complex_kind, three_in_one


class ThreeInOne(Scorer):
    name = "3-in-1"
    description = "3-in-1 (complex): BLIP-VQA, detector and CLIPScore combined by the prompt's kind of relation"
    categories = ("complex",)
    requires = ("blip-vqa", "detector", "clip-score")

    def settings(self) -> dict[str, Any]:
        return {"rule": "T2I-CompBench 3_in_1.py", "lists": "complex_val_{spatial,action,spatialaction}.txt"}

    def score(self, items: list[ScoreItem], inputs: dict[str, list[ImageScore]]) -> list[ImageScore]:
        out = []
        for k, it in enumerate(items):
            kind = complex_kind(it.prompt)
            parts = {"attribute": inputs["blip-vqa"][k].score, "spatial": inputs["detector"][k].score,
                     "action": inputs["clip-score"][k].score}
            out.append(ImageScore(three_in_one(kind, **parts), {"kind": kind, **parts}))
        return out

    def official_files(self, category: str, scored: list[tuple[ScoreItem, ImageScore]]) -> dict[str, Any]:
        if not scored:
            return {}
        return {"annotation_3_in_1/vqa_result.json": answers(scored),
                "annotation_3_in_1/vqa_score.txt": f"score avg:{mean([s.score for _, s in scored])}"}
