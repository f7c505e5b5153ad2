"""`oracle`: the toy world's CLIP-free judge as a benchmark scorer (`ovi bench score RUN --scorers oracle`).

Per image: the fraction of the prompt's (colour, shape) objects that `oracle.judge` finds with
the right colour AND shape in the same blob (attribute binding); the details keep whether the
image shows exactly those objects and the fraction of the asked colours present. It plays the
role BLIP-VQA plays in T2I-CompBench, without a learned model. Light: numpy and PIL load on use.
"""

from __future__ import annotations

from typing import Any

from ovi_cli.api import ImageScore, ScoreItem, Scorer


class OracleScorer(Scorer):
    name = "oracle"
    description = "toy world: fraction of the prompt's coloured shapes found, colour and shape bound (no CLIP)"
    benchmarks = ("toy",)

    def settings(self) -> dict[str, Any]:
        from ovi_plugins.toy import oracle

        return {"judge": "toy oracle: object accuracy", "min_area": oracle.MIN_AREA,
                "min_saturation": oracle.MIN_SATURATION, "min_value": oracle.MIN_VALUE}

    def score(self, items: list[ScoreItem], inputs: dict[str, list[ImageScore]]) -> list[ImageScore]:
        from ovi_plugins.scorers.common import load_rgb
        from ovi_plugins.toy.dataset import parse_prompt
        from ovi_plugins.toy.oracle import judge

        out = []
        for it in items:
            j = judge(load_rgb(it.path), parse_prompt(it.prompt))
            out.append(ImageScore(float(j.object_accuracy), {"exact": bool(j.exact),
                                                             "colour_accuracy": float(j.colour_accuracy)}))
        return out

    def official_files(self, category: str, scored: list[tuple[ScoreItem, ImageScore]]) -> dict[str, Any]:
        from ovi_plugins.scorers.common import answers, mean

        if not scored:
            return {}
        return {"annotation_oracle/vqa_result.json": answers(scored),
                "annotation_oracle/score_avg.txt": f"score avg:{mean([s.score for _, s in scored])}"}
