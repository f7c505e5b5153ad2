"""OVI's objective, as pure functions."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine similarity of `[B, D]` tensors, computed in float32."""
    return F.cosine_similarity(a.float(), b.float(), dim=-1)


def mahalanobis_sq(embeds: Tensor, mean: Tensor, chol: Tensor) -> Tensor:
    """Squared Mahalanobis distance `(e - mu)^T P (e - mu)` per row, with `P = L L^T`.

    `embeds` `[B, D]`, `mean` `[D]`, `chol` the lower-triangular `L` `[D, D]`. Computed as
    `||L^T (e - mu)||^2` (one matrix product, no inversion), in the dtype of `chol`; the result
    has that dtype too.
    """
    diff = embeds.to(chol.dtype) - mean.to(chol.dtype)
    z = diff @ chol  # row b: (L^T (e_b - mu))^T
    return (z * z).sum(dim=-1)


def nn_term(embeds: Tensor, neighbours: Tensor) -> Tensor:
    """`mean_k (1 - cos(e_b, n_bk))` per row: `embeds` `[B, D]`, `neighbours` `[B, K, D]`.

    Float32; the neighbours are constants (detach them before calling).
    """
    return (1.0 - cosine(embeds.unsqueeze(1), neighbours)).mean(dim=-1)
