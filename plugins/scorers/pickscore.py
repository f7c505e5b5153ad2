"""`pickscore`: PickScore (Kirstain et al. 2023), a human-preference score per image and prompt.

The official inference code: a transformers `CLIPModel` (`yuvalkirstain/PickScore_v1`, a CLIP
ViT-H/14 fine-tuned on Pick-a-Pic) with the processor of `laion/CLIP-ViT-H-14-laion2B-s32B-b79K`;

    score = logit_scale.exp() * cos(image_embeds, text_embeds)

(`get_image_features` / `get_text_features`, each L2-normalised; text padded and truncated to 77
tokens). Higher is preferred; about 20-23 for real models. Scores every category it is asked to
(`ovi bench score RUN --scorers pickscore`); it is no category's default.
"""

from __future__ import annotations

from ovi_cli.api import ImageScore, PluginOption, ScoreItem
from ovi_plugins.scorers.preference import PreferenceScorer

DEFAULT_MODEL = "yuvalkirstain/PickScore_v1"
DEFAULT_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


class PickScore(PreferenceScorer):
    name = "pickscore"
    description = "PickScore human preference: logit_scale x cosine of PickScore_v1 image and prompt embeddings"
    model_options = {"model": "PickScore model", "processor": "PickScore processor"}
    options = (
        PluginOption("model", str, DEFAULT_MODEL, "PickScore CLIPModel: hub id or folder"),
        PluginOption("processor", str, DEFAULT_PROCESSOR, "tokenizer and image processor: hub id or folder "
                     "(the official code uses laion/CLIP-ViT-H-14-laion2B-s32B-b79K's)"),
    )

    def load(self) -> None:
        from transformers import AutoProcessor, CLIPModel

        from ovi_cli.errors import OviError, first_line

        model_dir, proc_dir = self.model_dir("model"), self.model_dir("processor")
        try:
            self.model = CLIPModel.from_pretrained(model_dir).to(self.context.device).eval().requires_grad_(False)
            self.processor = AutoProcessor.from_pretrained(proc_dir)
        except (OSError, ValueError) as exc:
            raise OviError(f"cannot load PickScore from {self.options['model']!r}: "
                           f"{first_line(exc, with_type=False)}") from exc

    def _score_pass(self, items: list[ScoreItem]) -> list[ImageScore]:
        from ovi_plugins.scorers.preference import clip_cosines

        cos = clip_cosines(self.model, self.processor, items, self.context.device,
                           text={"padding": True, "max_length": 77}, attention_mask=True)
        scale = float(self.model.logit_scale.exp())
        return [ImageScore(scale * c, {"cosine": c, "logit_scale": scale}) for c in cos]
