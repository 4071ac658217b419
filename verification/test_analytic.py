"""Software tests of ebmref/analytic.py (closed forms used as ground truth by the claim tests)
against independent computations: the covariance recursion iterated step by step,
torch.distributions, and polynomials Simpson's rule integrates exactly."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from ebmref.analytic import (
    gaussian_entropy,
    gaussian_kl,
    grid,
    log_partition_quadrature,
    ou_transition_law,
    ula_gaussian_law,
    ula_stationary_covariance,
)
from ebmref.samplers import decoupled_noise, effective_temperature, langevin_coefficients

F64 = torch.float64
MU = torch.tensor([0.5, -1.0], dtype=F64)
SIGMA = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=F64)
P = torch.linalg.inv(SIGMA)
M0 = torch.tensor([2.0, 2.0], dtype=F64)
C0 = torch.tensor([[0.3, 0.1], [0.1, 0.2]], dtype=F64)


def test_langevin_coefficients():
    # eq. 1: drift λ/2, noise √λ (variance λ); Du's step: drift α, noise σ (variance σ²)
    assert langevin_coefficients(0.4) == (0.2, math.sqrt(0.4), 0.4)
    assert langevin_coefficients(10.0, 0.005) == (10.0, 0.005, 0.005**2)
    with pytest.raises(ValueError, match="^step_size:"):
        langevin_coefficients(0.0)
    # Du's σ for a temperature T inverts T = σ²/2α (α = 10, σ = 0.005: T = 1.25e-6)
    assert effective_temperature(10.0, 0.005) == pytest.approx(1.25e-6, rel=1e-12)
    assert decoupled_noise(10.0, 1.25e-6) == pytest.approx(0.005, rel=1e-12)


@pytest.mark.parametrize("step,noise,n", [(0.4, None, 12), (0.2, 0.5, 9), (1.5, None, 7)],
                         ids=["eq1", "decoupled", "unstable"])
def test_ula_gaussian_law_matches_iterated_recursion(step, noise, n):
    """m ← μ + A(m − μ), C ← ACAᵀ + s²I iterated n times (1.5 is unstable: λ/2·p_max > 2)."""
    a, s2 = (step / 2, step) if noise is None else (step, noise**2)
    A = torch.eye(2, dtype=F64) - a * P
    m, c = M0.clone(), C0.clone()
    for _ in range(n):
        m, c = MU + A @ (m - MU), A @ c @ A.T + s2 * torch.eye(2, dtype=F64)
    mean, cov = ula_gaussian_law(MU, P, M0, C0, n, step, noise)
    torch.testing.assert_close(mean, m, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cov, c, rtol=1e-10, atol=1e-12)


def test_ula_stationary_covariance_is_fixed_point_and_unstable_raises():
    c = ula_stationary_covariance(P, 0.4)
    A = torch.eye(2, dtype=F64) - 0.2 * P
    torch.testing.assert_close(A @ c @ A.T + 0.4 * torch.eye(2, dtype=F64), c, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="^step_size:"):
        ula_stationary_covariance(P, 1.5)


def test_ou_transition_law_limits_and_semigroup():
    """τ → ∞ gives N(μ, Σ); C₀ = Σ, m₀ = μ is invariant; two steps τ equal one step 2τ."""
    mean, cov = ou_transition_law(MU, SIGMA, M0, C0, 200.0)
    torch.testing.assert_close(mean, MU, rtol=0, atol=1e-12)
    torch.testing.assert_close(cov, SIGMA, rtol=0, atol=1e-12)
    mean, cov = ou_transition_law(MU, SIGMA, MU, SIGMA, 0.3)
    torch.testing.assert_close(cov, SIGMA, rtol=0, atol=1e-12)
    m1, c1 = ou_transition_law(MU, SIGMA, M0, C0, 0.3)
    m2, c2 = ou_transition_law(MU, SIGMA, m1, c1, 0.3)
    m3, c3 = ou_transition_law(MU, SIGMA, M0, C0, 0.6)
    torch.testing.assert_close(m2, m3, rtol=0, atol=1e-12)
    torch.testing.assert_close(c2, c3, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="^tau:"):
        ou_transition_law(MU, SIGMA, M0, C0, 0.0)


def test_ou_small_tau_matches_one_eq1_step_to_first_order():
    """One eq.-1 step of λ approximates the diffusion for τ = λ/2 with O(λ²) covariance error."""
    errs = []
    for lam in [0.1, 0.05, 0.025]:
        _, c_ou = ou_transition_law(MU, SIGMA, M0, C0, lam / 2)
        _, c_ula = ula_gaussian_law(MU, P, M0, C0, 1, lam)
        errs.append(float(torch.linalg.matrix_norm(c_ou - c_ula)))
    assert errs[0] / errs[1] > 3.5 and errs[1] / errs[2] > 3.5  # quadratic in λ


def test_gaussian_entropy_and_kl_match_torch_distributions():
    c2 = torch.tensor([[2.0, -0.3], [-0.3, 0.5]], dtype=F64)
    m2 = torch.tensor([0.1, 0.4], dtype=F64)
    p, q = MultivariateNormal(MU, SIGMA), MultivariateNormal(m2, c2)
    torch.testing.assert_close(gaussian_entropy(SIGMA), p.entropy(), rtol=0, atol=1e-12)
    torch.testing.assert_close(gaussian_kl(MU, SIGMA, m2, c2), kl_divergence(p, q),
                               rtol=0, atol=1e-12)
    assert abs(float(gaussian_kl(MU, SIGMA, MU, SIGMA))) < 1e-12


def test_grid_points_and_cell():
    pts, cell = grid(((0.0, 1.0), (-2.0, 2.0)), 5)
    assert pts.shape == (25, 2) and cell == pytest.approx(0.25 * 1.0)
    assert pts[:, 0].min() == 0.0 and pts[:, 1].max() == 2.0
    pts1, cell1 = grid(((-1.0, 1.0),), 9)
    assert pts1.shape == (9, 1) and cell1 == pytest.approx(0.25)


def test_simpson_quadrature_is_exact_for_cubics():
    """exp(−E) = 1 + x² − x³/3 (positive on [−1, 1]): ∫ = 2 + 2/3 exactly (1-D), and the
    2-D product (1 + x²)(2 + y) over [−1, 1]² = (8/3)·4."""
    lz, err = log_partition_quadrature(lambda x: -torch.log(1 + x[:, 0] ** 2 - x[:, 0] ** 3 / 3),
                                       ((-1.0, 1.0),), n_points=9)
    assert abs(lz - math.log(8 / 3)) < 1e-14 and err < 1e-14
    lz2, _ = log_partition_quadrature(
        lambda x: -torch.log((1 + x[:, 0] ** 2) * (2 + x[:, 1])), ((-1.0, 1.0), (-1.0, 1.0)), 9)
    assert abs(lz2 - math.log(32 / 3)) < 1e-14


def test_quadrature_error_estimate_bounds_the_true_error():
    """On N(0, 1) over [−12, 12] with a coarse grid the reported error bounds the true one."""
    for n in (21, 41, 81):
        lz, err = log_partition_quadrature(lambda x: 0.5 * x[:, 0] ** 2, ((-12.0, 12.0),), n)
        true = abs(lz - 0.5 * math.log(2 * math.pi))
        assert true <= err + 1e-15, (n, true, err)


@pytest.mark.parametrize("kwargs,arg", [
    ({"bounds": ((0.0, 1.0),) * 3}, "bounds"),
    ({"bounds": ((1.0, 0.0),)}, "bounds"),
    ({"bounds": ((0.0, math.inf),)}, "bounds"),
    ({"bounds": ((0.0, 1.0),), "n_points": 10}, "n_points"),
    ({"bounds": ((0.0, 1.0),), "n_points": 7}, "n_points"),
])
def test_quadrature_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=rf"^{re.escape(arg)}:"):
        log_partition_quadrature(lambda x: x[:, 0] ** 2, **kwargs)
