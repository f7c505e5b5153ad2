"""`blip-vqa`: T2I-CompBench's BLIP-VQA score (colour, shape, texture; the attribute part of 3-in-1).

The official procedure (`BLIPvqa_eval/BLIP_vqa.py` with BLIP's `vqa_prob` inference):
1. the prompt is read back from the file name; its noun phrases are found (spaCy
   `en_core_web_sm` noun chunks where installed, else ovi's rule-based chunker: see `nlp.py`);
   'top', 'the side', 'the left', 'the right' are dropped and at most 8 are kept;
2. each phrase becomes the question "{phrase}?" (BLIP's `pre_question`: lower case, some
   punctuation removed), tokenised to at most 35 tokens, its first token replaced by `[ENC]`;
3. P(yes) is read from the answer decoder: one decoder step from the `[DEC]` token over the
   question's encoding (cross-attending to the question's tokens); softmax over the
   vocabulary at that first position; the answer is P("yes") / (P("yes") + P("no"));
4. the image's score is the product of its answers, each rounded to 4 decimals first (the
   official script writes and reads them back as '{:.4f}' strings).

Through transformers: `BlipForQuestionAnswering`'s `vision_model`, `text_encoder` and
`text_decoder`, `Salesforce/blip-vqa-capfilt-large` (the official checkpoint,
model_base_vqa_capfilt_large, converted). Images are resized to 480x480 (bicubic; the official
`image_size`) and normalised with the checkpoint's processor mean/std; the vision tower
interpolates its position embeddings (the converted checkpoint's are for 384) — `--option
blip-vqa.image_size=0` uses the checkpoint's own size instead. `--option blip-vqa.first_token=cls`
keeps the tokenizer's `[CLS]` as first question token, as transformers' own `generate` does.
"""

from __future__ import annotations

import json
from typing import Any

from ovi_cli.api import ImageScore, PluginOption, ScoreItem, Scorer
from ovi_cli.hub import ModelRef
from ovi_plugins.scorers.common import (  # noqa: F401 - MEMORY_FRACTION: the bound this scorer uses
    MEMORY_FRACTION,
    answers,
    images_per_pass,
    load_rgb,
    mean,
    model_settings,
    vit_bytes_per_image,
)
from ovi_plugins.scorers.rules import (
    BLIP_QUESTION_MAX_TOKENS,
    blip_image_score,
    blip_pre_question,
    blip_questions,
)

DEFAULT_BLIP = "Salesforce/blip-vqa-capfilt-large"
FLAG = "--blip-model"
OFFICIAL_IMAGE_SIZE = 480
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class BlipVqa(Scorer):
    name = "blip-vqa"
    description = "BLIP-VQA: product over the prompt's noun phrases of P(yes) to '{phrase}?' (color, shape, texture)"
    categories = ("color", "shape", "texture")
    options = (
        PluginOption("model", str, DEFAULT_BLIP, f"BLIP VQA model: hub id or folder; alias {FLAG}", flag=FLAG),
        PluginOption("image_size", int, OFFICIAL_IMAGE_SIZE, "square input size in pixels (0 = the model's own)",
                     minimum=0),
        PluginOption("first_token", str, "enc", "first question token: enc (official BLIP) or cls",
                     choices=("enc", "cls")),
    )

    def required_models(self) -> list[ModelRef]:
        return [ModelRef(self.options["model"], "blip-vqa BLIP", FLAG)]

    def settings(self) -> dict[str, Any]:
        from ovi_plugins.scorers.nlp import get_parser

        return {**model_settings(self.options["model"], "blip-vqa BLIP", FLAG),
                "image_size": self.options["image_size"], "first_token": self.options["first_token"],
                "nlp": get_parser(self.context.nlp).name}

    def describe(self) -> dict[str, Any]:
        return {"model": self.options["model"]}

    def load(self) -> None:
        from transformers import AutoTokenizer, BlipForQuestionAnswering

        from ovi_cli.errors import OviError, first_line
        from ovi_cli.hub import resolve_model_dir
        from ovi_plugins.scorers.nlp import get_parser

        self.parser = get_parser(self.context.nlp)
        root = resolve_model_dir(self.options["model"], what="blip-vqa BLIP", flag=FLAG)
        try:
            model = BlipForQuestionAnswering.from_pretrained(root)
            tokenizer = AutoTokenizer.from_pretrained(root)
        except (OSError, ValueError) as exc:
            raise OviError(f"cannot load BLIP VQA from {self.options['model']!r}: "
                           f"{first_line(exc, with_type=False)}") from exc
        self.model = model.to(self.context.device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.yes_id, self.no_id = answer_token_ids(tokenizer)
        self.bos_id = int(model.config.text_config.bos_token_id)
        self.enc_id = enc_token_id(tokenizer, model.config) if self.options["first_token"] == "enc" else None
        native = int(model.config.vision_config.image_size)
        self.size = self.options["image_size"] or native
        self.interpolate = self.size != native
        proc = root / "preprocessor_config.json"
        cfg = json.loads(proc.read_text()) if proc.is_file() else {}
        self.mean = tuple(cfg.get("image_mean") or CLIP_MEAN)
        self.std = tuple(cfg.get("image_std") or CLIP_STD)

    # ---- the procedure, step by step (each usable on its own, e.g. in tests) -----------------------
    def questions(self, prompt: str) -> list[str]:
        """The official questions for a prompt, after BLIP's `pre_question`."""
        return [blip_pre_question(q) for q in blip_questions(self.parser.noun_chunks(prompt))]

    def pixels(self, images: list[Any]) -> Any:
        """`[B, 3, S, S]`: bicubic resize to S x S, [0, 1], normalised (the official test transform)."""
        import numpy as np
        import torch
        from PIL import Image

        arr = np.stack([np.asarray(im.convert("RGB").resize((self.size, self.size), Image.BICUBIC), np.float32)
                        for im in images]) / 255.0
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()

    def yes_probabilities(self, pixel_values: Any, image_of: list[int], questions: list[str]) -> list[float]:
        """P(yes) / (P(yes) + P(no)) for each (image `image_of[k]`, `questions[k]`) pair.

        Questions are batched by token length, so no padding enters the text encoder or the
        decoder's cross-attention: each answer is what the question alone gives (the official
        model masks the padding; transformers 5's BLIP decoder was measured not to mask it).
        """
        import torch

        dev = self.context.device
        ids = [self.tokenizer(q, truncation=True, max_length=BLIP_QUESTION_MAX_TOKENS)["input_ids"] for q in questions]
        groups: dict[int, list[int]] = {}
        for k, row in enumerate(ids):
            groups.setdefault(len(row), []).append(k)
        out = [0.0] * len(questions)
        with torch.no_grad():
            image_embeds = self.model.vision_model(pixel_values=pixel_values.to(dev),
                                                   interpolate_pos_encoding=self.interpolate).last_hidden_state
            for members in groups.values():
                batch = torch.tensor([ids[k] for k in members], dtype=torch.long, device=dev)
                if self.enc_id is not None:
                    batch[:, 0] = self.enc_id
                states = image_embeds[torch.as_tensor([image_of[k] for k in members], device=dev)]
                question = self.model.text_encoder(
                    input_ids=batch, attention_mask=torch.ones_like(batch), encoder_hidden_states=states,
                    encoder_attention_mask=torch.ones(states.shape[:-1], dtype=torch.long, device=dev),
                ).last_hidden_state
                start = torch.full((len(members), 1), self.bos_id, dtype=torch.long, device=dev)
                logits = self.model.text_decoder(input_ids=start, encoder_hidden_states=question,
                                                 encoder_attention_mask=torch.ones_like(batch)).logits[:, 0, :]
                probs = torch.softmax(logits.float(), dim=-1)
                p = probs[:, self.yes_id] / (probs[:, self.yes_id] + probs[:, self.no_id])
                for k, v in zip(members, p.cpu().tolist()):
                    out[k] = v
        return out

    def images_per_pass(self, count: int, questions: int) -> int:
        """How many of `count` images to run at once (`common.images_per_pass`, with BLIP's estimate:
        at 480 px the vision tower's attention grows with the fourth power of the size; a batch of 64 was
        killed at 24 GB)."""
        vision = self.model.config.vision_config
        per_image = blip_bytes_per_image(self.size, int(vision.patch_size), int(vision.hidden_size),
                                         int(vision.num_attention_heads), max(1, questions))
        return images_per_pass(self, count, per_image, self.size)

    def score(self, items: list[ScoreItem], inputs: dict[str, list[ImageScore]]) -> list[ImageScore]:
        per_image = max([len(self.questions(it.prompt)) for it in items] + [1])
        step = self.images_per_pass(len(items), per_image)
        out: list[ImageScore] = []
        for start in range(0, len(items), step):
            out += self._score_pass(items[start:start + step])
        return out

    def _score_pass(self, items: list[ScoreItem]) -> list[ImageScore]:
        qs = [self.questions(it.prompt) for it in items]
        image_of = [b for b, q in enumerate(qs) for _ in q]
        flat = [x for q in qs for x in q]
        probs = self.yes_probabilities(self.pixels([load_rgb(it.path) for it in items]), image_of, flat) if flat else []
        out, k = [], 0
        for q in qs:
            p = probs[k:k + len(q)]
            k += len(q)
            out.append(ImageScore(blip_image_score(p), {"questions": q, "answers": [round(x, 6) for x in p]}))
        return out

    def official_files(self, category: str, scored: list[tuple[ScoreItem, ImageScore]]) -> dict[str, Any]:
        if not scored:
            return {}
        return {"annotation_blip/vqa_result.json": answers(scored, text=True),
                "annotation_blip/blip_vqa_score.txt": f"BLIP-VQA score:{mean([s.score for _, s in scored])}"}


def blip_bytes_per_image(size: int, patch: int, hidden: int, heads: int, questions: int) -> int:
    """Peak bytes one image adds to a BLIP-VQA pass (float32, no gradients), an upper estimate:
    the vision tower's attention at T = (size / patch)^2 + 1 tokens (scores, softmax and its copy:
    3 x heads x T^2), its hidden states (16 x T x hidden: q, k, v, MLP, residuals), the pixels, and
    the image states copied once per question for the text encoder (questions x T x hidden)."""
    tokens = (size // patch) ** 2 + 1
    return vit_bytes_per_image(size, patch, hidden, heads, extra=questions * tokens * hidden)


def answer_token_ids(tokenizer: Any) -> tuple[int, int]:
    """The vocabulary ids of "yes" and "no" (2748 and 2053 in BLIP's BERT vocabulary)."""
    from ovi_cli.errors import OviError

    ids = tokenizer.convert_tokens_to_ids(["yes", "no"])
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
        raise OviError("the BLIP tokenizer has no 'yes'/'no' tokens: not a BLIP VQA model")
    return int(ids[0]), int(ids[1])


def enc_token_id(tokenizer: Any, config: Any) -> int:
    """BLIP's `[ENC]` id: the tokenizer's, else the one after `[DEC]` (BLIP appends both to BERT's vocabulary)."""
    from ovi_cli.errors import OviError

    tid = tokenizer.convert_tokens_to_ids("[ENC]")
    if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid is not None:
        return tid
    guess = int(config.text_config.bos_token_id) + 1
    if guess >= int(config.text_config.vocab_size):
        raise OviError("the BLIP model has no [ENC] token; pass --option blip-vqa.first_token=cls")
    return guess
