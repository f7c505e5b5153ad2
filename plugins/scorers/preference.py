"""What the human-preference scorers share: their model options' handling and batching
(`PreferenceScorer`), and the CLIP image-prompt cosine (`clip_cosines`)."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from ovi_cli.api import ImageScore, ScoreItem, Scorer
from ovi_cli.hub import ModelRef


class PreferenceScorer(Scorer):
    """A preference scorer: it reads only each image and its prompt, and each option named in
    `model_options` (option key -> what it holds, e.g. "PickScore model") is a hub id or folder that is
    named before loading, fingerprinted in `settings`, shown in `describe` and resolved by `model_dir`,
    all with the flag `--option NAME.KEY`. A subclass loads its models and scores one pass (`_score_pass`);
    `score` cuts the items into passes its image tower's memory allows."""

    prompt_only = True  # image and prompt alone: `ovi compare --preference` can use it
    model_options: ClassVar[dict[str, str]] = {}

    def _flag(self, key: str) -> str:
        return f"--option {self.name}.{key}"

    def required_models(self) -> list[ModelRef]:
        return [ModelRef(self.options[k], what, self._flag(k)) for k, what in self.model_options.items()]

    def settings(self) -> dict[str, Any]:
        from ovi_plugins.scorers.common import model_settings

        return {k: model_settings(self.options[k], what, self._flag(k)) for k, what in self.model_options.items()}

    def describe(self) -> dict[str, Any]:
        return {k: self.options[k] for k in self.model_options}

    def model_dir(self, key: str) -> Path:
        """The local folder of model option `key` (the hub cache's, or the folder given)."""
        from ovi_cli.hub import resolve_model_dir

        return resolve_model_dir(self.options[key], what=self.model_options[key], flag=self._flag(key))

    def vision_config(self) -> Any:
        """The config of the image tower that bounds a pass's batch (a CLIPModel's by default)."""
        return self.model.config.vision_config

    def score(self, items: list[ScoreItem], inputs: dict[str, list[ImageScore]]) -> list[ImageScore]:
        from ovi_plugins.scorers.common import score_in_parts

        return score_in_parts(self, items, self.vision_config(), self._score_pass)

    @abstractmethod
    def _score_pass(self, items: list[ScoreItem]) -> list[ImageScore]:
        """The scores of one pass of items, in order."""


def features(out: Any) -> Any:
    """A float tensor of embeddings from `get_image_features`/`get_text_features` (a tensor, or an output
    object with `pooler_output` in transformers releases that return one)."""
    tensor = out if hasattr(out, "float") and not hasattr(out, "pooler_output") else out.pooler_output
    return tensor.float()


def clip_cosines(model: Any, processor: Any, items: list[Any], device: Any, *, text: dict[str, Any],
                 attention_mask: bool) -> list[float]:
    """Cosine of each item's image and its prompt in a CLIP model (PickScore, HPS): the images' and the
    unique prompts' features, normalised. `text`: the tokenizer's padding/length as the scorer's
    reference code sets them; `attention_mask`: whether its text tower reads the mask."""
    import torch

    from ovi_plugins.scorers.common import load_rgb

    pixels = processor(images=[load_rgb(it.path) for it in items], return_tensors="pt")["pixel_values"]
    prompts = list(dict.fromkeys(it.prompt for it in items))
    tok = processor(text=prompts, truncation=True, return_tensors="pt", **text)
    with torch.no_grad():
        img = features(model.get_image_features(pixel_values=pixels.to(device)))
        mask = {"attention_mask": tok["attention_mask"].to(device)} if attention_mask else {}
        txt = features(model.get_text_features(input_ids=tok["input_ids"].to(device), **mask))
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    rows = [prompts.index(it.prompt) for it in items]
    return (img * txt[rows]).sum(-1).cpu().tolist()
