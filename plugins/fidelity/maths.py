"""The set-level maths ovi writes itself: the Frechet distance from moments, its bootstrap interval.

Everything else (FID and KID on feature vectors, precision/recall/density/coverage) comes from the
maintained libraries (torchmetrics, prdc) in `ovi_plugins.fidelity.metrics`; this module covers
only what no library offers: the Frechet distance against a statistics store's stored float64
moments (no vectors), and a bootstrap over the generated set that reuses the reference's square
root. Pure numpy, typed, no I/O.

Frechet distance (Heusel et al. 2017; Dowson & Landau 1982) between N(mu1, S1) and N(mu2, S2):

    ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2))

`Tr((S1 S2)^(1/2))` is computed as the sum of the square roots of the eigenvalues of the symmetric
positive semi-definite `S2^(1/2) S1 S2^(1/2)` (same eigenvalues as `S1 S2`), so a bootstrap that
keeps S2 fixed factors S2 once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def mean_cov(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean `[D]` and sample covariance `[D, D]` (denominator N - 1), float64: torchmetrics' convention."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors [N, D] for a covariance, got shape {x.shape}")
    mu = x.mean(axis=0)
    xc = x - mu
    return mu, (xc.T @ xc) / (x.shape[0] - 1)


def psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (negative eigenvalues cut at 0)."""
    c = np.asarray(cov, dtype=np.float64)
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray,
                     sqrt_cov2: np.ndarray | None = None) -> float:
    """Frechet distance between N(mu1, cov1) and N(mu2, cov2); `sqrt_cov2` = `psd_sqrt(cov2)` if at hand."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    c1, c2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    if mu1.shape != mu2.shape or c1.shape != c2.shape or c1.shape != (mu1.shape[0], mu1.shape[0]):
        raise ValueError(f"moments of different dimensions: {mu1.shape}, {c1.shape} vs {mu2.shape}, {c2.shape}")
    s2 = psd_sqrt(c2) if sqrt_cov2 is None else sqrt_cov2
    middle = s2 @ c1 @ s2
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(c1) + np.trace(c2) - 2.0 * trace_sqrt)


@dataclass
class Interval:
    low: float
    high: float
    std: float
    resamples: int


def bootstrap_fd(features: np.ndarray, mu_ref: np.ndarray, cov_ref: np.ndarray, *, resamples: int = 100,
                 level: float = 0.95, seed: int = 0, value: float | None = None) -> Interval:
    """Bootstrap interval of the FD: the generated set resampled with replacement, the reference kept
    fixed (its moments are the target, and may be all there is of it).

    A resample repeats images, which shrinks its spread and raises its FD, so the plain percentile
    interval lies above the estimate; it is shifted down by the bootstrap's own bias estimate
    (mean of the resamples minus `value`, the FD of the full set) and cut at 0.
    """
    x = np.asarray(features, dtype=np.float64)
    if resamples < 2:
        raise ValueError("a bootstrap needs at least 2 resamples")
    rng = np.random.default_rng(seed)
    s2 = psd_sqrt(cov_ref)
    values = np.empty(resamples)
    for b in range(resamples):
        mu, cov = mean_cov(x[rng.integers(0, len(x), len(x))])
        values[b] = frechet_distance(mu, cov, mu_ref, cov_ref, sqrt_cov2=s2)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    if value is None:
        value = frechet_distance(*mean_cov(x), mu_ref, cov_ref, sqrt_cov2=s2)
    bias = float(values.mean()) - value
    return Interval(max(0.0, float(low) - bias), max(0.0, float(high) - bias), float(values.std(ddof=1)), resamples)


def gaussian_fd(mu1: np.ndarray, var1: np.ndarray, mu2: np.ndarray, var2: np.ndarray) -> float:
    """The closed form for diagonal covariances: ||mu1 - mu2||^2 + sum (sqrt(v1) - sqrt(v2))^2."""
    d = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    return float(d @ d + ((np.sqrt(np.asarray(var1, np.float64)) - np.sqrt(np.asarray(var2, np.float64))) ** 2).sum())


def modality_gap(text: np.ndarray, image: np.ndarray) -> dict[str, float]:
    """Liang et al. 2022: the cosine of the mean L2-normalised text and image embeddings, and the
    distance between those means (cosine 1, distance 0: no gap)."""
    t = np.asarray(text, np.float64)
    i = np.asarray(image, np.float64)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    i = i / np.linalg.norm(i, axis=1, keepdims=True)
    mt, mi = t.mean(axis=0), i.mean(axis=0)
    cos = float(mt @ mi / (np.linalg.norm(mt) * np.linalg.norm(mi)))
    return {"cosine_of_means": cos, "distance_of_means": float(np.linalg.norm(mt - mi))}
