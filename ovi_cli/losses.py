"""OVI's objective, as pure functions."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine similarity of `[B, D]` tensors, computed in float32."""
    return F.cosine_similarity(a.float(), b.float(), dim=-1)


def ovi_loss(embeds: Tensor, target: Tensor) -> Tensor:
    """`L_OVI = 1 - cos(f_I(p), f_T(t))`, one value per prompt."""
    return 1.0 - cosine(embeds, target)
