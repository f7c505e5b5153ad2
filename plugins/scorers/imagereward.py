"""`imagereward`: ImageReward (Xu et al. 2023), a human-preference reward per image and prompt.

The official package (`image-reward`, `THUDM/ImageReward`) builds BLIP (ViT-L/16 image encoder and
a BERT text encoder with cross-attention to the image, its `med.py`), loads `ImageReward.pt` and
`med_config.json` from the hub repo, and scores

    reward = (MLP(text_encoder(prompt, image)[CLS]) - 0.16717362830052426) / 1.0333394966054072

with the prompt tokenised by `bert-base-uncased` (padded to 35 tokens) and the image resized to 224
(bicubic, shorter side), centre-cropped and normalised with CLIP's mean and std. Its MLP is five
linear layers with dropout and no activation (768 -> 1024 -> 128 -> 64 -> 16 -> 1).

The package cannot be used with current transformers (its BLIP imports helpers transformers has
removed), so ovi loads the checkpoint itself: the BLIP ViT weights map onto a transformers
`BlipVisionModel` (fused qkv, LayerNorm eps 1e-6), the text encoder's weights onto a
`BlipTextModel` unchanged (transformers ported it from the same `med.py`), the MLP onto five
`Linear`s. Tested against BLIP's forward written out on tiny random checkpoints in this layout
(tests/helpers/tiny_preference.py).
"""

from __future__ import annotations

import json
from typing import Any

from ovi_cli.api import ImageScore, PluginOption, ScoreItem
from ovi_cli.errors import OviError
from ovi_plugins.scorers.common import load_rgb
from ovi_plugins.scorers.preference import PreferenceScorer

DEFAULT_REPO = "THUDM/ImageReward"
CHECKPOINT = "ImageReward.pt"
MED_CONFIG = "med_config.json"
DEFAULT_TOKENIZER = "google-bert/bert-base-uncased"  # the hub repo the legacy id bert-base-uncased names
MEAN, STD = 0.16717362830052426, 1.0333394966054072
MLP_LAYERS = (0, 2, 4, 6, 7)  # nn.Sequential indices of the Linear layers (dropouts between)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
TEXT_LENGTH = 35


def _count(sd: dict[str, Any], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})


def blip_vision(sd: dict[str, Any], heads: int) -> tuple[Any, dict[str, Any]]:
    """(BlipVisionConfig, BlipVisionModel state dict) from BLIP's `visual_encoder.*` weights (prefix removed)."""
    from transformers import BlipVisionConfig

    width = int(sd["cls_token"].shape[-1])
    patch = int(sd["patch_embed.proj.weight"].shape[-1])
    grid = int(round((sd["pos_embed"].shape[1] - 1) ** 0.5))
    layers = _count(sd, "blocks.")
    cfg = BlipVisionConfig(hidden_size=width, patch_size=patch, image_size=grid * patch, num_hidden_layers=layers,
                           intermediate_size=int(sd["blocks.0.mlp.fc1.weight"].shape[0]), num_attention_heads=heads,
                           layer_norm_eps=1e-6, hidden_act="gelu")
    out = {"embeddings.class_embedding": sd["cls_token"], "embeddings.position_embedding": sd["pos_embed"],
           "embeddings.patch_embedding.weight": sd["patch_embed.proj.weight"],
           "embeddings.patch_embedding.bias": sd["patch_embed.proj.bias"],
           "post_layernorm.weight": sd["norm.weight"], "post_layernorm.bias": sd["norm.bias"]}
    for i in range(layers):
        s, d = f"blocks.{i}.", f"encoder.layers.{i}."
        for a, b in (("norm1", "layer_norm1"), ("norm2", "layer_norm2"), ("attn.qkv", "self_attn.qkv"),
                     ("attn.proj", "self_attn.projection"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            out[d + b + ".weight"] = sd[s + a + ".weight"]
            out[d + b + ".bias"] = sd[s + a + ".bias"]
    return cfg, out


class ImageRewardScorer(PreferenceScorer):
    name = "imagereward"
    description = "ImageReward human preference: BLIP ViT-L + MLP head, normalised (THUDM/ImageReward)"
    model_options = {"model": "ImageReward checkpoint", "tokenizer": "ImageReward tokenizer"}
    options = (
        PluginOption("model", str, DEFAULT_REPO, f"folder or hub id holding {CHECKPOINT} and {MED_CONFIG}"),
        PluginOption("tokenizer", str, DEFAULT_TOKENIZER, "BERT tokenizer: hub id or folder (the official code "
                     "uses bert-base-uncased's)"),
        PluginOption("vision_heads", int, 16, "attention heads of the ViT (ViT-L/16: 16)", minimum=1),
    )

    def load(self) -> None:
        import torch
        from transformers import BertTokenizer, BlipTextConfig, BlipTextModel, BlipVisionModel, CLIPImageProcessor

        from ovi_cli.errors import first_line

        root = self.model_dir("model")
        for name in (CHECKPOINT, MED_CONFIG):
            if not (root / name).is_file():
                raise OviError(f"ImageReward {name} not found in {str(root)!r} (the {DEFAULT_REPO} layout holds "
                               f"{CHECKPOINT} and {MED_CONFIG})")
        try:
            sd = torch.load(root / CHECKPOINT, map_location="cpu", weights_only=True)
            med = json.loads((root / MED_CONFIG).read_text(encoding="utf-8"))
        except Exception as exc:  # noqa: BLE001 - pickle, zip, JSON and torch errors all mean "not this file"
            raise OviError(f"cannot read the ImageReward checkpoint in {str(root)!r}: "
                           f"{first_line(exc, with_type=False)}") from None
        sd = sd.get("state_dict", sd) if isinstance(sd, dict) else {}
        try:
            vis_sd = {k.removeprefix("blip.visual_encoder."): v for k, v in sd.items()
                      if k.startswith("blip.visual_encoder.")}
            vcfg, vmapped = blip_vision(vis_sd, self.options["vision_heads"])
            tcfg = BlipTextConfig(vocab_size=med["vocab_size"], hidden_size=med["hidden_size"],
                                  encoder_hidden_size=vcfg.hidden_size, intermediate_size=med["intermediate_size"],
                                  num_hidden_layers=med["num_hidden_layers"],
                                  num_attention_heads=med["num_attention_heads"],
                                  max_position_embeddings=med["max_position_embeddings"],
                                  layer_norm_eps=med.get("layer_norm_eps", 1e-12),
                                  hidden_act=med.get("hidden_act", "gelu"),
                                  pad_token_id=med.get("pad_token_id", 0))
            tmapped = {k.removeprefix("blip.text_encoder."): v for k, v in sd.items()
                       if k.startswith("blip.text_encoder.")}
            mlp = [(sd[f"mlp.layers.{i}.weight"], sd[f"mlp.layers.{i}.bias"]) for i in MLP_LAYERS]
        except (KeyError, IndexError, AttributeError, TypeError) as exc:
            raise OviError(f"ImageReward checkpoint in {str(root)!r} is not BLIP + MLP (missing {exc})") from None
        vision, text = BlipVisionModel(vcfg), BlipTextModel(tcfg, add_pooling_layer=False)
        for module, weights, what in ((vision, vmapped, "image encoder"), (text, tmapped, "text encoder")):
            missing, unexpected = module.load_state_dict(weights, strict=False)
            missing = [k for k in missing if not k.endswith("position_ids")]
            if missing or unexpected:
                raise OviError(f"ImageReward {what} does not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
        head = torch.nn.Sequential(*[torch.nn.Linear(w.shape[1], w.shape[0]) for w, _ in mlp])
        with torch.no_grad():
            for layer, (w, b) in zip(head, mlp):
                layer.weight.copy_(w)
                layer.bias.copy_(b)
        dev = self.context.device
        self.vision = vision.to(dev).eval().requires_grad_(False)
        self.text = text.to(dev).eval().requires_grad_(False)
        self.head = head.to(dev).eval().requires_grad_(False)
        size = vcfg.image_size
        self.processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                            resample=3, image_mean=CLIP_MEAN, image_std=CLIP_STD)
        try:
            self.tokenizer = BertTokenizer.from_pretrained(self.model_dir("tokenizer"))
        except (OSError, ValueError) as exc:
            raise OviError(f"cannot load the ImageReward tokenizer {self.options['tokenizer']!r}: "
                           f"{first_line(exc, with_type=False)}") from exc

    def vision_config(self) -> Any:
        return self.vision.config

    def _score_pass(self, items: list[ScoreItem]) -> list[ImageScore]:
        import torch

        dev = self.context.device
        pixels = self.processor(images=[load_rgb(it.path) for it in items], return_tensors="pt")["pixel_values"]
        tok = self.tokenizer([it.prompt for it in items], padding="max_length", truncation=True,
                             max_length=TEXT_LENGTH, return_tensors="pt")
        with torch.no_grad():
            image = self.vision(pixel_values=pixels.to(dev)).last_hidden_state
            atts = torch.ones(image.shape[:2], dtype=torch.long, device=dev)
            out = self.text(input_ids=tok["input_ids"].to(dev), attention_mask=tok["attention_mask"].to(dev),
                            encoder_hidden_states=image, encoder_attention_mask=atts).last_hidden_state
            raw = self.head(out[:, 0].float()).squeeze(-1)
        return [ImageScore((r - MEAN) / STD, {"raw": r}) for r in raw.cpu().tolist()]
