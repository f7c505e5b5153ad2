"""Streaming moments, exact merge, Ledoit-Wolf shrinkage and the precision factor, on exact values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovi_stats.moments import Moments, batch_moments, merge_moments
from ovi_stats.shrinkage import (
    ledoit_wolf_intensity,
    precision_cholesky,
    shrunk_covariance,
    well_conditioned,
)
from ovi_stats.store import moments_of


def _data(n=257, d=12, seed=0, offset=40.0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    return rng.normal(size=(n, d)) @ a + offset  # correlated, far from the origin (stability)


def _reference(x):
    """Direct (two-pass) versions of every stored moment."""
    mu = x.mean(0)
    y = x - mu
    sq = (y * y).sum(1)
    return mu, y.T @ y, (sq[:, None] * y).sum(0), float((sq**2).sum())


def _sklearn_lw(x):
    """scikit-learn's ledoit_wolf_shrinkage, transcribed (sklearn is not a dependency)."""
    x = x - x.mean(0)
    n, p = x.shape
    x2 = x**2
    emp_cov_trace = x2.sum(0) / n
    mu = emp_cov_trace.sum() / p
    beta_ = (x2.T @ x2).sum()
    delta_ = ((x.T @ x) ** 2).sum() / n**2
    beta = 1.0 / (p * n) * (beta_ / n - delta_)
    delta = (delta_ - 2.0 * mu * emp_cov_trace.sum() + p * mu**2) / p
    beta = min(beta, delta)
    return 0.0 if beta == 0 else beta / delta


def test_exact_values_on_a_square():
    m = batch_moments(np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]]))
    assert m.n == 4
    np.testing.assert_array_equal(m.mean, [1.0, 1.0])
    np.testing.assert_array_equal(m.m2, [[4.0, 0.0], [0.0, 4.0]])
    np.testing.assert_array_equal(m.covariance(), np.eye(2) * 4.0 / 3.0)
    np.testing.assert_array_equal(m.m3, [0.0, 0.0])
    assert m.q4 == 16.0  # four points at squared distance 2 from the mean
    # isotropic already: delta = ||e - mu I||^2 / p = 0, so nothing to shrink
    assert ledoit_wolf_intensity(m) == 0.0


def test_shrunk_covariance_exact():
    cov = np.array([[3.0, 1.0], [1.0, 1.0]])
    np.testing.assert_array_equal(shrunk_covariance(cov, 0.5), [[2.5, 0.5], [0.5, 1.5]])
    np.testing.assert_array_equal(shrunk_covariance(cov, 0.0), cov)
    np.testing.assert_array_equal(shrunk_covariance(cov, 1.0), 2.0 * np.eye(2))


def test_precision_cholesky_exact():
    cov = np.array([[4.0, 0.0], [0.0, 0.25]])
    L = precision_cholesky(cov)
    assert L.dtype == torch.float64
    torch.testing.assert_close(L, torch.tensor([[0.5, 0.0], [0.0, 2.0]], dtype=torch.float64))
    cov = np.array([[2.0, 0.5], [0.5, 1.0]])
    L = precision_cholesky(cov)
    assert torch.equal(L, torch.tril(L))
    torch.testing.assert_close(L @ L.T, torch.linalg.inv(torch.tensor(cov)), rtol=1e-12, atol=1e-12)


def test_moments_equal_numpy():
    x = _data()
    m = moments_of(x, chunk=17)  # streamed in uneven chunks
    np.testing.assert_allclose(m.mean, x.mean(0), rtol=1e-13)
    np.testing.assert_allclose(m.covariance(), np.cov(x, rowvar=False), rtol=1e-11, atol=1e-11)
    mu, m2, m3, q4 = _reference(x)
    np.testing.assert_allclose(m.m2, m2, rtol=1e-11, atol=1e-9)
    np.testing.assert_allclose(m.m3, m3, rtol=1e-9, atol=1e-7)
    assert m.q4 == pytest.approx(q4, rel=1e-12)


def test_merge_equals_whole_any_split():
    x = _data(n=300, seed=1)
    whole = batch_moments(x)
    for cut in (1, 2, 150, 299):
        merged = merge_moments(batch_moments(x[:cut]), batch_moments(x[cut:]))
        assert merged.n == whole.n
        np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-14)
        np.testing.assert_allclose(merged.m2, whole.m2, rtol=1e-11, atol=1e-9)
        np.testing.assert_allclose(merged.m3, whole.m3, rtol=1e-9, atol=1e-6)
        assert merged.q4 == pytest.approx(whole.q4, rel=1e-12)
        assert ledoit_wolf_intensity(merged) == pytest.approx(ledoit_wolf_intensity(whole), rel=1e-10)
    three = batch_moments(x[:7]).merge(batch_moments(x[7:100])).merge(batch_moments(x[100:]))
    np.testing.assert_allclose(three.covariance(), whole.covariance(), rtol=1e-11, atol=1e-11)


def test_merge_with_empty_and_update():
    x = _data(n=20, seed=2)
    e = Moments.empty(x.shape[1])
    assert merge_moments(e, batch_moments(x)).n == 20
    assert merge_moments(batch_moments(x), e).n == 20
    m = e.update(x[:5]).update(x[5:])
    np.testing.assert_allclose(m.covariance(), np.cov(x, rowvar=False), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError):
        merge_moments(batch_moments(x), batch_moments(x[:, :3]))


def test_float64_streaming_is_stable_far_from_origin():
    # a float32-style naive sum of squares loses everything at this offset; Welford/Chan does not
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1000, 3)) * 1e-3 + 1e6
    m = moments_of(x, chunk=64)
    ref = np.cov(x, rowvar=False)  # variances ~1e-6: allow 1e-7 of that in absolute error
    np.testing.assert_allclose(m.covariance(), ref, rtol=1e-6, atol=1e-13)
    naive = (x * x).mean(0) - x.mean(0) ** 2  # the textbook one-pass formula, same float64
    assert np.abs(naive - np.diag(ref)).max() > 1e-4  # ... is off by more than the variance itself


@pytest.mark.parametrize("n,d", [(40, 12), (10, 30), (500, 8)])
def test_ledoit_wolf_matches_sklearn_formula(n, d):
    x = _data(n=n, d=d, seed=n)
    s = ledoit_wolf_intensity(moments_of(x, chunk=7))
    assert s == pytest.approx(_sklearn_lw(x), rel=1e-9)
    assert 0.0 <= s <= 1.0


def test_well_conditioned_inverts_even_when_singular():
    x = _data(n=6, d=20, seed=4)  # n < d: the sample covariance is singular
    m = batch_moments(x)
    assert np.linalg.matrix_rank(m.covariance()) < 20
    s, L = well_conditioned(m)
    assert 0.0 < s <= 1.0
    shrunk = torch.tensor(shrunk_covariance(m.covariance(), s))
    torch.testing.assert_close(L @ L.T @ shrunk, torch.eye(20, dtype=torch.float64), rtol=1e-8, atol=1e-8)
    # mahalanobis via the factor = via the inverse
    e = torch.tensor(x[0] + 1.0) - torch.tensor(m.mean)
    direct = e @ torch.linalg.solve(shrunk, e)
    assert float(((L.T @ e) ** 2).sum()) == pytest.approx(float(direct), rel=1e-9)


def test_zero_variance_is_refused():
    with pytest.raises(ValueError, match="zero variance"):
        well_conditioned(batch_moments(np.ones((5, 3))))


def test_torch_fold_equals_numpy_fold():
    """The builder folds on the encoder's device with torch; same formulas, same numbers."""
    x = _data(n=100, seed=6)
    mn = moments_of(x, chunk=13)
    mt = Moments.empty(x.shape[1]).to_torch("cpu")
    for i in range(0, 100, 13):
        mt = mt.merge(batch_moments(torch.tensor(x[i : i + 13])))
    assert isinstance(mt.m2, torch.Tensor) and mt.m2.dtype == torch.float64
    mt = mt.to_numpy()
    assert mt.n == mn.n
    for a, b in ((mt.mean, mn.mean), (mt.m2, mn.m2), (mt.m3, mn.m3)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-9)
    assert mt.q4 == pytest.approx(mn.q4, rel=1e-12)
    back = mn.to_torch("cpu").to_numpy()
    np.testing.assert_array_equal(back.m2, mn.m2)
