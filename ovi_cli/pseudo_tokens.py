"""The OVI forward pass: learnable pseudo-tokens through a frozen CLIP vision tower.

Pure functions over tensors. The vision tower's parts are passed in explicitly, so these
functions work on any transformers `CLIPVisionModelWithProjection` (or look-alike).
"""

from __future__ import annotations

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


def encode_pseudo_tokens(model, tokens: Tensor) -> Tensor:
    """Image embeddings `[B, projection_dim]` (raw, unnormalised) of `[B, P, D]` pseudo-tokens.

    Skips the patch convolution: class embedding + positions, pre-LN, all encoder layers,
    post-LN on the class token, visual projection.
    """
    cls, pos, pre_ln, encoder, post_ln, proj = vision_tower_parts(model)
    hidden = pre_ln(token_embeddings(tokens, cls, pos))
    out = encoder(inputs_embeds=hidden)
    last = out[0] if isinstance(out, tuple) else out.last_hidden_state
    return proj(post_ln(last[:, 0, :]))
