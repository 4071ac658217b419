"""Software tests of ebmref/energy.py: argument checks, shapes, closed-form gradients against
autograd (1e-10, float64), normalisation, and calibrated tests of the exact samplers that every
claim test relies on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from ebmref.analytic import log_partition_quadrature
from ebmref.energy import (
    DoubleWell,
    Energy,
    Gaussian,
    GaussianMixture,
    SumEnergy,
    TemperedEnergy,
)
from verification.stats import (
    ALPHA,
    assert_gaussian_law,
    assert_ks_power,
    assert_pvalues,
    dilation_ks_distance,
    ks_pvalue,
    normal_pvalues,
    z_test_power,
)

F64 = torch.float64


def gaussian():
    return Gaussian([0.5, -1.0], [[1.0, 0.6], [0.6, 0.8]], dtype=F64)


def mixture():
    return GaussianMixture([0.0, 0.5, -0.3], [[-1.5, 0.0], [1.5, 0.5], [0.0, 2.0]],
                           [[[0.5, 0.2], [0.2, 0.4]], [[0.3, 0.0], [0.0, 0.6]],
                            [[0.2, -0.05], [-0.05, 0.3]]], dtype=F64)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("make,arg", [
    (lambda: Gaussian([0.0, 0.0], [[1.0, 2.0], [2.0, 1.0]]), "covariance"),  # not PD
    (lambda: Gaussian([0.0, 0.0], [[1.0, 0.5], [0.0, 1.0]]), "covariance"),  # not symmetric
    (lambda: Gaussian([0.0, 0.0], torch.eye(3)), "covariance"),  # shape mismatch
    (lambda: Gaussian([[0.0, 0.0]], torch.eye(2)), "mean"),
    (lambda: Gaussian([float("nan"), 0.0], torch.eye(2)), "mean"),
    (lambda: GaussianMixture([0.0], [[0.0, 0.0], [1.0, 1.0]], 1.0), "logits"),
    (lambda: GaussianMixture([0.0, 0.0], [[0.0, 0.0], [1.0, 1.0]], [1.0, 1.0, 1.0]), "covariances"),
    (lambda: GaussianMixture([0.0, 0.0], [[0.0, 0.0], [1.0, 1.0]],
                             [[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, -1.0]]]),
     "covariances[1]"),
    (lambda: GaussianMixture([0.0, 0.0], [0.0, 1.0], 1.0), "means"),
    (lambda: DoubleWell(a=0.0), "a"),
    (lambda: DoubleWell(a=-1.0), "a"),
    (lambda: DoubleWell(b=float("inf")), "b"),
    (lambda: TemperedEnergy(gaussian(), 0.0), "temperature"),
    (lambda: SumEnergy([]), "energies"),
])
def test_bad_constructor_arguments_name_the_argument(make, arg):
    with pytest.raises(ValueError, match=rf"^{__import__('re').escape(arg)}:"):
        make()


@pytest.mark.parametrize("energy", [gaussian(), mixture(), DoubleWell(dtype=F64)],
                         ids=["gaussian", "mixture", "double_well"])
def test_wrong_event_shape_and_bad_sample_size(energy):
    with pytest.raises(ValueError, match="^x:"):
        energy(torch.zeros(4, 5, dtype=F64))
    with pytest.raises(ValueError, match="^n:"):
        energy.sample(0)


# ----------------------------------------------------------------------------- shapes & grads


@pytest.mark.parametrize("energy", [gaussian(), mixture(), DoubleWell(2.0, 0.3, dtype=F64),
                                    TemperedEnergy(mixture(), 0.7),
                                    SumEnergy([gaussian(), mixture()])],
                         ids=["gaussian", "mixture", "double_well", "tempered", "sum"])
def test_shapes_and_energy_and_grad_match_autograd(energy):
    d = energy.event_shape[0]
    x = torch.randn(64, d, generator=torch.Generator().manual_seed(0), dtype=F64)
    e, g = energy.energy_and_grad(x)
    assert e.shape == (64,) and g.shape == x.shape and not e.requires_grad
    e_ref, g_ref = Energy.energy_and_grad(energy, x)  # the generic autograd path
    torch.testing.assert_close(e, e_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(g, g_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(energy.grad(x), g_ref, rtol=0, atol=1e-10)


def test_gradients_match_closed_forms():
    """∇E against formulas written independently of the library (1e-10)."""
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    g = gaussian()
    P = torch.linalg.inv(torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=F64))
    torch.testing.assert_close(g.grad(x), (x - g.mu.detach()) @ P, rtol=0, atol=1e-10)
    gm = mixture()
    covs = torch.tril(gm.scale_trils.detach()) @ torch.tril(gm.scale_trils.detach()).mT
    logn = torch.stack([torch.distributions.MultivariateNormal(gm.means[k].detach(), covs[k])
                        .log_prob(x) for k in range(3)], 1)
    r = torch.softmax(gm.logits.detach() + logn, 1)  # responsibilities
    g_ref = sum(r[:, k:k + 1] * (x - gm.means[k].detach()) @ torch.linalg.inv(covs[k])
                for k in range(3))
    torch.testing.assert_close(gm.grad(x), g_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(gm(x), -torch.logsumexp(gm.logits.detach() + logn, 1),
                               rtol=0, atol=1e-10)
    dw = DoubleWell(2.0, 0.3, dtype=F64)
    t = x[:, :1]
    torch.testing.assert_close(dw.grad(t), 4 * 2.0 * t * (t * t - 1) + 0.3, rtol=0, atol=1e-10)
    te = TemperedEnergy(gm, 0.25)
    torch.testing.assert_close(te.grad(x), g_ref / 0.25, rtol=0, atol=1e-9)


def test_create_graph_keeps_parameter_dependence():
    g = gaussian()
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    _, grad = g.energy_and_grad(x, create_graph=True)
    (d_mu,) = torch.autograd.grad(grad.sum(), g.mu)
    # ∇ₓE = P(x − μ) ⇒ ∂/∂μ Σᵢ 1ᵀP(xᵢ − μ) = −8 P1.
    torch.testing.assert_close(d_mu, -8 * g.precision.detach() @ torch.ones(2, dtype=F64),
                               rtol=0, atol=1e-10)


@pytest.mark.parametrize("energy,bounds", [
    (gaussian(), ((-8.0, 9.0), (-9.0, 7.0))),
    (mixture(), ((-8.0, 8.0), (-8.0, 10.0))),
    (DoubleWell(2.0, 0.3, dtype=F64), ((-4.0, 4.0),)),
], ids=["gaussian", "mixture", "double_well"])
def test_log_prob_is_normalised(energy, bounds):
    n = 801 if len(bounds) == 2 else 8001
    log_one, err = log_partition_quadrature(lambda x: -energy.log_prob(x).detach(), bounds, n)
    assert abs(log_one) <= err + 1e-11


def test_double_well_cdf_matches_adaptive_quadrature():
    """cdf (tabulated Simpson) against scipy.integrate.quad at a few points (1e-8)."""
    dw = DoubleWell(2.0, 0.3, dtype=F64)
    z = math.exp(float(dw.log_partition()))
    pts = [-1.7, -1.0, -0.2, 0.0, 0.4, 1.0, 1.5]
    ref = [integrate.quad(lambda t: math.exp(-(2 * (t * t - 1) ** 2 + 0.3 * t)), -8, p,
                          epsabs=1e-13, limit=200)[0] / z for p in pts]
    got = dw.cdf(torch.tensor(pts, dtype=F64)[:, None])
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-8)


@pytest.mark.parametrize("a", [1.45e6, 1e7, 1e9])
def test_double_well_log_partition_of_narrow_wells(a):
    """Wells of width 1/√(8a) ≤ 3e-4, narrower than the node spacing of one quadrature rule
    over [0, 1]: log Z against Laplace's 2√(2π/(8a)) (b = 0, whose relative error is
    O(1/a): the correction 3/(16a) ≤ 1.3e-7 here). Break points at
    ±1 alone stepped over the wells (−25 nats at a = 1.45e6, log of 0 at 1e9)."""
    laplace = math.log(2 * math.sqrt(2 * math.pi / (8 * a)))
    assert abs(float(DoubleWell(a, 0.0, dtype=F64).log_partition()) - laplace) < 1e-6


def test_samples_reproducible_with_the_same_seed():
    for e in [gaussian(), mixture(), DoubleWell(dtype=F64)]:
        a = e.sample(100, torch.Generator().manual_seed(3))
        b = e.sample(100, torch.Generator().manual_seed(3))
        c = e.sample(100, torch.Generator().manual_seed(4))
        assert torch.equal(a, b) and not torch.equal(a, c)
        assert a.shape == (100, *e.event_shape) and a.dtype == F64


# ----------------------------------------------------------------------------- exact samplers


@pytest.mark.stochastic(alpha=ALPHA)
def test_gaussian_sample_is_exact(rng):
    """Gaussian.sample ~ N(μ, Σ): whitened χ²/normal/KS tests, α = 1e-6, power for 5 %."""
    g = gaussian()
    assert_gaussian_law(g.sample(40_000, rng), g.mu.detach(), g.covariance.detach(), ALPHA)
    # Broken: Σ scaled by 1.05 is rejected.
    with pytest.raises(AssertionError):
        assert_gaussian_law(g.sample(40_000, rng), g.mu.detach(),
                            1.05 * g.covariance.detach(), ALPHA)


@pytest.mark.stochastic(alpha=ALPHA)
def test_double_well_sample_is_exact(rng):
    """DoubleWell.sample vs the exact CDF (KS, α = 1e-6); power for a 5 % variance error."""
    dw = DoubleWell(2.0, 0.3, dtype=F64)
    n = 80_000
    cdf = lambda t: dw.cdf(torch.as_tensor(t, dtype=F64)).numpy()
    dens = lambda t: math.exp(-(2.0 * (t * t - 1) ** 2 + 0.3 * t))
    mean = integrate.quad(lambda t: t * dens(t), -6, 6)[0] / integrate.quad(dens, -6, 6)[0]
    assert_ks_power(n, dilation_ks_distance(cdf, mean, -4.0, 4.0), ALPHA)
    assert_pvalues([ks_pvalue(dw.sample(n, rng), dw.cdf)], ALPHA)


@pytest.mark.stochastic(alpha=ALPHA)
def test_mixture_sample_is_exact(rng):
    """GaussianMixture.sample: the law along e₁ (the mode axis) vs the exact projected CDF (KS)
    and the mean vs Σ πₖμₖ (CLT z-test, exact mixture covariance); α = 1e-6 over the two;
    power: the KS test catches a 5 % variance error (dilation about the mean)."""
    gm = GaussianMixture([0.0, 0.5], [[-1.5, 0.0], [1.5, 0.5]],
                         [[[0.5, 0.2], [0.2, 0.4]], [[0.3, 0.0], [0.0, 0.6]]], dtype=F64)
    n = 130_000
    x = gm.sample(n, rng)
    w = gm.weights.detach().numpy()
    L = torch.tril(gm.scale_trils.detach())
    sd = torch.sqrt((L @ L.mT)[:, 0, 0]).numpy()
    m = gm.means.detach()[:, 0].numpy()
    cdf = lambda t: (w * stats.norm.cdf((np.asarray(t)[..., None] - m) / sd)).sum(-1)
    centre = float(w @ m)
    assert_ks_power(n, dilation_ks_distance(cdf, centre, -10, 10), ALPHA / 2)
    p_ks = ks_pvalue(x[:, 0].numpy(), cdf)
    mu = (gm.weights.detach()[:, None] * gm.means.detach()).sum(0)
    cov = sum(w[k] * ((L @ L.mT)[k] + torch.outer(gm.means.detach()[k] - mu,
                                                 gm.means.detach()[k] - mu)) for k in range(2))
    z = torch.linalg.solve_triangular(torch.linalg.cholesky(cov), (x.mean(0) - mu)[:, None],
                                      upper=False)[:, 0] * math.sqrt(n)
    p_mean = min(1.0, 2 * float(np.min(2 * stats.norm.sf(np.abs(z.numpy())))))
    assert_pvalues({"ks_e1": p_ks, "mean": p_mean}, ALPHA)


def _correlated_mixture(cls=GaussianMixture) -> GaussianMixture:
    """3 components in 2-D with strongly correlated / anisotropic covariances (LᵀL ≠ LLᵀ)."""
    return cls([0.0, 0.4, -0.3], [[-2.0, 0.0], [1.5, 1.0], [0.5, -2.0]],
               [[[1.0, 0.8], [0.8, 1.0]], [[0.3, -0.25], [-0.25, 0.6]], [[2.0, 0.0], [0.0, 0.2]]],
               dtype=F64)


class _TransposedFactorMixture(GaussianMixture):
    """Broken: the sampler applies Lᵀ instead of L (component covariance LᵀL)."""

    def sample(self, n, generator=None):
        with torch.no_grad():
            idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
            eps = torch.randn(n, self.dim, generator=generator, dtype=F64)
            return self.means[idx] + (torch.tril(self.scale_trils)[idx].mT @ eps[..., None])[..., 0]


def _mixture_moments(gm: GaussianMixture, transposed: bool = False):
    """Exact mean m, covariance S and, in whitened coordinates z = L_S⁻¹(x − m), the per-
    component means a_k and covariances B_k (component covariance LLᵀ, or LᵀL if
    ``transposed``)."""
    w, mu = gm.weights.detach(), gm.means.detach()
    L = torch.tril(gm.scale_trils.detach())
    c = L.mT @ L if transposed else L @ L.mT
    m = w @ mu
    s = torch.einsum("k,kij->ij", w, c + torch.einsum("ki,kj->kij", mu - m, mu - m))
    inv = torch.linalg.inv(torch.linalg.cholesky(s))
    return m, s, inv, (mu - m) @ inv.T, inv @ c @ inv.T


def _whitened_second_moment_sd(gm: GaussianMixture) -> np.ndarray:
    """sd of z_i z_j (i ≤ j) under the exact mixture, from its 4th moments: for z ~ N(a, B),
    E[z_i² z_j²] = a_i²a_j² + a_i²B_jj + a_j²B_ii + 4a_i a_j B_ij + B_ii B_jj + 2B_ij²."""
    w = gm.weights.detach()
    _, _, _, a, b = _mixture_moments(gm)
    out = []
    for i, j in zip(*np.triu_indices(gm.dim)):
        ai, aj, bii, bjj, bij = a[:, i], a[:, j], b[:, i, i], b[:, j, j], b[:, i, j]
        e4 = w @ (ai**2 * aj**2 + ai**2 * bjj + aj**2 * bii + 4 * ai * aj * bij + bii * bjj
                  + 2 * bij**2)
        out.append(float(e4 - (w @ (bij + ai * aj)) ** 2))
    return np.sqrt(out)


def _mixture_covariance_pvalues(x: torch.Tensor, gm: GaussianMixture) -> dict[str, float]:
    """Whitened with the exact law, z = L_S⁻¹(x − m) has mean 0 and covariance I: z-tests (CLT,
    exact null variances) of the 2 means and the 3 entries of mean(z zᵀ) − I. The entries fix
    the covariance in every direction."""
    m, _, inv, _, _ = _mixture_moments(gm)
    z = (x - m) @ inv.T
    n = x.shape[0]
    iu = np.triu_indices(gm.dim)
    second = (z[:, :, None] * z[:, None, :]).mean(0).numpy()[iu] - np.eye(gm.dim)[iu]
    p = normal_pvalues(second, 0.0, _whitened_second_moment_sd(gm) / math.sqrt(n))
    p_mean = normal_pvalues(z.mean(0).numpy(), 0.0, 1.0 / math.sqrt(n))
    return {**{f"cov{i}{j}": float(v) for i, j, v in zip(*iu, p)},
            **{f"mean{i}": float(v) for i, v in enumerate(p_mean)}}


@pytest.mark.stochastic(alpha=1.1e-6)
def test_mixture_sample_covariance_in_every_direction(rng):
    """GaussianMixture.sample (3 correlated components, n = 150k) against the exact mixture
    mean and covariance: α = 1e-6 over 5 p-values. Power from the design: any 5 % variance error
    along any direction moves an entry of the whitened covariance by ≥ 0.05/d, detected with
    probability ≥ 1 − 1e-3; the Lᵀ-instead-of-L sampler (broken variant) is missed with
    probability ≤ 1e-7 and fails the same assertion."""
    gm, n, m_tests = _correlated_mixture(), 150_000, 5
    sd = _whitened_second_moment_sd(gm) / math.sqrt(n)
    assert z_test_power(np.full(3, 0.05 / gm.dim), sd, ALPHA / m_tests)
    _, _, inv, _, _ = _mixture_moments(gm)
    s_t = _mixture_moments(gm, transposed=True)[1]
    effect = (inv @ s_t @ inv.T - torch.eye(2, dtype=F64)).numpy()[np.triu_indices(2)]
    assert z_test_power(np.abs(effect).max(), sd[np.abs(effect).argmax()], ALPHA / m_tests,
                        beta=1e-7)
    assert_pvalues(_mixture_covariance_pvalues(gm.sample(n, rng), gm), ALPHA)
    broken = _correlated_mixture(_TransposedFactorMixture)
    with pytest.raises(AssertionError):
        assert_pvalues(_mixture_covariance_pvalues(broken.sample(n, rng), gm), ALPHA)
