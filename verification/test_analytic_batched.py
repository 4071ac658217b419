"""ebmref.analytic on stacks of matrices: ``gaussian_entropy`` of covariances (..., d, d) with
any batch shape (against scipy.stats.multivariate_normal), and ``ula_stationary_covariance``
of a stack of precisions: the per-matrix C∞ = σ²(I − A²)⁻¹, returned exactly symmetric."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from ebmref.analytic import gaussian_entropy, ula_stationary_covariance

F64 = torch.float64


def _spd_stack(*batch: int, d: int) -> torch.Tensor:
    """Fixed well-conditioned SPD matrices B Bᵀ + I of shape (*batch, d, d)."""
    b = torch.randn(*batch, d, d, generator=torch.Generator().manual_seed(5), dtype=F64)
    return b @ b.mT + torch.eye(d, dtype=F64)


def test_gaussian_entropy_of_a_two_level_batch():
    """H(N(m, C)) = ½ log((2πe)^d det C) per matrix of a (2, 3, 2, 2) stack (d from the last
    axis, not from a batch axis)."""
    cov = _spd_stack(2, 3, d=2)
    got = gaussian_entropy(cov)
    assert got.shape == (2, 3)
    want = [[stats.multivariate_normal(cov=cov[i, j].numpy()).entropy() for j in range(3)]
            for i in range(2)]
    assert got.tolist() == [pytest.approx(w, rel=1e-12) for w in want]


def test_ula_stationary_covariance_of_a_stack_is_per_matrix_and_symmetric():
    """A (4, 3, 3) stack of precisions gives the stack of per-matrix C∞ (Du's step α = 0.05,
    σ = 0.3: C∞ = σ²(I − A²)⁻¹, A = I − αP, computed here), each exactly symmetric."""
    prec = _spd_stack(4, d=3) / 4.0
    c = ula_stationary_covariance(prec, 0.05, 0.3)
    assert c.shape == (4, 3, 3)
    assert torch.equal(c, c.mT)
    eye = torch.eye(3, dtype=F64)
    for i in range(4):
        a = eye - 0.05 * prec[i]
        want = 0.09 * torch.linalg.solve(eye - a @ a, eye)
        assert torch.allclose(c[i], want, rtol=1e-12, atol=0)
