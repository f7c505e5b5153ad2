"""Ledoit-Wolf shrinkage of the covariance and the Cholesky factor of its inverse (float64).

The Mahalanobis constraint needs Sigma^-1 of 1280-d CLIP embeddings, and the plain sample
covariance of a few thousand images is ill-conditioned or singular. We use the Ledoit-Wolf
(2004) estimator towards a scaled identity:

    Sigma_s = (1 - s) S + s m I,     m = tr(S) / D

with S the plain sample covariance (denominator n - 1) and the intensity s from Ledoit-Wolf's
formula, written (as in scikit-learn's `ledoit_wolf_shrinkage`) over the centred data X [n, D]:

    e     = X^T X / n                   (biased covariance),  mu = tr(e) / D
    delta = (||e||_F^2 - 2 mu tr(e) + D mu^2) / D  = ||e - mu I||_F^2 / D
    beta  = (sum_k ||x_k||^4 / n - ||e||_F^2) / (D n)
    s     = min(beta, delta) / delta   (0 when beta = 0)

Every term comes from the streaming `Moments` (n, m2 = X^T X, q4 = sum_k ||x_k||^4), so no second
pass over the data is needed and merged shards give the same s as the whole.

The factor stored for the constraint is the lower-triangular L with L L^T = Sigma_s^-1, so that
(e - mu)^T Sigma_s^-1 (e - mu) = ||L^T (e - mu)||^2.
"""

from __future__ import annotations

import numpy as np
import torch

from ovi_stats.moments import Moments


def ledoit_wolf_intensity(m: Moments) -> float:
    """The Ledoit-Wolf shrinkage intensity s in [0, 1] (1.0 when fewer than 2 vectors)."""
    if m.n < 2:
        return 1.0
    n, dim = m.n, m.dim
    emp = m.m2 / n
    tr = float(np.trace(emp))
    mu = tr / dim
    delta_ = float(np.sum(emp * emp))
    beta = (m.q4 / n - delta_) / (dim * n)
    delta = (delta_ - 2.0 * mu * tr + dim * mu * mu) / dim
    beta = min(beta, delta)
    if beta <= 0.0 or delta <= 0.0:
        return 0.0
    return float(beta / delta)


def shrunk_covariance(cov: np.ndarray, s: float) -> np.ndarray:
    """(1 - s) cov + s (tr(cov) / D) I."""
    dim = cov.shape[0]
    target = float(np.trace(cov)) / dim
    return (1.0 - s) * cov + s * target * np.eye(dim)


def precision_cholesky(cov: np.ndarray) -> torch.Tensor:
    """Lower-triangular L (float64) with L L^T = cov^-1; raises `torch.linalg.LinAlgError` if not SPD."""
    c = torch.as_tensor(cov, dtype=torch.float64)
    c = 0.5 * (c + c.T)
    chol = torch.linalg.cholesky(c)
    prec = torch.cholesky_inverse(chol)
    prec = 0.5 * (prec + prec.T)
    return torch.linalg.cholesky(prec)


def well_conditioned(m: Moments) -> tuple[float, torch.Tensor]:
    """(shrinkage used, precision Cholesky factor) for the moments' covariance.

    Uses the Ledoit-Wolf intensity; if the shrunk matrix is still not numerically positive
    definite (e.g. all vectors identical up to rounding), the intensity is raised until it is.
    A set whose covariance has zero trace has no usable precision: ValueError.
    """
    cov = m.covariance()
    if not np.isfinite(cov).all() or float(np.trace(cov)) <= 0.0:
        raise ValueError("the embeddings have zero variance: no covariance to invert")
    s = ledoit_wolf_intensity(m)
    for _ in range(12):
        try:
            return s, precision_cholesky(shrunk_covariance(cov, s))
        except torch.linalg.LinAlgError:
            s = min(1.0, max(s * 10.0, 1e-8))
    return 1.0, precision_cholesky(shrunk_covariance(cov, 1.0))
