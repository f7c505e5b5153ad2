"""The ECLIPSE prior network (`ECLIPSE-Community/ECLIPSE_KandinskyV22_Prior`) and its loader.

ECLIPSE is a diffusers-style `PriorTransformer` with the timestep embedding removed: 10 blocks,
16 heads x 32, `additional_embeddings` 3, the `prd` token, no time token. diffusers' own
`PriorTransformer` always adds a time token (its positional embedding has `num_embeddings +
additional_embeddings` rows with one more token, and its forward requires a timestep), so it
cannot load these weights; `EclipsePriorTransformer` below is that module, written here with the
same parameter names as the published `diffusion_pytorch_model.safetensors` (the names of
diffusers' `PriorTransformer` minus `time_proj`/`time_embedding`), loaded with `strict=True`.
One forward pass:

    tokens = [W_enc h_text (L tokens), W_proj t, W_in x, prd] + positional embedding
    mask   = text padding mask (-10000 on pads) + causal mask; 10 pre-LN transformer blocks
    e      = W_out LayerNorm(tokens)[prd]

with `t` the text embedding (`text_embeds`), `h_text` the text tower's last hidden state,
`x ~ N(0, I)` from the prompt's seed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ovi_cli import devices
from ovi_cli.encoders import Encoders
from ovi_cli.errors import OviError, first_line
from ovi_cli.hub import resolve_model_dir

ECLIPSE_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_MASK_VALUE = -10000.0  # what diffusers' and ECLIPSE's PriorTransformer put on masked positions

# The published config.json's keys (besides `_class_name`, `_diffusers_version`, `_name_or_path`).
ECLIPSE_CONFIG_KEYS = (
    "added_emb_type", "additional_embeddings", "attention_head_dim", "clip_embed_dim", "dropout",
    "embedding_dim", "embedding_proj_dim", "embedding_proj_norm_type", "encoder_hid_proj_type",
    "norm_in_type", "num_attention_heads", "num_embeddings", "num_layers",
)


# ---- the ECLIPSE module ------------------------------------------------------------------------
class _SelfAttention(nn.Module):
    """diffusers `Attention` as used by `BasicTransformerBlock` (self-attention, biased q/k/v)."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.head_dim = head_dim
        self.to_q = nn.Linear(dim, inner, bias=True)
        self.to_k = nn.Linear(dim, inner, bias=True)
        self.to_v = nn.Linear(dim, inner, bias=True)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim, bias=True), nn.Dropout(0.0)])

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        b, n, _ = x.shape

        def split(t: Tensor) -> Tensor:
            return t.view(b, n, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0 / math.sqrt(self.head_dim))
        out = out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim)
        return self.to_out[1](self.to_out[0](out))


class _GeluProj(nn.Module):
    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x))


class _FeedForward(nn.Module):
    """diffusers `FeedForward(dim, activation_fn="gelu")`: Linear(4x) -> GELU -> Linear."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.ModuleList([_GeluProj(dim, 4 * dim), nn.Dropout(dropout), nn.Linear(4 * dim, dim)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class _Block(nn.Module):
    """diffusers `BasicTransformerBlock(dim, heads, head_dim, activation_fn="gelu",
    attention_bias=True)` without cross-attention: pre-LN self-attention, pre-LN feed-forward."""

    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = _SelfAttention(dim, heads, head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = _FeedForward(dim, dropout)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = x + self.attn1(self.norm1(x), mask)
        return x + self.ff(self.norm3(x))


class EclipsePriorTransformer(nn.Module):
    """ECLIPSE's prior: diffusers' `PriorTransformer` without the timestep embedding (see module doc).

    Parameter names match the published `diffusion_pytorch_model.safetensors`.
    """

    def __init__(
        self,
        num_attention_heads: int = 16,
        attention_head_dim: int = 32,
        num_layers: int = 10,
        embedding_dim: int = 1280,
        num_embeddings: int = 77,
        additional_embeddings: int = 3,
        dropout: float = 0.0,
        norm_in_type: str | None = None,
        embedding_proj_norm_type: str | None = None,
        encoder_hid_proj_type: str | None = "linear",
        added_emb_type: str | None = "prd",
        embedding_proj_dim: int | None = None,
        clip_embed_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.config = {
            "num_attention_heads": num_attention_heads, "attention_head_dim": attention_head_dim,
            "num_layers": num_layers, "embedding_dim": embedding_dim, "num_embeddings": num_embeddings,
            "additional_embeddings": additional_embeddings, "dropout": dropout, "norm_in_type": norm_in_type,
            "embedding_proj_norm_type": embedding_proj_norm_type, "encoder_hid_proj_type": encoder_hid_proj_type,
            "added_emb_type": added_emb_type, "embedding_proj_dim": embedding_proj_dim,
            "clip_embed_dim": clip_embed_dim,
        }
        inner = num_attention_heads * attention_head_dim
        proj_dim = embedding_proj_dim or embedding_dim
        clip_dim = clip_embed_dim or embedding_dim
        self.heads = num_attention_heads
        self.num_embeddings = num_embeddings
        self.additional_embeddings = additional_embeddings
        self.embedding_dim = embedding_dim

        self.proj_in = nn.Linear(embedding_dim, inner)
        self.embedding_proj_norm = _norm_or_none(embedding_proj_norm_type, proj_dim, "embedding_proj_norm_type")
        self.embedding_proj = nn.Linear(proj_dim, inner)
        if encoder_hid_proj_type == "linear":
            self.encoder_hidden_states_proj: nn.Linear | None = nn.Linear(embedding_dim, inner)
        elif encoder_hid_proj_type is None:
            self.encoder_hidden_states_proj = None
        else:
            raise OviError(f"ECLIPSE prior config: unsupported encoder_hid_proj_type {encoder_hid_proj_type!r}")
        self.positional_embedding = nn.Parameter(torch.zeros(1, num_embeddings + additional_embeddings, inner))
        if added_emb_type == "prd":
            self.prd_embedding: nn.Parameter | None = nn.Parameter(torch.zeros(1, 1, inner))
        elif added_emb_type is None:
            self.prd_embedding = None
        else:
            raise OviError(f"ECLIPSE prior config: unsupported added_emb_type {added_emb_type!r}")
        self.transformer_blocks = nn.ModuleList(
            [_Block(inner, num_attention_heads, attention_head_dim, dropout) for _ in range(num_layers)]
        )
        self.norm_in = _norm_or_none(norm_in_type, inner, "norm_in_type")
        self.norm_out = nn.LayerNorm(inner)
        self.proj_to_clip_embeddings = nn.Linear(inner, clip_dim)
        length = num_embeddings + additional_embeddings
        causal = torch.full((length, length), _MASK_VALUE).triu_(1)
        self.register_buffer("causal_attention_mask", causal[None], persistent=False)
        # Present in the checkpoint; ECLIPSE's pipeline does not apply them to its output.
        self.clip_mean = nn.Parameter(torch.zeros(1, clip_dim))
        self.clip_std = nn.Parameter(torch.zeros(1, clip_dim))

    def forward(
        self,
        hidden_states: Tensor,
        proj_embedding: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        """`[B, D]` image embeddings from noise `[B, D]`, text embeds `[B, D]`, hidden states `[B, L, D]`."""
        b = hidden_states.shape[0]
        if self.embedding_proj_norm is not None:
            proj_embedding = self.embedding_proj_norm(proj_embedding)
        parts = []
        if self.encoder_hidden_states_proj is not None:
            if encoder_hidden_states is None:
                raise ValueError("this ECLIPSE prior needs encoder_hidden_states")
            parts.append(self.encoder_hidden_states_proj(encoder_hidden_states))
        parts.append(self.embedding_proj(proj_embedding)[:, None, :])
        parts.append(self.proj_in(hidden_states)[:, None, :])
        if self.prd_embedding is not None:
            parts.append(self.prd_embedding.to(hidden_states.dtype).expand(b, -1, -1))
        tokens = torch.cat(parts, dim=1)
        if tokens.shape[1] != self.positional_embedding.shape[1]:
            raise ValueError(f"ECLIPSE prior: {tokens.shape[1]} tokens for {self.positional_embedding.shape[1]} "
                             "positions (the text must have num_embeddings tokens)")
        tokens = tokens + self.positional_embedding.to(tokens.dtype)

        mask = None
        if attention_mask is not None:
            mask = (1.0 - attention_mask.to(tokens.dtype)) * _MASK_VALUE
            mask = F.pad(mask, (0, self.additional_embeddings), value=0.0)
            mask = (mask[:, None, :] + self.causal_attention_mask.to(tokens.dtype))[:, None]  # [B, 1, N, N]
        if self.norm_in is not None:
            tokens = self.norm_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, mask)
        tokens = self.norm_out(tokens)
        # the prd token when there is one, else the noise token: the last one either way
        return self.proj_to_clip_embeddings(tokens[:, -1])




def _norm_or_none(kind: str | None, dim: int, key: str) -> nn.LayerNorm | None:
    if kind is None:
        return None
    if kind == "layer":
        return nn.LayerNorm(dim)
    raise OviError(f"ECLIPSE prior config: unsupported {key} {kind!r}")


def find_eclipse_files(root: Path) -> tuple[Path, Path]:
    """(config.json, weights) in an ECLIPSE repo folder: at its root (the hub layout) or in `prior/`."""
    for folder in (root, root / "prior"):
        config = folder / "config.json"
        if config.is_file():
            for name in ECLIPSE_WEIGHTS:
                if (folder / name).is_file():
                    return config, folder / name
            raise OviError(f"ECLIPSE prior folder {str(folder)!r} has config.json but no "
                           f"{' or '.join(ECLIPSE_WEIGHTS)}")
    raise OviError(f"ECLIPSE prior model {str(root)!r} has no config.json (expected the layout of "
                   "ECLIPSE-Community/ECLIPSE_KandinskyV22_Prior: config.json + diffusion_pytorch_model.safetensors)")


def load_eclipse_prior(source: str, device: torch.device, dtype: torch.dtype) -> EclipsePriorTransformer:
    """Load ECLIPSE's prior from a hub id or a folder in the published layout."""
    root = resolve_model_dir(source, what="ECLIPSE prior", flag="--option eclipse.model")
    config_path, weights_path = find_eclipse_files(root)
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OviError(f"cannot read ECLIPSE prior config {str(config_path)!r}: {exc}") from exc
    if not isinstance(config, dict):
        raise OviError(f"ECLIPSE prior config {str(config_path)!r} is not a JSON object")
    if "time_embed_dim" in config or "time_embed_act_fn" in config:
        raise OviError(f"{source!r} is a diffusion PriorTransformer with a timestep embedding, not ECLIPSE "
                       "(use --prior kandinsky for the Kandinsky 2.2 prior)")
    kwargs = {k: config[k] for k in ECLIPSE_CONFIG_KEYS if k in config}
    model = EclipsePriorTransformer(**kwargs)
    try:
        if weights_path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(weights_path))
        else:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except (OSError, RuntimeError, ValueError) as exc:
        reason = first_line(exc, with_type=False)
        raise OviError(f"cannot load ECLIPSE prior weights from {source!r}: {reason}") from exc
    return model.to(device, devices.weight_dtype(device, dtype)).eval().requires_grad_(False)


def check_text_fits(model: EclipsePriorTransformer, encoders: Encoders, hidden: int, length: int) -> None:
    """The prior was trained on one text tower: its widths and token count must match ours."""
    emb = encoders.embed_dim
    if emb != model.embedding_dim or (model.encoder_hidden_states_proj is not None and hidden != model.embedding_dim):
        raise OviError(
            f"the ECLIPSE prior expects {model.embedding_dim}-d text embeddings and hidden states, but the "
            f"encoder gives {emb}-d embeddings and {hidden}-d hidden states (use the ViT-bigG-14 encoders "
            "of kandinsky-community/kandinsky-2-2-prior)"
        )
    if model.encoder_hidden_states_proj is not None and length != model.num_embeddings:
        raise OviError(f"the ECLIPSE prior expects {model.num_embeddings} text tokens, the encoder's tokenizer "
                       f"pads to {length}")


def seeded_normal(seeds: list[int], dim: int) -> Tensor:
    """`[B, dim]` float32 standard normal rows, row b from a CPU generator seeded with `seeds[b]`."""
    rows = [torch.randn(1, dim, generator=torch.Generator("cpu").manual_seed(int(s))) for s in seeds]
    return torch.cat(rows)
