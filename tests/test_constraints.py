"""Constraints: the pure maths on exact values, the built-in plugins on a real store, and the CLI."""

from __future__ import annotations

import math

import torch

from ovi_cli.losses import mahalanobis_sq, nn_term

# ---- pure maths ----------------------------------------------------------------------------------


def test_mahalanobis_sq_identity_is_squared_euclidean():
    e = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    mean = torch.tensor([0.0, 0.0], dtype=torch.float64)
    chol = torch.eye(2, dtype=torch.float64)
    assert mahalanobis_sq(e, mean, chol).tolist() == [25.0, 2.0]


def test_mahalanobis_sq_exact_value_with_correlated_precision():
    # P = L L^T = [[4, 2], [2, 10]]; d = e - mu = [1, -1]: d^T P d = 4 - 2 - 2 + 10 = 10
    chol = torch.tensor([[2.0, 0.0], [1.0, 3.0]], dtype=torch.float64)
    assert torch.equal(chol @ chol.T, torch.tensor([[4.0, 2.0], [2.0, 10.0]], dtype=torch.float64))
    e = torch.tensor([[2.0, 0.0]])
    mean = torch.tensor([1.0, 1.0], dtype=torch.float64)
    out = mahalanobis_sq(e, mean, chol)
    assert out.dtype == torch.float64
    assert out.tolist() == [10.0]


def test_mahalanobis_sq_matches_explicit_quadratic_form_and_gradient():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 5, generator=g, dtype=torch.float64)
    precision = a @ a.T + 5 * torch.eye(5, dtype=torch.float64)
    chol = torch.linalg.cholesky(precision)
    mean = torch.randn(5, generator=g, dtype=torch.float64)
    e = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    d = e - mean
    expected = torch.einsum("bi,ij,bj->b", d, precision, d)
    torch.testing.assert_close(mahalanobis_sq(e, mean, chol), expected, rtol=1e-12, atol=1e-12)
    mahalanobis_sq(e, mean, chol).sum().backward()
    torch.testing.assert_close(e.grad, 2 * (e - mean).detach() @ precision, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x: mahalanobis_sq(x, mean, chol), (e,))


def test_nn_term_exact_values():
    e = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 5.0]])
    neighbours = torch.tensor([
        [[3.0, 0.0]],  # same direction: 0
        [[0.0, 1.0]],  # orthogonal: 1
        [[0.0, -2.0]],  # opposite: 2
    ])
    assert nn_term(e, neighbours).tolist() == [0.0, 1.0, 2.0]
    # the mean over k: (0 + 1) / 2 and (1 - cos 45deg + 1 - 1) / 2
    two = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [0.0, 7.0]]])
    out = nn_term(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), two)
    torch.testing.assert_close(out, torch.tensor([0.5, (1 - math.sqrt(0.5)) / 2]))


def test_nn_term_gradient_flows_to_the_embedding_only():
    e = torch.tensor([[1.0, 1.0]], requires_grad=True)
    n = torch.tensor([[[1.0, 0.0]]])
    nn_term(e, n).sum().backward()
    # d/de (1 - e_x / |e|) at (1, 1): -(|e|^2 - e_x^2, -e_x e_y) / |e|^3 = (-1/2^1.5, 1/2^1.5)
    torch.testing.assert_close(e.grad, torch.tensor([[-(2**-1.5), 2**-1.5]]))
