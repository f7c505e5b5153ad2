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


# ---- ImageReward (THUDM/ImageReward): ImageReward.pt + med_config.json -----------------------------
IR_VISION = {"width": 32, "layers": 2, "heads": 4, "patch": 8, "image": 32, "mlp": 64}
IR_TEXT = {"width": 24, "layers": 2, "heads": 4, "mlp": 48, "positions": 64}


def _r(g: torch.Generator, *shape: int, scale: float = 0.2) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=g)


def _ln(sd: dict, name: str, width: int, g: torch.Generator) -> None:
    sd[name + ".weight"] = 1 + _r(g, width, scale=0.1)
    sd[name + ".bias"] = _r(g, width, scale=0.1)


def _lin(sd: dict, name: str, out: int, inp: int, g: torch.Generator) -> None:
    sd[name + ".weight"] = _r(g, out, inp)
    sd[name + ".bias"] = _r(g, out, scale=0.1)


def imagereward_state_dict(vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    v, t = IR_VISION, IR_TEXT
    grid = v["image"] // v["patch"]
    sd: dict[str, torch.Tensor] = {}
    p = "blip.visual_encoder."
    sd[p + "cls_token"] = _r(g, 1, 1, v["width"], scale=1.0)
    sd[p + "pos_embed"] = _r(g, 1, grid * grid + 1, v["width"], scale=0.5)
    sd[p + "patch_embed.proj.weight"] = _r(g, v["width"], 3, v["patch"], v["patch"])
    sd[p + "patch_embed.proj.bias"] = _r(g, v["width"], scale=0.1)
    for i in range(v["layers"]):
        b = f"{p}blocks.{i}."
        _ln(sd, b + "norm1", v["width"], g)
        _ln(sd, b + "norm2", v["width"], g)
        _lin(sd, b + "attn.qkv", 3 * v["width"], v["width"], g)
        _lin(sd, b + "attn.proj", v["width"], v["width"], g)
        _lin(sd, b + "mlp.fc1", v["mlp"], v["width"], g)
        _lin(sd, b + "mlp.fc2", v["width"], v["mlp"], g)
    _ln(sd, p + "norm", v["width"], g)
    p = "blip.text_encoder."
    sd[p + "embeddings.word_embeddings.weight"] = _r(g, vocab, t["width"], scale=1.0)
    sd[p + "embeddings.position_embeddings.weight"] = _r(g, t["positions"], t["width"], scale=0.5)
    _ln(sd, p + "embeddings.LayerNorm", t["width"], g)
    for i in range(t["layers"]):
        b = f"{p}encoder.layer.{i}."
        for part, kv_width in (("attention", t["width"]), ("crossattention", v["width"])):
            _lin(sd, b + part + ".self.query", t["width"], t["width"], g)
            _lin(sd, b + part + ".self.key", t["width"], kv_width, g)
            _lin(sd, b + part + ".self.value", t["width"], kv_width, g)
            _lin(sd, b + part + ".output.dense", t["width"], t["width"], g)
            _ln(sd, b + part + ".output.LayerNorm", t["width"], g)
        _lin(sd, b + "intermediate.dense", t["mlp"], t["width"], g)
        _lin(sd, b + "output.dense", t["width"], t["mlp"], g)
        _ln(sd, b + "output.LayerNorm", t["width"], g)
    sizes = [t["width"], 1024, 128, 64, 16, 1]
    for idx, (i, o) in zip((0, 2, 4, 6, 7), zip(sizes, sizes[1:])):
        _lin(sd, f"mlp.layers.{idx}", o, i, g)
    sd["blip.vision_proj.weight"] = _r(g, 8, v["width"])  # other BLIP parts the checkpoint holds, unused
    return sd


def make_imagereward_repo(root: Path, vocab: int, seed: int = 0) -> Path:
    import json

    root.mkdir(parents=True, exist_ok=True)
    torch.save(imagereward_state_dict(vocab, seed), root / "ImageReward.pt")
    t = IR_TEXT
    (root / "med_config.json").write_text(json.dumps({
        "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "hidden_size": t["width"], "initializer_range": 0.02,
        "intermediate_size": t["mlp"], "layer_norm_eps": 1e-12, "max_position_embeddings": t["positions"],
        "model_type": "bert", "num_attention_heads": t["heads"], "num_hidden_layers": t["layers"],
        "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": vocab, "encoder_width": IR_VISION["width"],
        "add_cross_attention": True}))
    return root


def _attention(q_in, kv_in, sd, p, heads, mask=None):
    q = F.linear(q_in, sd[p + "query.weight"], sd[p + "query.bias"])
    k = F.linear(kv_in, sd[p + "key.weight"], sd[p + "key.bias"])
    v = F.linear(kv_in, sd[p + "value.weight"], sd[p + "value.bias"])
    b, n, w = q.shape
    d = w // heads

    def split(x):
        return x.view(b, x.shape[1], heads, d).transpose(1, 2)

    scores = split(q) @ split(k).transpose(-1, -2) / d ** 0.5
    if mask is not None:
        scores = scores + (1.0 - mask[:, None, None, :].float()) * -10000.0
    return (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(b, n, w)


@torch.no_grad()
def imagereward_reward(sd: dict, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """ImageReward.score written out: BLIP's ViT (vit.py), med.py's BERT with cross-attention, the MLP, the norm."""
    v, t = IR_VISION, IR_TEXT
    p = "blip.visual_encoder."
    x = F.conv2d(pixels, sd[p + "patch_embed.proj.weight"], sd[p + "patch_embed.proj.bias"], stride=v["patch"])
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd[p + "cls_token"].expand(x.shape[0], -1, -1), x], dim=1) + sd[p + "pos_embed"]
    for i in range(v["layers"]):
        b = f"{p}blocks.{i}."
        h = F.layer_norm(x, (v["width"],), sd[b + "norm1.weight"], sd[b + "norm1.bias"], eps=1e-6)
        qkv = F.linear(h, sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"])
        n, d = x.shape[1], v["width"] // v["heads"]
        qkv = qkv.reshape(x.shape[0], n, 3, v["heads"], d).permute(2, 0, 3, 1, 4)
        att = (qkv[0] @ qkv[1].transpose(-2, -1) * d ** -0.5).softmax(-1)
        h = (att @ qkv[2]).transpose(1, 2).reshape(x.shape[0], n, v["width"])
        x = x + F.linear(h, sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"])
        h = F.layer_norm(x, (v["width"],), sd[b + "norm2.weight"], sd[b + "norm2.bias"], eps=1e-6)
        x = x + F.linear(F.gelu(F.linear(h, sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"])),
                         sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"])
    image = F.layer_norm(x, (v["width"],), sd[p + "norm.weight"], sd[p + "norm.bias"], eps=1e-6)
    p = "blip.text_encoder."
    w = t["width"]

    def ln(y, name):
        return F.layer_norm(y, (w,), sd[name + ".weight"], sd[name + ".bias"], eps=1e-12)

    y = sd[p + "embeddings.word_embeddings.weight"][ids] + sd[p + "embeddings.position_embeddings.weight"][
        : ids.shape[1]]
    y = ln(y, p + "embeddings.LayerNorm")
    for i in range(t["layers"]):
        b = f"{p}encoder.layer.{i}."
        a = _attention(y, y, sd, b + "attention.self.", t["heads"], mask)
        y = ln(F.linear(a, sd[b + "attention.output.dense.weight"], sd[b + "attention.output.dense.bias"]) + y,
               b + "attention.output.LayerNorm")
        a = _attention(y, image, sd, b + "crossattention.self.", t["heads"])
        y = ln(F.linear(a, sd[b + "crossattention.output.dense.weight"], sd[b + "crossattention.output.dense.bias"])
               + y, b + "crossattention.output.LayerNorm")
        h = F.gelu(F.linear(y, sd[b + "intermediate.dense.weight"], sd[b + "intermediate.dense.bias"]))
        y = ln(F.linear(h, sd[b + "output.dense.weight"], sd[b + "output.dense.bias"]) + y, b + "output.LayerNorm")
    r = y[:, 0]
    for idx in (0, 2, 4, 6, 7):
        r = F.linear(r, sd[f"mlp.layers.{idx}.weight"], sd[f"mlp.layers.{idx}.bias"])
    return (r.squeeze(-1) - 0.16717362830052426) / 1.0333394966054072
