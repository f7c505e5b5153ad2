"""`pickscore`: PickScore (Kirstain et al. 2023), a human-preference score per image and prompt.

The official inference code: a transformers `CLIPModel` (`yuvalkirstain/PickScore_v1`, a CLIP
ViT-H/14 fine-tuned on Pick-a-Pic) with the processor of `laion/CLIP-ViT-H-14-laion2B-s32B-b79K`;

    score = logit_scale.exp() * cos(image_embeds, text_embeds)

(`get_image_features` / `get_text_features`, each L2-normalised; text padded and truncated to 77
tokens). Higher is preferred; about 20-23 for real models. Scores every category it is asked to
(`ovi bench score RUN --scorers pickscore`); it is no category's default.
"""

from __future__ import annotations

from typing import Any

from ovi_cli.api import ImageScore, PluginOption, ScoreItem, Scorer
from ovi_cli.hub import ModelRef
from ovi_plugins.scorers.common import model_settings

DEFAULT_MODEL = "yuvalkirstain/PickScore_v1"
DEFAULT_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


class PickScore(Scorer):
    name = "pickscore"
    description = "PickScore human preference: logit_scale x cosine of PickScore_v1 image and prompt embeddings"
    prompt_only = True  # image and prompt alone: `ovi compare --preference` can use it
    options = (
        PluginOption("model", str, DEFAULT_MODEL, "PickScore CLIPModel: hub id or folder"),
        PluginOption("processor", str, DEFAULT_PROCESSOR, "tokenizer and image processor: hub id or folder "
                     "(the official code uses laion/CLIP-ViT-H-14-laion2B-s32B-b79K's)"),
    )

    def required_models(self) -> list[ModelRef]:
        return [ModelRef(self.options["model"], "PickScore model", "--option pickscore.model"),
                ModelRef(self.options["processor"], "PickScore processor", "--option pickscore.processor")]

    def settings(self) -> dict[str, Any]:
        return {"model": model_settings(self.options["model"], "PickScore model", "--option pickscore.model"),
                "processor": model_settings(self.options["processor"], "PickScore processor",
                                            "--option pickscore.processor")}

    def describe(self) -> dict[str, Any]:
        return {"model": self.options["model"], "processor": self.options["processor"]}

    def load(self) -> None:
        from transformers import AutoProcessor, CLIPModel

        from ovi_cli.errors import OviError, first_line
        from ovi_cli.hub import resolve_model_dir

        model_dir = resolve_model_dir(self.options["model"], what="PickScore model", flag="--option pickscore.model")
        proc_dir = resolve_model_dir(self.options["processor"], what="PickScore processor",
                                     flag="--option pickscore.processor")
        try:
            self.model = CLIPModel.from_pretrained(model_dir).to(self.context.device).eval().requires_grad_(False)
            self.processor = AutoProcessor.from_pretrained(proc_dir)
        except (OSError, ValueError) as exc:
            raise OviError(f"cannot load PickScore from {self.options['model']!r}: "
                           f"{first_line(exc, with_type=False)}") from exc

    def score(self, items: list[ScoreItem], inputs: dict[str, list[ImageScore]]) -> list[ImageScore]:
        from ovi_plugins.scorers.common import score_in_parts

        return score_in_parts(self, items, self.model.config.vision_config, self._score_pass)

    def _score_pass(self, items: list[ScoreItem]) -> list[ImageScore]:
        from ovi_plugins.scorers.preference import clip_cosines

        cos = clip_cosines(self.model, self.processor, items, self.context.device,
                           text={"padding": True, "max_length": 77}, attention_mask=True)
        scale = float(self.model.logit_scale.exp())
        return [ImageScore(scale * c, {"cosine": c, "logit_scale": scale}) for c in cos]
