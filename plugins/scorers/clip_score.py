"""`clip-score`: T2I-CompBench's CLIPScore (non-spatial; the action part of complex's 3-in-1).

As `CLIPScore_eval/CLIP_similarity.py`: the cosine of the CLIP ViT-B/32 image embedding and the
prompt's text embedding (both L2-normalised; no rescaling, no clipping at 0), the prompt read back
from the file name. For the `complex` category the prompt's adjectives are dropped first (the
official `--complex` mode: spaCy tokens whose POS is not ADJ, joined by spaces).

The model is `openai/clip-vit-base-patch32` through transformers (the official script loads the
same weights through OpenAI's `clip` package) or any CLIP folder: a transformers `CLIPModel` folder,
or a folder in the kandinsky-2-2-prior layout (image_encoder/, text_encoder/, tokenizer/,
image_processor/), such as the toy CLIP (`--model toy`). Known difference: prompts longer than 77
tokens are truncated (OpenAI's `clip.tokenize` raises instead); the image processor is
transformers' (resize 224 bicubic, centre crop, CLIP normalisation), the same recipe as `clip.load`'s.
"""

from __future__ import annotations

from typing import Any

from ovi_cli.api import ImageScore, PluginOption, ScoreItem, Scorer
from ovi_cli.hub import ModelRef
from ovi_plugins.scorers.common import answers, images_per_pass, load_rgb, mean, model_settings, vit_bytes_per_image

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
FLAG = "--clip-model"


class ClipScore(Scorer):
    name = "clip-score"
    description = "CLIPScore: cosine of CLIP ViT-B/32 image and prompt embeddings (non-spatial; part of 3-in-1)"
    prompt_only = True  # outside `complex` the image and its prompt are all it reads (`ovi compare --preference`)
    categories = ("non_spatial",)
    options = (
        PluginOption("model", str, "", f"CLIP: hub id or folder (default {DEFAULT_CLIP}, or the CLIP of a "
                     f"--model preset such as toy); alias {FLAG}", flag=FLAG),
    )

    model: Any = None

    def source(self) -> str:
        return self.options.get("model") or self.context.encoder_model or DEFAULT_CLIP

    def required_models(self) -> list[ModelRef]:
        return [ModelRef(self.source(), "clip-score CLIP", FLAG)]

    def settings(self) -> dict[str, Any]:
        from ovi_plugins.scorers.nlp import get_parser

        return {**model_settings(self.source(), "clip-score CLIP", FLAG), "nlp": get_parser(self.context.nlp).name}

    def describe(self) -> dict[str, Any]:
        return {"model": self.source()}

    def load(self) -> None:
        import torch

        from ovi_cli.encoders import Encoders, encoder_root_has_layout
        from ovi_cli.errors import OviError, first_line
        from ovi_cli.hub import resolve_model_dir
        from ovi_plugins.scorers.nlp import get_parser

        self.parser = get_parser(self.context.nlp)
        root = resolve_model_dir(self.source(), what="clip-score CLIP", flag=FLAG)
        device = self.context.device
        if encoder_root_has_layout(root):
            self.towers = Encoders.load(str(root), device=device)
            return
        self.towers = None
        try:
            from transformers import AutoTokenizer, CLIPModel

            from ovi_cli.encoders import _image_processor_class

            self.model = CLIPModel.from_pretrained(root).to(device).eval().requires_grad_(False)
            self.tokenizer = AutoTokenizer.from_pretrained(root)
            self.processor = _image_processor_class().from_pretrained(root)
        except (OSError, ValueError) as exc:
            raise OviError(f"cannot load a CLIP model from {self.source()!r} (a CLIPModel folder, or the "
                           f"kandinsky-2-2-prior layout): {first_line(exc, with_type=False)}") from exc
        self._torch = torch

    def text_for(self, item: ScoreItem) -> str:
        """The text the image is compared with: the prompt, without adjectives for `complex`."""
        if item.category != "complex":
            return item.prompt
        return " ".join(t.text for t in self.parser.tokens(item.prompt) if t.pos != "ADJ")

    def embed(self, images: list[Any], texts: list[str]) -> tuple[Any, Any, list[bool]]:
        """L2-normalised image `[B, D]` and text `[T, D]` embeddings, and which texts were truncated."""
        import torch

        if self.towers is not None:
            img = self.towers.encode_images(images)
            enc = self.towers.encode_text(texts)
            txt, truncated = enc.text_embeds, list(enc.truncated)
        else:
            dev = self.context.device
            limit = int(self.model.config.text_config.max_position_embeddings)
            lengths = [len(ids) for ids in self.tokenizer(texts)["input_ids"]]
            tok = self.tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
            pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(dev)
            with torch.no_grad():
                vis = self.model.vision_model(pixel_values=pixels).pooler_output
                img = self.model.visual_projection(vis)
                out = self.model.text_model(input_ids=tok["input_ids"].to(dev),
                                            attention_mask=tok["attention_mask"].to(dev)).pooler_output
                txt = self.model.text_projection(out)
            truncated = [n > limit for n in lengths]
        img = img.float() / img.float().norm(dim=-1, keepdim=True)
        txt = txt.float() / txt.float().norm(dim=-1, keepdim=True)
        return img, txt, truncated

    def images_per_pass(self, count: int) -> int:
        """How many of `count` images to embed at once (`common.images_per_pass`, the CLIP vision tower)."""
        vision = (self.towers.image_encoder if self.towers is not None else self.model.vision_model).config
        size = int(vision.image_size)
        per_image = vit_bytes_per_image(size, int(vision.patch_size), int(vision.hidden_size),
                                        int(vision.num_attention_heads))
        return images_per_pass(self, count, per_image, size)

    def score(self, items: list[ScoreItem], inputs: dict[str, list[ImageScore]]) -> list[ImageScore]:
        import torch

        texts = [self.text_for(it) for it in items]
        unique = list(dict.fromkeys(texts))
        step = self.images_per_pass(len(items))
        parts = [self.embed([load_rgb(it.path) for it in items[start:start + step]], unique)
                 for start in range(0, len(items), step)]
        img, txt, truncated = torch.cat([p[0] for p in parts]), parts[0][1], parts[0][2]
        rows = [unique.index(t) for t in texts]
        cos = (img * txt[rows]).sum(-1).cpu().tolist()
        out = []
        for t, c, r in zip(texts, cos, rows):
            details: dict[str, Any] = {"text": t}
            if truncated[r]:
                details["truncated"] = True
            out.append(ImageScore(float(c), details))
        return out

    def official_files(self, category: str, scored: list[tuple[ScoreItem, ImageScore]]) -> dict[str, Any]:
        if not scored:
            return {}
        return {"annotation_clip/vqa_result.json": answers(scored),
                "annotation_clip/score_avg.txt": f"score avg:{mean([s.score for _, s in scored])}"}
