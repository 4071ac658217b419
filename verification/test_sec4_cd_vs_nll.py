"""§4: contrastive divergence versus maximum likelihood on the Gaussian family.

C12  L_NLL = KL[p_data ‖ p_θ] + H(p_data)                          (closed form vs quadrature)
C13  L_CD ≥ 0 and L_CD = 0 ⇔ L_NLL = 0 — for which kernels?          (exact OU vs ULA)
C14  ∇KL[q_θ^t ‖ p_θ] = KL term + divergence − negative phase; the negative phase cancels in
     ∇L_CD                                   (closed form to 1e-10, then the library's Monte Carlo)
C30  "the stationary distribution of the chains is p_data" — what the argument needs
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, optimize

from ebmref import gaussian_cd as gcd
from ebmref.analytic import gaussian_entropy, gaussian_kl
from ebmref.energy import Gaussian
from ebmref.objectives import contrastive_loss, kl_loss
from ebmref.samplers import langevin, ornstein_uhlenbeck
from verification.cd_theory_helpers import (
    DT,
    batch_mean_pvalues,
    flat_grad,
    gaussian_setup,
    t_test_power,
)
from verification.stats import assert_gaussian_law, assert_pvalues, whitened_gaussian_pvalues


def _random_thetas(n: int, d: int, gen: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for _ in range(n):
        mu = 1.5 * torch.randn(d, generator=gen, dtype=DT)
        a = torch.randn(d, d, generator=gen, dtype=DT)
        cov = a @ a.T / d + 0.2 * torch.eye(d, dtype=DT)
        out.append((mu, torch.linalg.cholesky(cov)))
    return out


# ----------------------------------------------------------------------------------- C12


def _nll_by_quadrature(model: Gaussian, m_d: torch.Tensor, c_d: torch.Tensor) -> float:
    """−∫ p_data log p_θ on a Simpson grid (1-D or 2-D), using the library's Gaussian energy."""
    data = Gaussian(m_d, c_d, dtype=DT)
    d = m_d.shape[0]
    axes = [np.linspace(float(m_d[i]) - 12 * math.sqrt(float(c_d[i, i])),
                        float(m_d[i]) + 12 * math.sqrt(float(c_d[i, i])), 801) for i in range(d)]
    mesh = np.meshgrid(*axes, indexing="ij")
    pts = torch.as_tensor(np.stack([m.ravel() for m in mesh], -1), dtype=DT)
    with torch.no_grad():
        f = (data.log_prob(pts).exp() * -model.log_prob(pts)).numpy().reshape(mesh[0].shape)
    for ax in reversed(axes):
        f = integrate.simpson(f, x=ax, axis=-1)
    return float(f)


@pytest.mark.parametrize("d", [1, 2])
def test_c12_nll_is_kl_plus_data_entropy(d):
    """C12: L_NLL = KL[p_data ‖ p_θ] + H(p_data) exactly (quadrature to 1e-9); the paper's
    "L_NLL = KL" holds up to exactly that constant. Broken variants: KL alone, log Z dropped."""
    mu, scale_tril, m_d, c_d = gaussian_setup(d)
    model = Gaussian(mu, scale_tril @ scale_tril.T, dtype=DT)
    quad = _nll_by_quadrature(model, m_d, c_d)
    kl = float(gcd.kl_data_model(mu, scale_tril, m_d, c_d))
    h_data = float(gaussian_entropy(c_d))
    assert abs(quad - (kl + h_data)) < 1e-9
    assert abs(float(gcd.nll_loss(mu, scale_tril, m_d, c_d)) - quad) < 1e-9
    # The constant is θ-free: ∇L_NLL = ∇KL to round-off.
    g_nll = flat_grad(*gcd.autograd_of(gcd.nll_loss, mu, scale_tril, m_d, c_d))
    g_kl = flat_grad(*gcd.autograd_of(gcd.kl_data_model, mu, scale_tril, m_d, c_d))
    assert torch.allclose(g_nll, g_kl, atol=1e-12, rtol=0)
    # Broken: "L_NLL = KL" read literally, and the NLL without log Z.
    assert abs(quad - kl) > 1e3 * 1e-9
    without_log_z = float(gcd.expected_energy(mu, scale_tril, m_d, c_d))
    assert abs(quad - without_log_z) > 1e3 * 1e-9


# ----------------------------------------------------------------------------------- C13 / C30


def _bakry_emery_lower_bound(scale_tril, kl_data, t, step):
    """Exact diffusion on a P ⪰ κI Gaussian for time s = tλ/2: KL[q_s‖p] ≤ e^{−2κs} KL[q_0‖p]
    (log-Sobolev, Bakry–Émery), hence L_CD ≥ (1 − e^{−2κs}) KL[p_data ‖ p_θ]."""
    kappa = float(torch.linalg.eigvalsh(gcd.precision(scale_tril)).min())
    return (1.0 - math.exp(-2.0 * kappa * t * step / 2.0)) * kl_data


def test_c13_cd_nonnegative_and_zero_only_at_data_exact_kernel(rng):
    """C13 (exact OU kernel, leaves p_θ invariant): over 40 random θ and t ∈ {1, 5, 20},
    L_CD ≥ (1 − e^{−2κtλ/2})·L_NLL > 0 (quantitative form of "= 0 ⇔ L_NLL = 0"), and L_CD = 0 at
    θ = data. Broken variant failing the same bound: ULA (finite λ)."""
    _, _, m_d, c_d = gaussian_setup(2)
    l_d = torch.linalg.cholesky(c_d)
    step = 0.2
    for mu, scale_tril in _random_thetas(40, 2, rng):
        kl_data = float(gcd.kl_data_model(mu, scale_tril, m_d, c_d))
        for t in (1, 5, 20):
            l_cd = float(gcd.cd_loss(mu, scale_tril, m_d, c_d, t, "ou", step))
            assert l_cd >= _bakry_emery_lower_bound(scale_tril, kl_data, t, step) - 1e-12
            assert l_cd > 0
    assert abs(float(gcd.cd_loss(m_d, l_d, m_d, c_d, 5, "ou", step))) < 1e-12
    # Broken: ULA at θ = data gives L_CD < 0, below the bound (= 0 there).
    assert float(gcd.cd_loss(m_d, l_d, m_d, c_d, 5, "ula", step)) < 0


def _ula_kl_1d(step: float, t: int) -> float:
    """KL[q^t ‖ N(0, 1)] for eq.-1 ULA from N(0, 1) on N(0, 1), written out independently:
    variance v_t = v∞ + a^{2t}(1 − v∞), a = 1 − λ/2, v∞ = 1/(1 − λ/4)."""
    a = 1.0 - step / 2.0
    v_inf = 1.0 / (1.0 - step / 4.0)
    v = v_inf + a ** (2 * t) * (1.0 - v_inf)
    return 0.5 * (v - 1.0 - math.log(v))


def test_c13_ula_cd_negative_at_data_and_zero_away_from_it():
    """C13 under ULA (stationary law ≠ p_θ): at θ = data, L_CD = −KL[q^t ‖ p_θ] < 0; L_CD
    crosses zero at σ* ≠ σ_data, and its minimiser is not the data. Numbers (1-D, data N(0, 1),
    λ = 0.5, t = 10): L_CD(data) = −4.63e-3, zero at σ* ≈ 1.06 (σ_data = 1)."""
    m_d, c_d = torch.zeros(1, dtype=DT), torch.ones(1, 1, dtype=DT)
    step, t = 0.5, 10
    l_cd = lambda s: float(gcd.cd_loss(m_d, torch.tensor([[s]], dtype=DT), m_d, c_d,
                                       t, "ula", step))
    at_data = l_cd(1.0)
    assert abs(at_data + _ula_kl_1d(step, t)) < 1e-12
    assert at_data < -4e-3
    # A zero of L_CD away from the data (L_CD = 0 does not imply L_NLL = 0).
    sigma_star = optimize.brentq(l_cd, 1.0, 2.0, xtol=1e-12)
    assert sigma_star > 1.01
    assert float(gcd.kl_data_model(m_d, torch.tensor([[sigma_star]], dtype=DT), m_d, c_d)) > 1e-4
    # The exact kernel at the same θ, λ, t is nonnegative: the broken variant is the kernel.
    assert float(gcd.cd_loss(m_d, torch.ones(1, 1, dtype=DT), m_d, c_d, t, "ou", step)) \
        == pytest.approx(0.0, abs=1e-14)


@pytest.mark.stochastic
def test_c30_chains_converge_to_p_theta_not_p_data(rng):
    """C30: the chains' stationary law is p_θ, not p_data. Closed form: KL[q^t ‖ p_θ] → 0 and
    KL[q^t ‖ p_data] → KL[p_θ ‖ p_data] > 0. Library: 32000 exact-OU chains from the data, long
    run, pass a calibrated test against p_θ (α = 1e-6, power: 5 % covariance error) and fail it
    against p_data."""
    mu, scale_tril, m_d, c_d = gaussian_setup(2)
    sigma = gcd.covariance(scale_tril)
    mq, cq = gcd.chain_law(mu, scale_tril, m_d, c_d, 400, "ou", 0.2)
    assert float(gaussian_kl(mq, cq, mu, sigma)) < 1e-12
    assert float(gaussian_kl(mq, cq, m_d, c_d)) == pytest.approx(
        float(gaussian_kl(mu, sigma, m_d, c_d)), abs=1e-10)
    assert float(gaussian_kl(mu, sigma, m_d, c_d)) > 0.5
    model = Gaussian(mu, sigma, dtype=DT)
    x0 = Gaussian(m_d, c_d, dtype=DT).sample(32000, rng)
    x = ornstein_uhlenbeck(model, x0, 40, 1.0, generator=rng).x  # time 40 ≫ 1/κ
    assert_gaussian_law(x, mu, sigma)
    p_data = whitened_gaussian_pvalues(x, m_d, c_d)
    with pytest.raises(AssertionError):
        assert_pvalues(p_data)


def test_c30_kernel_invariant_for_p_data_makes_cd_vacuous(rng):
    """C30: if the chains' stationary law were p_data (as the text says), q^t = p_data for all
    t and L_CD = KL[p_data‖p_θ] − KL[p_data‖p_θ] ≡ 0 for every θ: the argument needs a kernel
    that leaves p_θ invariant *and* strictly contracts KL (the exact OU kernel, test above)."""
    _, _, m_d, c_d = gaussian_setup(2)
    # A kernel with stationary law p_data (exact OU on p_data), started at p_data, stays there
    # (library chain law, every t): q^t = p_data, so L_CD = KL[p_data‖p_θ] − KL[q^t‖p_θ] ≡ 0.
    for t in (1, 10, 100):
        mq, cq = gcd.chain_law(m_d, torch.linalg.cholesky(c_d), m_d, c_d, t, "ou", 0.2)
        torch.testing.assert_close(mq, m_d, rtol=0, atol=1e-12)
        torch.testing.assert_close(cq, c_d, rtol=0, atol=1e-12)
    # The p_θ-invariant kernel does give a positive, θ-dependent L_CD at the same θ.
    for mu, scale_tril in _random_thetas(20, 2, rng):
        assert float(gcd.cd_loss(mu, scale_tril, m_d, c_d, 10, "ou", 0.2)) > 1e-3


# ----------------------------------------------------------------------------------- C14


@pytest.mark.parametrize("kernel", ["ou", "ula"])
@pytest.mark.parametrize("t", [1, 10])
def test_c14_gradient_split_closed_form(kernel, t):
    """C14 (closed form, float64, ≤ 1e-10): autograd of KL[q_θ^t ‖ p_θ] equals
    KL term + divergence − negative phase; autograd of L_CD equals positive − divergence −
    KL term (no negative phase); the negative phase is −∇log Z. Broken: sign of the KL term,
    negative phase left in ∇L_CD."""
    mu, scale_tril, m_d, c_d = gaussian_setup(2)
    p = gcd.gradient_pieces(mu, scale_tril, m_d, c_d, t, kernel, 0.2)
    full_kl = flat_grad(*gcd.autograd_of(gcd.kl_chain_model, mu, scale_tril, m_d, c_d, t,
                                         kernel, 0.2))
    split = flat_grad(*gcd.combine(p, {"kl_term": 1, "divergence": 1, "negative": -1}))
    assert torch.allclose(full_kl, split, atol=1e-10, rtol=0)
    full_cd = flat_grad(*gcd.autograd_of(gcd.cd_loss, mu, scale_tril, m_d, c_d, t, kernel, 0.2))
    cd_split = flat_grad(*gcd.combine(p, {"positive": 1, "divergence": -1, "kl_term": -1}))
    assert torch.allclose(full_cd, cd_split, atol=1e-10, rtol=0)
    log_z = flat_grad(*gcd.autograd_of(lambda m, s: gcd.log_partition(s), mu, scale_tril))
    assert torch.allclose(flat_grad(*p["negative"]), -log_z, atol=1e-12, rtol=0)
    # Broken variants are far outside 1e-10.
    for wrong in ({"positive": 1, "divergence": -1, "kl_term": 1},
                  {"positive": 1, "divergence": -1, "kl_term": -1, "negative": -1},
                  {"positive": 1, "divergence": -1}):
        assert (full_cd - flat_grad(*gcd.combine(p, wrong))).abs().max() > 1e-4


@pytest.mark.stochastic
def test_c14_library_monte_carlo_matches_closed_form(rng):
    """C14 through the library: ``contrastive_loss`` on ULA / exact-OU chains from the data
    estimates positive − divergence; ``kl_loss`` on ``langevin`` chains (all t steps
    differentiated) estimates ∂/∂θ E_{q_θ}[E_Ω] = KL term + ∂H(q_θ)/∂θ; together they estimate
    ∇L_CD. Batch-means t-tests (80 batches × 500 chains), 20 p-values, total α = 1e-6;
    power ≥ 1 − 1e-3 asserted for the broken variants, which are then shown to fail:
    KL term with the wrong sign, KL term dropped (CD*), energy not frozen in the KL loss."""
    alpha, n_batches, n = 1e-6, 80, 500
    mu, scale_tril, m_d, c_d = gaussian_setup(2)
    t, step = 5, 0.2
    model = Gaussian(mu, gcd.covariance(scale_tril), dtype=DT)
    data = Gaussian(m_d, c_d, dtype=DT)
    params = (model.mu, model.scale_tril)
    th_mu, th_l = model.mu.detach(), model.scale_tril.detach()

    est = {k: [] for k in ("cd_star_ula", "cd_star_ou", "e_q", "e_q_unfrozen")}
    for _ in range(n_batches):
        x = data.sample(n, rng)
        x_ula = langevin(model, x, t, step, generator=rng).x
        x_ou = ornstein_uhlenbeck(model, x, t, step / 2, generator=rng).x
        for key, xn in (("cd_star_ula", x_ula), ("cd_star_ou", x_ou)):
            g = torch.autograd.grad(contrastive_loss(model(x), model(xn)), params)
            est[key].append(flat_grad(*g))
        x_diff = langevin(model, x, t, step, generator=rng, differentiable_steps=t).x
        g_frozen = torch.autograd.grad(kl_loss(model, x_diff, sign="du2020"), params,
                                       retain_graph=True)
        g_unfrozen = torch.autograd.grad(model(x_diff).mean(), params)  # broken: Ω dropped
        est["e_q"].append(flat_grad(*g_frozen))
        est["e_q_unfrozen"].append(flat_grad(*g_unfrozen))
    est = {k: torch.stack(v) for k, v in est.items()}

    p_ula = gcd.gradient_pieces(th_mu, th_l, m_d, c_d, t, "ula", step)
    p_ou = gcd.gradient_pieces(th_mu, th_l, m_d, c_d, t, "ou", step)
    grad_h = flat_grad(*gcd.autograd_of(
        lambda m, s: gaussian_entropy(gcd.chain_law(m, s, m_d, c_d, t, "ula", step)[1]),
        th_mu, th_l))
    kl_term = flat_grad(*p_ula["kl_term"])
    expected = {
        "cd_star_ula": flat_grad(*gcd.combine(p_ula, {"positive": 1, "divergence": -1})),
        "cd_star_ou": flat_grad(*gcd.combine(p_ou, {"positive": 1, "divergence": -1})),
        "e_q": kl_term + grad_h,
    }
    cd_mc = est["cd_star_ula"] - (est["e_q"] - grad_h)
    cd_exact = flat_grad(*gcd.autograd_of(gcd.cd_loss, th_mu, th_l, m_d, c_d, t, "ula", step))

    pvals, ses = {}, {}
    for key, val in expected.items():
        pv, ses[key] = batch_mean_pvalues(est[key], val)
        pvals.update({f"{key}[{i}]": float(p) for i, p in enumerate(pv)})
    pv, ses["cd"] = batch_mean_pvalues(cd_mc, cd_exact)
    pvals.update({f"cd[{i}]": float(p) for i, p in enumerate(pv)})
    alpha_per = alpha / len(pvals)
    # Power against each broken variant's shift of the mean (noncentral t, β = 1e-3).
    assert t_test_power(2 * kl_term, ses["cd"], n_batches, alpha_per) > 1 - 1e-3
    assert t_test_power(kl_term, ses["cd"], n_batches, alpha_per) > 1 - 1e-3
    divergence = flat_grad(*p_ula["divergence"])
    assert t_test_power(divergence, ses["e_q"], n_batches, alpha_per) > 1 - 1e-3
    assert_pvalues(pvals, alpha)

    broken = {
        "kl_sign_flipped": (cd_mc, cd_exact + 2 * kl_term),  # MC of correct CD vs flipped law
        "kl_term_dropped": (est["cd_star_ula"], cd_exact),
        "energy_not_frozen": (est["e_q_unfrozen"], expected["e_q"]),
    }
    for name, (sample, target) in broken.items():
        pv, _ = batch_mean_pvalues(sample, target)
        with pytest.raises(AssertionError):
            assert_pvalues({f"{name}[{i}]": float(p) for i, p in enumerate(pv)}, alpha)
