"""Claim C6 (paper §5.3.1, analysed with the Langevin theory of §2.3): Du & Mordatch's sampler
x ← x − α∇E + σξ with step and noise chosen independently (α = 10, σ = 0.005).

What it targets: the step equals eq. 1 on the tempered energy E/T with λ = σ² and
T = σ²/(2α) = 1.25e-6, so in the small-step limit it samples p^{1/T}/Z_T — a distribution
concentrated within ~√T ≈ 1e-3 standard deviations of the modes (noisy gradient descent, not
a sampler of p_θ). At finite step it is ULA on E/T, so on a Gaussian its stationary
covariance is TΣ(I − αP/2)⁻¹ (the ULA step bias); for α λ_max(∇²E) ≥ 2 it diverges.
"""

from __future__ import annotations

import math

import pytest
import torch

from ebmref.analytic import ula_gaussian_law, ula_stationary_covariance
from ebmref.energy import Gaussian, GaussianMixture, TemperedEnergy
from ebmref.samplers import effective_temperature, langevin
from verification.stats import ALPHA, assert_gaussian_law, chi2_power

F64 = torch.float64
DU_STEP, DU_NOISE = 10.0, 0.005
T_DU = DU_NOISE**2 / (2 * DU_STEP)
M = 40_000


def flat_gaussian() -> Gaussian:
    """Σ with eigenvalues 20 and 8 (P: 0.05, 0.125), so α·P ∈ {0.5, 1.25} < 2: stable."""
    c, s = math.cos(0.4), math.sin(0.4)
    R = torch.tensor([[c, -s], [s, c]], dtype=F64)
    return Gaussian([1.0, -2.0], R @ torch.diag(torch.tensor([20.0, 8.0], dtype=F64)) @ R.T,
                    dtype=F64)


def test_c6_effective_temperature_value():
    assert effective_temperature(DU_STEP, DU_NOISE) == pytest.approx(1.25e-6, rel=1e-15)
    assert T_DU == pytest.approx(1.25e-6, rel=1e-15)


def test_c6_decoupled_step_is_eq1_on_tempered_energy():
    """The real sampler: one decoupled step on E equals one eq.-1 step (λ = σ²) on E/T with
    the same noise draws, to round-off (a 2-D mixture, so no Gaussian special case)."""
    gm = GaussianMixture([0.0, 0.3], [[-1.0, 0.0], [1.0, 1.0]], [0.5, 0.8], dtype=F64)
    x0 = torch.randn(1000, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    a = langevin(gm, x0, 3, DU_STEP, noise=DU_NOISE, generator=torch.Generator().manual_seed(2)).x
    b = langevin(TemperedEnergy(gm, T_DU), x0, 3, DU_NOISE**2,
                 generator=torch.Generator().manual_seed(2)).x
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_c6_stationary_covariance_is_tempered_with_step_bias():
    """C∞(α, σ) on N(μ, Σ) = C∞ of eq. 1 on E/T at λ = σ² = TΣ(I − αP/2)⁻¹; → TΣ as αP → 0."""
    g = flat_gaussian()
    P, sigma = g.precision.detach(), g.covariance.detach()
    eye = torch.eye(2, dtype=F64)
    c_du = ula_stationary_covariance(P, DU_STEP, DU_NOISE)
    torch.testing.assert_close(c_du, ula_stationary_covariance(P / T_DU, DU_NOISE**2),
                               rtol=1e-9, atol=0)
    torch.testing.assert_close(c_du, T_DU * sigma @ torch.linalg.inv(eye - DU_STEP / 2 * P),
                               rtol=1e-9, atol=0)
    for scale in [1e2, 1e4, 1e6]:  # flatter energies: αP → 0, bias factor → 1
        c = ula_stationary_covariance(P / scale, DU_STEP, DU_NOISE)
        rel = float(torch.linalg.matrix_norm(c / (T_DU * sigma * scale) - 1))
        assert rel < 2 * DU_STEP * float(torch.linalg.eigvalsh(P).max()) / scale


@pytest.mark.stochastic(alpha=ALPHA)
def test_c6_du_sampler_law_is_tempered_ula(rng):
    """The real sampler at α = 10, σ = 0.005 produces exactly ULA's law on E/T (passes at
    α = 1e-6); the same samples fail against p_θ = N(μ, Σ) (variance off by a factor ~1e-6)
    and against the tempered target N(μ, TΣ) (step bias factor (1 − αp/2)⁻¹ ≥ 1.33)."""
    g = flat_gaussian()
    mu, P, sigma = g.mu.detach(), g.precision.detach(), g.covariance.detach()
    n = 40
    c0 = T_DU * sigma
    x0 = mu + torch.randn(M, 2, generator=rng, dtype=F64) @ torch.linalg.cholesky(c0).T
    x = langevin(g, x0, n, DU_STEP, noise=DU_NOISE, generator=rng).x
    mean, cov = ula_gaussian_law(mu, P, mu, c0, n, DU_STEP, DU_NOISE)
    assert_gaussian_law(x, mean, cov, ALPHA)
    with pytest.raises(AssertionError):
        assert_gaussian_law(x, mu, sigma, ALPHA)
    # The smallest eigenvalue of the bias factor is 1/(1 − 0.25) = 1.33: assert it is caught.
    factor = torch.linalg.eigvalsh(torch.linalg.inv(torch.eye(2, dtype=F64)
                                                    - DU_STEP / 2 * P))
    assert chi2_power(M, 2, float(factor.min()), ALPHA / 3) > 1 - 1e-3
    with pytest.raises(AssertionError):
        assert_gaussian_law(x, mu, T_DU * sigma, ALPHA)


def test_c6_du_sampler_diverges_when_step_times_curvature_exceeds_two():
    """α λ_max(P) = 10 · 0.25 = 2.5 ≥ 2: |1 − αp| = 1.5, chains blow up geometrically and no
    stationary law exists (ula_stationary_covariance raises)."""
    g = Gaussian([0.0], [[4.0]], dtype=F64)
    with pytest.raises(ValueError, match="step_size"):
        ula_stationary_covariance(g.precision.detach(), DU_STEP, DU_NOISE)
    x0 = torch.full((100, 1), 0.01, dtype=F64)
    x = langevin(g, x0, 40, DU_STEP, noise=DU_NOISE, generator=torch.Generator().manual_seed(0)).x
    assert float(x.abs().min()) > 1e4 * 0.01  # ≈ 1.5⁴⁰ ≈ 1e7 growth
    # Broken contrast: just below the threshold (P = 0.19, αp = 1.9) it stays bounded.
    g2 = Gaussian([0.0], [[1 / 0.19]], dtype=F64)
    x2 = langevin(g2, x0, 40, DU_STEP, noise=DU_NOISE, generator=torch.Generator().manual_seed(0)).x
    assert float(x2.abs().max()) < 1.0
