"""The OVI forward pass: learnable pseudo-tokens through a frozen CLIP vision tower.

Pure functions over tensors. The vision tower's parts are passed in explicitly, so these
functions work on any transformers `CLIPVisionModelWithProjection` (or look-alike).
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def init_pseudo_tokens(
    batch: int, tokens: int, width: int, seeds: list[int], std: float = 0.02
) -> Tensor:
    """`[batch, tokens, width]` pseudo-tokens ~ normal(0, std), row i drawn from `seeds[i]`.

    Each prompt has its own generator, so a prompt's start does not depend on its batch.
    """
    if len(seeds) != batch:
        raise ValueError(f"need one seed per prompt: got {len(seeds)} seeds for {batch} prompts")
    rows = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed))
        rows.append(torch.randn(tokens, width, generator=gen) * std)
    return torch.stack(rows)


def expand_tokens(tokens: Tensor, positions: int) -> Tensor:
    """Resize `[B, P, D]` tokens to `[B, positions, D]` by nearest interpolation on the token axis.

    Position i takes token floor(i * P / positions): each token fills a contiguous block.
    """
    if tokens.dim() != 3:
        raise ValueError(f"pseudo-tokens must be [batch, tokens, width], got {tuple(tokens.shape)}")
    return F.interpolate(tokens.transpose(1, 2), size=positions, mode="nearest").transpose(1, 2)


def token_embeddings(tokens: Tensor, class_embedding: Tensor, position_embedding: Tensor) -> Tensor:
    """The vision transformer's input sequence built from pseudo-tokens instead of patches.

    `position_embedding` is `[N + 1, D]` (class position first); the tokens are spread over the N
    patch positions, the real class embedding is prepended and the positions are added.
    """
    batch, _, width = tokens.shape
    patches = expand_tokens(tokens, position_embedding.shape[0] - 1)
    cls = class_embedding.to(patches.dtype).reshape(1, 1, width).expand(batch, 1, width)
    return torch.cat([cls, patches], dim=1) + position_embedding.to(patches.dtype).unsqueeze(0)


def vision_tower_parts(model) -> tuple[Tensor, Tensor, Callable, Callable, Callable, Callable]:
    """Pick the pieces of a transformers CLIPVisionModelWithProjection that OVI drives."""
    vm = model.vision_model
    return (
        vm.embeddings.class_embedding,
        vm.embeddings.position_embedding.weight,
        vm.pre_layrnorm,
        vm.encoder,
        vm.post_layernorm,
        model.visual_projection,
    )


def encode_pseudo_tokens(model, tokens: Tensor, *, cls_only_last: bool = True) -> Tensor:
    """Image embeddings `[B, projection_dim]` (raw, unnormalised) of `[B, P, D]` pseudo-tokens.

    Skips the patch convolution: class embedding + positions, pre-LN, all encoder layers,
    post-LN on the class token, visual projection.

    Only the class token's output is used, so in the *last* encoder layer the query, the output
    projection and the MLP are computed for that one position (keys and values still see every
    position). The result is the same as the full forward (`cls_only_last=False`, the plain
    transformers encoder call) up to float rounding; it saves most of one layer's work.
    """
    cls, pos, pre_ln, encoder, post_ln, proj = vision_tower_parts(model)
    hidden = pre_ln(token_embeddings(tokens, cls, pos))
    layers = getattr(encoder, "layers", None)
    if cls_only_last and layers is not None and len(layers) > 0 and _has_clip_layer_layout(layers[-1]):
        for layer in layers[:-1]:
            hidden = _call_layer(layer, hidden)
        first = _last_layer_class_token(layers[-1], hidden)
    else:
        out = encoder(inputs_embeds=hidden)
        last = out[0] if isinstance(out, tuple) else out.last_hidden_state
        first = last[:, 0, :]
    return proj(post_ln(first))


def _has_clip_layer_layout(layer) -> bool:
    attn = getattr(layer, "self_attn", None)
    need_attn = ("q_proj", "k_proj", "v_proj", "out_proj", "num_heads", "head_dim", "scale")
    return (
        attn is not None
        and all(hasattr(attn, n) for n in need_attn)
        and all(hasattr(layer, n) for n in ("layer_norm1", "layer_norm2", "mlp"))
        and not layer.training
    )


_WANTS_CAUSAL_MASK: dict[type, bool] = {}


def _call_layer(layer, hidden: Tensor) -> Tensor:
    """One transformers CLIPEncoderLayer; 4.x wants a causal-mask argument and returns a tuple."""
    kind = type(layer)
    if kind not in _WANTS_CAUSAL_MASK:
        import inspect

        _WANTS_CAUSAL_MASK[kind] = "causal_attention_mask" in inspect.signature(layer.forward).parameters
    out = layer(hidden, None, None) if _WANTS_CAUSAL_MASK[kind] else layer(hidden, None)
    return out[0] if isinstance(out, tuple) else out


def _last_layer_class_token(layer, hidden: Tensor) -> Tensor:
    """`[B, D]`: a CLIP encoder layer's output at position 0 only (pre-LN block, SDPA attention)."""
    attn = layer.self_attn
    batch, length, width = hidden.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    x = layer.layer_norm1(hidden)
    q = attn.q_proj(x[:, :1]).view(batch, 1, heads, head_dim).transpose(1, 2)
    k = attn.k_proj(x).view(batch, length, heads, head_dim).transpose(1, 2)
    v = attn.v_proj(x).view(batch, length, heads, head_dim).transpose(1, 2)
    o = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
    o = o.transpose(1, 2).reshape(batch, 1, width)
    c = hidden[:, :1] + attn.out_proj(o)
    c = c + layer.mlp(layer.layer_norm2(c))
    return c[:, 0]


# ---- the tower OVI's loop runs through ----------------------------------------------------------
_LOWP_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def lowp_linear_copy(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of a frozen `model` whose `nn.Linear` weights and biases are cast to `dtype` once.

    Every other parameter (LayerNorms, embeddings: float32 on a CPU, where autocast needs them so)
    is *shared* with `model`, not copied; buffers are copied. Under autocast in `dtype` the copy
    computes exactly what `model` computes (autocast would cast the same weights the same way,
    round to nearest even, on every call), without re-casting them every step.
    """
    memo: dict[int, object] = {}
    for mod in model.modules():
        for p in mod.parameters(recurse=False):
            if isinstance(mod, torch.nn.Linear):
                memo[id(p)] = torch.nn.Parameter(p.detach().to(dtype), requires_grad=False)
            else:
                memo[id(p)] = p
    return copy.deepcopy(model, memo)


def ovi_tower(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """The vision tower for OVI's loop at compute dtype `dtype`.

    `model` itself for float32 or when its Linear weights already are in `dtype` (CUDA loads them
    so); otherwise a copy with `dtype` Linear weights (`lowp_linear_copy`), made once per
    (model, dtype, device) and cached while `model` lives. The copy serves OVI only; other users
    of `model` (text and image encoding) are untouched.
    """
    if dtype == torch.float32 or not _floating_linear_weights_differ(model, dtype):
        return model
    device = next(model.parameters()).device
    copies = _LOWP_COPIES.setdefault(model, {})
    key = (dtype, str(device))
    tower = copies.get(key)
    if tower is None:
        copies.clear()  # a moved model: drop copies made on another device
        tower = copies[key] = lowp_linear_copy(model, dtype)
    return tower


def _floating_linear_weights_differ(model: torch.nn.Module, dtype: torch.dtype) -> bool:
    return any(isinstance(m, torch.nn.Linear) and m.weight.dtype != dtype for m in model.modules())


def ovi_forward(model: torch.nn.Module, dtype: torch.dtype) -> Callable[[Tensor], Tensor]:
    """`tokens -> image embeddings` through `ovi_tower(model, dtype)` (run it under autocast)."""
    tower = ovi_tower(model, dtype)

    def forward(tokens: Tensor) -> Tensor:
        return encode_pseudo_tokens(tower, tokens)

    return forward
