"""Tiny random human-preference models in their official layouts, and OpenCLIP's forward written out.

- PickScore (`yuvalkirstain/PickScore_v1`) is a transformers `CLIPModel` folder: `tiny_scorers.make_clip_repo`
  serves as both the model and the processor folder.
- HPS v2.1 (`xswu/HPSv2`) is a folder holding `HPS_v2.1_compressed.pt`, `{"state_dict": ...}` of an OpenCLIP
  `CLIP` (ViT image tower, causal text transformer): `make_hps_repo` writes one with random weights and
  the shapes OpenCLIP gives them; `openclip_features` is OpenCLIP's own forward (open_clip/transformer.py
  `VisionTransformer.forward`, `CLIP.encode_text`) re-implemented from that state dict with plain torch,
  the reference the loader is tested against.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

VISION = {"width": 32, "layers": 2, "heads": 4, "patch": 8, "image": 32, "mlp": 64}
TEXT = {"width": 24, "layers": 2, "heads": 4, "context": 77, "mlp": 48}
EMBED = 16


def _blocks(prefix: str, width: int, mlp: int, layers: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    sd = {}
    for i in range(layers):
        p = f"{prefix}{i}."
        for ln in ("ln_1", "ln_2"):
            sd[p + ln + ".weight"] = 1 + 0.1 * torch.randn(width, generator=g)
            sd[p + ln + ".bias"] = 0.1 * torch.randn(width, generator=g)
        sd.update({
                   p + "attn.in_proj_weight": 0.2 * torch.randn(3 * width, width, generator=g),
                   p + "attn.in_proj_bias": 0.1 * torch.randn(3 * width, generator=g),
                   p + "attn.out_proj.weight": 0.2 * torch.randn(width, width, generator=g),
                   p + "attn.out_proj.bias": 0.1 * torch.randn(width, generator=g),
                   p + "mlp.c_fc.weight": 0.2 * torch.randn(mlp, width, generator=g),
                   p + "mlp.c_fc.bias": 0.1 * torch.randn(mlp, generator=g),
                   p + "mlp.c_proj.weight": 0.2 * torch.randn(width, mlp, generator=g),
                   p + "mlp.c_proj.bias": 0.1 * torch.randn(width, generator=g)})
    return sd


def hps_state_dict(vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    v, t = VISION, TEXT
    grid = v["image"] // v["patch"]
    sd = {
        "visual.conv1.weight": 0.2 * torch.randn(v["width"], 3, v["patch"], v["patch"], generator=g),
        "visual.class_embedding": torch.randn(v["width"], generator=g),
        "visual.positional_embedding": 0.5 * torch.randn(grid * grid + 1, v["width"], generator=g),
        "visual.ln_pre.weight": 1 + 0.1 * torch.randn(v["width"], generator=g),
        "visual.ln_pre.bias": 0.1 * torch.randn(v["width"], generator=g),
        "visual.ln_post.weight": 1 + 0.1 * torch.randn(v["width"], generator=g),
        "visual.ln_post.bias": 0.1 * torch.randn(v["width"], generator=g),
        "visual.proj": 0.3 * torch.randn(v["width"], EMBED, generator=g),
        "token_embedding.weight": torch.randn(vocab, t["width"], generator=g),
        "positional_embedding": 0.5 * torch.randn(t["context"], t["width"], generator=g),
        "ln_final.weight": 1 + 0.1 * torch.randn(t["width"], generator=g),
        "ln_final.bias": 0.1 * torch.randn(t["width"], generator=g),
        "text_projection": 0.3 * torch.randn(t["width"], EMBED, generator=g),
        "logit_scale": torch.tensor(4.6052),
    }
    sd.update(_blocks("visual.transformer.resblocks.", v["width"], v["mlp"], v["layers"], g))
    sd.update(_blocks("transformer.resblocks.", t["width"], t["mlp"], t["layers"], g))
    return sd


def make_hps_repo(root: Path, vocab: int, seed: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "state_dict": hps_state_dict(vocab, seed)}, root / "HPS_v2.1_compressed.pt")
    return root


def _resblocks(x: torch.Tensor, sd: dict, prefix: str, layers: int, heads: int, causal: bool) -> torch.Tensor:
    # OpenCLIP ResidualAttentionBlock: x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)); nn.MultiheadAttention, GELU
    b, n, w = x.shape
    mask = torch.full((n, n), float("-inf")).triu(1) if causal else None
    for i in range(layers):
        p = f"{prefix}{i}."
        h = F.layer_norm(x, (w,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"])
        out, _ = F.multi_head_attention_forward(
            h.transpose(0, 1), h.transpose(0, 1), h.transpose(0, 1), w, heads, sd[p + "attn.in_proj_weight"],
            sd[p + "attn.in_proj_bias"], None, None, False, 0.0, sd[p + "attn.out_proj.weight"],
            sd[p + "attn.out_proj.bias"], training=False, need_weights=False, attn_mask=mask)
        x = x + out.transpose(0, 1)
        h = F.layer_norm(x, (w,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"])
        x = x + F.linear(F.gelu(F.linear(h, sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"])),
                         sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"])
    return x


@torch.no_grad()
def openclip_features(sd: dict, pixels: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCLIP's (image_features, text_features), L2-normalised as `CLIP.forward` returns them."""
    v, t = VISION, TEXT
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=v["patch"])
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = sd["visual.class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + sd["visual.positional_embedding"]
    x = F.layer_norm(x, (v["width"],), sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"])
    x = _resblocks(x, sd, "visual.transformer.resblocks.", v["layers"], v["heads"], causal=False)
    x = F.layer_norm(x, (v["width"],), sd["visual.ln_post.weight"], sd["visual.ln_post.bias"])
    image = x[:, 0] @ sd["visual.proj"]
    y = sd["token_embedding.weight"][tokens] + sd["positional_embedding"]
    y = _resblocks(y, sd, "transformer.resblocks.", t["layers"], t["heads"], causal=True)
    y = F.layer_norm(y, (t["width"],), sd["ln_final.weight"], sd["ln_final.bias"])
    text = y[torch.arange(y.shape[0]), tokens.argmax(dim=-1)] @ sd["text_projection"]
    return F.normalize(image, dim=-1), F.normalize(text, dim=-1)
