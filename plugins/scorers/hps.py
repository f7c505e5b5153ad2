"""`hps`: HPS v2.1 (Wu et al. 2023), a human-preference score per image and prompt.

The official `hpsv2` package builds OpenCLIP ViT-H-14 (`open_clip.create_model_and_transforms(
"ViT-H-14")`), loads `HPS_v2.1_compressed.pt` from the hub repo `xswu/HPSv2` (`torch.load(...)
["state_dict"]`) and scores

    score = cos(image_features, text_features)   (both L2-normalised; `diag(image @ text.T)`)

ovi does not install `open_clip_torch`/`hpsv2`: they need torchvision and timm, whose PyPI releases
can replace a pinned torch and, installed beside transformers here, broke its imports. ovi's own
loader instead maps the OpenCLIP state dict into a transformers `CLIPModel` of the same shape (the
conversion transformers itself uses for `laion/CLIP-ViT-H-14-laion2B-s32B-b79K`: fused `in_proj`
split into q/k/v, `proj` matrices transposed, GELU), with the tokenizer and image processor of
`laion/CLIP-ViT-H-14-laion2B-s32B-b79K` (the same BPE vocabulary and the same 224 bicubic resize,
centre crop and OpenAI normalisation as OpenCLIP's validation transform; known difference: OpenCLIP
resizes tensors with torchvision, transformers PIL images, so pixels may differ by rounding).
The architecture is read from the checkpoint's shapes; the head counts (16 and 16 for ViT-H-14)
are options. Tested against a direct re-implementation of OpenCLIP's forward on tiny random
checkpoints in this layout (tests/helpers/tiny_preference.py).
"""

from __future__ import annotations

from typing import Any

from ovi_cli.api import ImageScore, PluginOption, ScoreItem
from ovi_cli.errors import OviError
from ovi_plugins.scorers.preference import PreferenceScorer

DEFAULT_REPO = "xswu/HPSv2"
CHECKPOINT = "HPS_v2.1_compressed.pt"
DEFAULT_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


def _count(sd: dict[str, Any], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})


def openclip_to_clip(sd: dict[str, Any], vision_heads: int = 16, text_heads: int = 16) -> tuple[Any, dict[str, Any]]:
    """(transformers `CLIPConfig`, state dict) of an OpenCLIP `CLIP` (ViT image tower, text transformer) state dict."""
    from transformers import CLIPConfig

    try:
        vw = sd["visual.conv1.weight"]
        width, patch = int(vw.shape[0]), int(vw.shape[-1])
        grid = int(round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5))
        twidth = int(sd["token_embedding.weight"].shape[1])
        cfg = CLIPConfig(
            projection_dim=int(sd["visual.proj"].shape[1]),
            logit_scale_init_value=float(sd["logit_scale"]),
            vision_config={"hidden_size": width, "patch_size": patch, "image_size": grid * patch,
                           "num_hidden_layers": _count(sd, "visual.transformer.resblocks."),
                           "intermediate_size": int(sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
                           "num_attention_heads": vision_heads, "hidden_act": "gelu", "layer_norm_eps": 1e-5},
            text_config={"hidden_size": twidth, "vocab_size": int(sd["token_embedding.weight"].shape[0]),
                         "max_position_embeddings": int(sd["positional_embedding"].shape[0]),
                         "num_hidden_layers": _count(sd, "transformer.resblocks."),
                         "intermediate_size": int(sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
                         "num_attention_heads": text_heads, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
                         "eos_token_id": 2, "bos_token_id": 0, "pad_token_id": 1},  # 2: pool at argmax(ids)
        )
    except (KeyError, IndexError, AttributeError) as exc:
        raise OviError(f"not an OpenCLIP ViT CLIP state dict (missing {exc})") from None
    out: dict[str, Any] = {}

    def blocks(src: str, dst: str, n: int) -> None:
        for i in range(n):
            s, d = f"{src}{i}.", f"{dst}{i}."
            q, k, v = sd[s + "attn.in_proj_weight"].chunk(3)
            qb, kb, vb = sd[s + "attn.in_proj_bias"].chunk(3)
            out.update({d + "self_attn.q_proj.weight": q, d + "self_attn.k_proj.weight": k,
                        d + "self_attn.v_proj.weight": v, d + "self_attn.q_proj.bias": qb,
                        d + "self_attn.k_proj.bias": kb, d + "self_attn.v_proj.bias": vb,
                        d + "self_attn.out_proj.weight": sd[s + "attn.out_proj.weight"],
                        d + "self_attn.out_proj.bias": sd[s + "attn.out_proj.bias"]})
            for a, b in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"),
                         ("mlp.c_proj", "mlp.fc2")):
                out[d + b + ".weight"] = sd[s + a + ".weight"]
                out[d + b + ".bias"] = sd[s + a + ".bias"]

    blocks("visual.transformer.resblocks.", "vision_model.encoder.layers.", cfg.vision_config.num_hidden_layers)
    blocks("transformer.resblocks.", "text_model.encoder.layers.", cfg.text_config.num_hidden_layers)
    out.update({
        "vision_model.embeddings.class_embedding": sd["visual.class_embedding"],
        "vision_model.embeddings.position_embedding.weight": sd["visual.positional_embedding"],
        "vision_model.embeddings.patch_embedding.weight": sd["visual.conv1.weight"],
        "vision_model.pre_layrnorm.weight": sd["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": sd["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": sd["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": sd["visual.ln_post.bias"],
        "visual_projection.weight": sd["visual.proj"].T.contiguous(),
        "text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
        "text_model.final_layer_norm.weight": sd["ln_final.weight"],
        "text_model.final_layer_norm.bias": sd["ln_final.bias"],
        "text_projection.weight": sd["text_projection"].T.contiguous(),
        "logit_scale": sd["logit_scale"],
    })
    return cfg, out


class Hps(PreferenceScorer):
    name = "hps"
    description = "HPS v2.1 human preference: cosine of OpenCLIP ViT-H-14 (HPS checkpoint) image and prompt features"
    model_options = {"model": "HPS checkpoint", "processor": "HPS processor"}
    options = (
        PluginOption("model", str, DEFAULT_REPO, f"folder or hub id holding {CHECKPOINT} (xswu/HPSv2's layout)"),
        PluginOption("checkpoint", str, CHECKPOINT, "the checkpoint file in it (HPS_v2_compressed.pt: HPS v2)"),
        PluginOption("processor", str, DEFAULT_PROCESSOR, "tokenizer and image processor: hub id or folder"),
        PluginOption("vision_heads", int, 16, "attention heads of the image tower (ViT-H-14: 16)", minimum=1),
        PluginOption("text_heads", int, 16, "attention heads of the text tower (ViT-H-14: 16)", minimum=1),
    )

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "checkpoint": self.options["checkpoint"]}

    def load(self) -> None:
        import torch
        from transformers import AutoProcessor, CLIPModel

        from ovi_cli.errors import first_line

        path = self.model_dir("model") / self.options["checkpoint"]
        if not path.is_file():
            raise OviError(f"HPS checkpoint {str(path)!r} not found (the {DEFAULT_REPO} layout holds {CHECKPOINT})")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors all mean "not this file"
            raise OviError(f"cannot read HPS checkpoint {str(path)!r}: {first_line(exc, with_type=False)}") from None
        sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(sd, dict):
            raise OviError(f"HPS checkpoint {str(path)!r} holds no state dict")
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
        cfg, mapped = openclip_to_clip(sd, self.options["vision_heads"], self.options["text_heads"])
        model = CLIPModel(cfg)
        missing, unexpected = model.load_state_dict(mapped, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise OviError(f"HPS checkpoint {str(path)!r} does not fit OpenCLIP ViT: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
        self.model = model.to(self.context.device).eval().requires_grad_(False)
        try:
            self.processor = AutoProcessor.from_pretrained(self.model_dir("processor"))
        except (OSError, ValueError) as exc:
            raise OviError(f"cannot load the HPS processor {self.options['processor']!r}: "
                           f"{first_line(exc, with_type=False)}") from exc

    def _score_pass(self, items: list[ScoreItem]) -> list[ImageScore]:
        from ovi_plugins.scorers.preference import clip_cosines

        length = int(self.model.config.text_config.max_position_embeddings)
        cos = clip_cosines(self.model, self.processor, items, self.context.device,
                           text={"padding": "max_length", "max_length": length}, attention_mask=False)
        return [ImageScore(float(c)) for c in cos]
