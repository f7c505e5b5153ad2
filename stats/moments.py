"""Streaming first-to-fourth moments of embeddings in float64, with an exact merge (Chan et al.).

A `Moments` holds, for `n` vectors x_k in R^D with mean mu:

    m2    = sum_k (x_k - mu)(x_k - mu)^T          [D, D]   (the scatter matrix)
    m3    = sum_k ||x_k - mu||^2 (x_k - mu)        [D]
    q4    = sum_k ||x_k - mu||^4                   scalar

`m2` gives the sample covariance; `m3` and `q4` are what the Ledoit-Wolf shrinkage intensity needs
(see `ovi_stats.shrinkage`), so the shrinkage is streaming and mergeable too. Merging two partial
results shifts each to the combined mean (formulas below) and adds them; it is exact up to float64
rounding, so shards merged equal the whole.

Shifting a partial result from its own mean mu_A to another point mu, with d = mu_A - mu and
c = ||d||^2 (uses sum_k (x_k - mu_A) = 0):

    m2' = m2 + n d d^T
    m3' = m3 + tr(m2) d + 2 m2 d + n c d
    q4' = q4 + 4 d^T m2 d + 4 d.m3 + 2 c tr(m2) + n c^2
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Moments:
    """Count, mean and central moments (see the module docstring), all float64.

    The arrays are numpy arrays, or torch tensors (`to_torch`) so that a builder can fold batches
    on the encoder's device; every operation below is written to work on both.
    """

    n: int
    mean: Any  # [D]
    m2: Any  # [D, D]
    m3: Any  # [D]
    q4: Any  # scalar (float, or a 0-d tensor)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def empty(cls, dim: int) -> Moments:
        return cls(0, np.zeros(dim), np.zeros((dim, dim)), np.zeros(dim), 0.0)

    def covariance(self):
        """Plain sample covariance, denominator n - 1 (numpy's `np.cov` default); zeros when n < 2."""
        if self.n < 2:
            return self.m2 * 0.0
        return self.m2 / (self.n - 1)

    def shifted(self, mu) -> Moments:
        """The same vectors' moments about `mu` instead of their own mean (mean field unchanged)."""
        d = self.mean - mu
        c = (d * d).sum()
        tr = self.m2.diagonal().sum()
        m2d = self.m2 @ d
        m2 = self.m2 + self.n * (d[:, None] * d[None, :])
        m3 = self.m3 + tr * d + 2.0 * m2d + self.n * c * d
        q4 = self.q4 + 4.0 * (d * m2d).sum() + 4.0 * (d * self.m3).sum() + 2.0 * c * tr + self.n * c * c
        return Moments(self.n, self.mean, m2, m3, q4)

    def merge(self, other: Moments) -> Moments:
        """Moments of the union of both sets of vectors."""
        return merge_moments(self, other)

    def update(self, batch) -> Moments:
        """Moments after adding the rows of `batch` [B, D]."""
        return merge_moments(self, batch_moments(batch))

    def to_numpy(self) -> Moments:
        def conv(a):
            return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a, dtype=np.float64)

        return Moments(self.n, conv(self.mean), conv(self.m2), conv(self.m3), float(self.q4))

    def to_torch(self, device) -> Moments:
        import torch

        def conv(a):
            return torch.as_tensor(a, dtype=torch.float64).to(device)

        return Moments(self.n, conv(self.mean), conv(self.m2), conv(self.m3), conv(self.q4))


def batch_moments(x) -> Moments:
    """Moments of the rows of `x` [B, D] (numpy array or torch tensor), computed directly in float64."""
    if hasattr(x, "detach"):
        import torch

        x = x.detach().to(torch.float64)
    else:
        x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a [B, D] array, got shape {tuple(x.shape)}")
    n, dim = x.shape
    if n == 0:
        return Moments.empty(dim)
    mean = x.mean(0)
    y = x - mean
    sq = (y * y).sum(1)
    return Moments(int(n), mean, y.T @ y, sq @ y, (sq * sq).sum())


def merge_moments(a: Moments, b: Moments) -> Moments:
    """Chan's parallel combination, extended to the third and fourth terms above."""
    if a.dim != b.dim:
        raise ValueError(f"cannot merge moments of dimension {a.dim} and {b.dim}")
    if b.n == 0:
        return a
    if a.n == 0:
        return b
    n = a.n + b.n
    mean = a.mean + (b.mean - a.mean) * (b.n / n)
    sa, sb = a.shifted(mean), b.shifted(mean)
    return Moments(n, mean, sa.m2 + sb.m2, sa.m3 + sb.m3, sa.q4 + sb.q4)
