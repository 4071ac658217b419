"""§5.4: the KL loss of Du et al. (2020), its sign, and how many sampler steps to differentiate.

C22  L_KL = −KL[q_θ^t ‖ p_Ω(θ)] = H(q_θ^t) − E_{q_θ^t}[E_Ω(θ)] + const, const = −log Z_Ω
C23  Du et al. (2020) flipped the sign: their loss has gradient +∂/∂θ KL[q_θ^t ‖ p_Ω] (it
     minimises the KL), while ∇L_CD contains −∂/∂θ KL[q_θ^t ‖ p_Ω] — closed form, then through
     the real ``kl_loss`` (differentiable sampler + Kozachenko–Leonenko entropy)
C24  back-propagating through the last k of K steps versus all K steps (closed form, ULA)
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from ebmref import gaussian_cd as gcd
from ebmref.analytic import gaussian_entropy, gaussian_kl
from ebmref.config import KLConfig, SamplerConfig
from ebmref.energy import Gaussian
from ebmref.entropy import kozachenko_leonenko, log_unit_ball_volume
from ebmref.negatives import sample_negatives
from ebmref.objectives import kl_loss
from verification.cd_theory_helpers import (
    DT,
    batch_mean_pvalues,
    flat_grad,
    gaussian_setup,
    t_test_power,
)
from verification.stats import assert_pvalues

T, STEP = 5, 0.2


def _x_diff(model, x0, n_steps: int, k: int, step: float, rng) -> torch.Tensor:
    """The training loop's differentiable chain ends x̃: n_steps eq.-1 steps, the last k kept
    in the graph (:func:`ebmref.negatives.sample_negatives` with the KL loss on)."""
    sampler = SamplerConfig(n_steps=n_steps, step_size=step, noise=None, grad_clip=None,
                            clamp=None)
    return sample_negatives(model, x0, sampler, KLConfig(weight=1.0, differentiable_steps=k),
                            generator=rng).x_diff


def _setup():
    """The shared θ with data offset from the model so that the KL term is large."""
    mu, scale_tril, _, c_d = gaussian_setup(2)
    return mu, scale_tril, torch.tensor([2.0, -1.5], dtype=DT), c_d


# ----------------------------------------------------------------------------------- C22


def test_c22_l_kl_decomposition_closed_form(rng):
    """C22: for 20 random chain laws q and models p, −KL[q‖p] = H(q) − E_q[E] − log Z to
    1e-12; gcd.l_kl = −KL[q_θ^t ‖ p_Ω] and its θ-gradient is −(KL term) to 1e-10, i.e. the
    constant −log Z_Ω carries no gradient. Broken variants: +log Z, entropy with a − sign."""
    for _ in range(20):
        mq, mp = torch.randn(2, generator=rng, dtype=DT), torch.randn(2, generator=rng, dtype=DT)
        a, b = (torch.randn(2, 2, generator=rng, dtype=DT) for _ in range(2))
        cq, cp = a @ a.T + 0.3 * torch.eye(2, dtype=DT), b @ b.T + 0.3 * torch.eye(2, dtype=DT)
        lp = torch.linalg.cholesky(cp)
        lhs = -gaussian_kl(mq, cq, mp, cp)
        h, e = gaussian_entropy(cq), gcd.expected_energy(mp, lp, mq, cq)
        log_z = gcd.log_partition(lp)
        assert abs(float(lhs - (h - e - log_z))) < 1e-12
        assert abs(float(lhs - (h - e + log_z))) > 1e-3  # broken: wrong constant
        assert abs(float(lhs - (-h - e - log_z))) > 1e-3  # broken: entropy sign
    mu, scale_tril, m_d, c_d = _setup()
    value = gcd.l_kl(mu, scale_tril, m_d, c_d, T, "ula", STEP)
    assert abs(float(value + gcd.kl_to_frozen_model(mu, scale_tril, m_d, c_d, T, "ula", STEP))) \
        < 1e-12
    g_lkl = flat_grad(*gcd.autograd_of(gcd.l_kl, mu, scale_tril, m_d, c_d, T, "ula", STEP))
    kl_term = flat_grad(*gcd.gradient_pieces(mu, scale_tril, m_d, c_d, T, "ula", STEP)["kl_term"])
    assert torch.allclose(g_lkl, -kl_term, atol=1e-10, rtol=0)


# ----------------------------------------------------------------------------------- C23


def _du2020_closed_form(m, s, m_d, c_d):
    """Du et al. (2020)'s loss at entropy weight 1: E_{q_θ}[E_Ω] − H(q_θ)."""
    mq, cq = gcd.chain_law(m, s, m_d, c_d, T, "ula", STEP)
    return gcd.expected_energy(m.detach(), s.detach(), mq, cq) - gaussian_entropy(cq)


def _cd_sign_closed_form(m, s, m_d, c_d):
    """The sign CD needs: −E_{q_θ}[E_Ω] + H(q_θ) (= L_KL + log Z_Ω)."""
    return -_du2020_closed_form(m, s, m_d, c_d)


def test_c23_published_sign_minimises_the_kl_closed_form():
    """C23 (closed form, 1e-10): ∇(du2020 loss) = +∂/∂θ KL[q_θ^t ‖ p_Ω] (descending it
    *decreases* the KL), ∇(cd loss) = −∂/∂θ KL, and ∇L_CD = positive − divergence − KL term,
    so CD descends the cd-sign loss; the du2020 one points the other way (cosine −1)."""
    mu, scale_tril, m_d, c_d = _setup()
    p = gcd.gradient_pieces(mu, scale_tril, m_d, c_d, T, "ula", STEP)
    kl_term = flat_grad(*p["kl_term"])
    g_du = flat_grad(*gcd.autograd_of(_du2020_closed_form, mu, scale_tril, m_d, c_d))
    g_cd = flat_grad(*gcd.autograd_of(_cd_sign_closed_form, mu, scale_tril, m_d, c_d))
    assert torch.allclose(g_du, kl_term, atol=1e-10, rtol=0)
    assert torch.allclose(g_cd, -kl_term, atol=1e-10, rtol=0)
    g_cd_total = flat_grad(*gcd.autograd_of(gcd.cd_loss, mu, scale_tril, m_d, c_d, T, "ula", STEP))
    cd_star = flat_grad(*gcd.combine(p, {"positive": 1, "divergence": -1}))
    assert torch.allclose(g_cd_total, cd_star + g_cd, atol=1e-10, rtol=0)
    assert not torch.allclose(g_cd_total, cd_star + g_du, atol=1e-3, rtol=0)  # broken: du2020
    # A small step against the du2020 gradient lowers KL[q_θ ‖ p_Ω] (Ω fixed at θ₀).
    eps = 1e-3
    kl = lambda m, s: float(gaussian_kl(*gcd.chain_law(m, s, m_d, c_d, T, "ula", STEP),
                                        mu, gcd.covariance(scale_tril)))
    g_mu, g_l = gcd.autograd_of(_du2020_closed_form, mu, scale_tril, m_d, c_d)
    assert kl(mu - eps * g_mu, scale_tril - eps * g_l) < kl(mu, scale_tril)
    assert kl(mu + eps * g_mu, scale_tril + eps * g_l) > kl(mu, scale_tril)


def _check_kl_loss_written_out(model, frozen, x_diff, k: int) -> None:
    """kl_loss's value and gradient against the loss written out here: mean E_Ω(x̃) − Ĥ_KL(x̃)
    for sign="du2020", its negative for sign="cd" (sign, frozen energy and estimator at once);
    ``frozen`` is an independent copy of the model's energy."""
    params = (model.mu, model.scale_tril)
    written = frozen(x_diff).mean() - kozachenko_leonenko(x_diff, k=k)
    g_written = flat_grad(*torch.autograd.grad(written, params, retain_graph=True))
    for sign_name, sign in (("du2020", 1.0), ("cd", -1.0)):
        loss = kl_loss(model, x_diff, sign=sign_name, entropy_weight=1.0, entropy="kl", k=k)
        g = flat_grad(*torch.autograd.grad(loss, params, retain_graph=True))
        assert abs(float(loss.detach()) - sign * float(written.detach())) < 1e-10, sign_name
        torch.testing.assert_close(g, sign * g_written, rtol=0, atol=1e-10)


@pytest.mark.stochastic
def test_c23_kl_loss_gradient_sign_and_magnitude_through_the_library(rng):
    """C23 through ``kl_loss`` (ULA ``sample_negatives`` with all t = 5 steps differentiated,
    entropy = Kozachenko–Leonenko k = 5 on the 250 chains of a batch, weight 1): batch-means
    (40 batches), the gradient of sign="du2020" equals +KL term and sign="cd" gives exactly its
    negative. Null: |E ĝ − KL term| ≤ tol per coordinate, tol = 10 % of ‖KL term‖∞ (allowance
    for the k-NN estimator's bias; measured over 400 batches: 2 % relative error, cosine
    0.9999), α = 1e-6 over 5 + 1 tests.
    Value: loss = KL[q‖p] − log Z_Ω, tol 0.1 nats (the k-NN bias of Ĥ here is ≈ 0.04).
    Power ≥ 1 − 1e-3 asserted against:
    sign flipped, energy not frozen, entropy constant dropped (value); each then fails."""
    alpha, n_batches, n, k = 1e-6, 40, 250, 5
    mu, scale_tril, m_d, c_d = _setup()
    model = Gaussian(mu, gcd.covariance(scale_tril), dtype=DT)
    data = Gaussian(m_d, c_d, dtype=DT)
    params = (model.mu, model.scale_tril)
    th_mu, th_l = model.mu.detach(), model.scale_tril.detach()

    # E_Ω: an independent copy of θ's energy (its own leaves): θ reaches it only through x̃.
    frozen = Gaussian(th_mu, gcd.covariance(th_l), dtype=DT)
    grads, grads_unfrozen, values, values_no_const = [], [], [], []
    for batch in range(n_batches):
        x_diff = _x_diff(model, data.sample(n, rng), T, T, STEP, rng)
        loss = kl_loss(model, x_diff, sign="du2020", entropy_weight=1.0, entropy="kl", k=k)
        g = flat_grad(*torch.autograd.grad(loss, params, retain_graph=True))
        if batch < 2:
            _check_kl_loss_written_out(model, frozen, x_diff, k)
        # Broken: the energy not frozen (θ reached through E_θ as well as through x̃).
        loss_unfrozen = model(x_diff).mean() - kozachenko_leonenko(x_diff, k=k)
        g_unfrozen = torch.autograd.grad(loss_unfrozen, params)
        grads.append(g)
        grads_unfrozen.append(flat_grad(*g_unfrozen))
        values.append(float(loss.detach()))
        const = (float(torch.special.digamma(torch.tensor(float(n), dtype=DT))
                       - torch.special.digamma(torch.tensor(float(k), dtype=DT)))
                 + log_unit_ball_volume(2))
        # broken: −Ĥ without ψ(N) − ψ(k) + log V_d
        values_no_const.append(float(loss.detach()) + const)
    grads, grads_unfrozen = torch.stack(grads), torch.stack(grads_unfrozen)
    values = torch.tensor(values, dtype=DT)
    values_no_const = torch.tensor(values_no_const, dtype=DT)

    p = gcd.gradient_pieces(th_mu, th_l, m_d, c_d, T, "ula", STEP)
    kl_term = flat_grad(*p["kl_term"])
    mq, cq = gcd.chain_law(th_mu, th_l, m_d, c_d, T, "ula", STEP)
    value_exact = float(gaussian_kl(mq, cq, th_mu, gcd.covariance(th_l)) - gcd.log_partition(th_l))
    tol = 0.1 * float(kl_term.abs().max())
    tol_value = 0.1  # k-NN bias of Ĥ at n = 250, k = 5, d = 2: measured ≈ −0.04 nats
    m_tests = kl_term.numel() + 1
    alpha_per = alpha / m_tests

    def pvalues(sample: torch.Tensor, target: torch.Tensor, tolerance: float) -> np.ndarray:
        """Composite null |mean − target| ≤ tolerance: p = P(T ≥ (|mean − target| − tol)/se)."""
        s = sample.reshape(n_batches, -1)
        tgt = target.reshape(-1)
        se = s.std(0, unbiased=True) / math.sqrt(n_batches)
        excess = ((s.mean(0) - tgt).abs() - tolerance).clamp_min(0.0) / se
        return 2 * stats.t.sf(excess.numpy(), n_batches - 1), se.numpy()

    pv_g, se_g = pvalues(grads, kl_term, tol)
    pv_v, se_v = pvalues(values, torch.tensor(value_exact, dtype=DT), tol_value)
    # Power: each broken variant's shift, less the tolerance, against the t-test.
    shifts = {"sign_flipped": (2 * kl_term, se_g, tol),
              "energy_not_frozen": (flat_grad(*p["divergence"]), se_g, tol)}
    for name, (shift, se, tl) in shifts.items():
        assert t_test_power(np.clip(np.abs(shift.numpy()) - tl, 0, None), se, n_batches,
                            alpha_per) > 1 - 1e-3, name
    const_shift = float(values_no_const[0] - values[0])
    assert t_test_power(np.array([abs(const_shift) - tol_value]), se_v, n_batches,
                        alpha_per) > 1 - 1e-3
    assert_pvalues(list(pv_g) + list(pv_v), alpha)
    # Sign: the du2020 gradient points along +KL term (cosine, printed in the report).
    cosine = float(grads.mean(0) @ kl_term / (grads.mean(0).norm() * kl_term.norm()))
    assert cosine > 0.9

    broken = {"sign_flipped": (pvalues(-grads, kl_term, tol)[0], list(pv_v)),
              "energy_not_frozen": (pvalues(grads_unfrozen, kl_term, tol)[0], list(pv_v)),
              "entropy_constant_dropped": (pv_g, list(pvalues(values_no_const,
                                                              torch.tensor(value_exact, dtype=DT),
                                                              tol_value)[0]))}
    for name, (pg, pvv) in broken.items():
        with pytest.raises(AssertionError):
            assert_pvalues(list(pg) + pvv, alpha)


# ----------------------------------------------------------------------------------- C24


K = 20
KS = (1, 2, 5, 10)


def _truncation_errors(step: float) -> dict[int, float]:
    mu, scale_tril, m_d, c_d = _setup()
    full = flat_grad(*gcd.gradient_pieces(mu, scale_tril, m_d, c_d, K, "ula", step)["kl_term"])
    out = {}
    for k in KS + (K,):
        g = flat_grad(*gcd.truncated_kl_term(mu, scale_tril, m_d, c_d, K, k, step))
        out[k] = float((g - full).norm() / full.norm())
    return out


def test_c24_truncated_backprop_error_closed_form():
    """C24 (closed form, ULA, K = 20): relative error ‖g_k − g_K‖/‖g_K‖ of the KL term
    back-propagated through the last k steps. It is small only when the chain has nearly
    forgotten its start within k steps (ρ(A)^k ≪ 1, A = I − (λ/2)P): e.g. at λ = 1
    (ρ(A) = 0.70) k = 1 is within 7 %, at λ = 0.5 (ρ(A) = 0.85) k = 1 is off by 23 %, at
    λ = 0.1 (ρ(A) = 0.97) k = 1 is off by 93 % and k = 10 by 48 %. The error decreases
    monotonically in k and vanishes at k = K."""
    errors = {step: _truncation_errors(step) for step in (0.1, 0.5, 1.0)}
    for step, err in errors.items():
        assert err[K] < 1e-12
        seq = [err[k] for k in KS]
        assert all(a > b for a, b in itertools.pairwise(seq)), (step, seq)
    assert errors[1.0][1] < 0.1
    assert errors[0.1][1] > 0.8 and errors[0.1][10] > 0.3
    # A 'claim holds everywhere' assertion (k = 1 within 10 %) fails at small steps.
    assert not all(err[1] < 0.1 for err in errors.values())


@pytest.mark.stochastic
def test_c24_library_truncation_matches_closed_form(rng):
    """C24 through the library: ``sample_negatives`` with k = 1 of K = 20 steps (λ = 0.1) and
    ``kl_loss`` (energy part, weight 0) estimate ∂/∂θ E_{q̃_θ}[E_Ω] of the *truncated* law of
    ``gaussian_cd.truncated_chain_law``; batch means (40 × 500 chains), α = 1e-6 over 5
    coordinates, with power ≥ 1 − 1e-3 against the full-backprop value, which then fails."""
    alpha, n_batches, n, step, k = 1e-6, 40, 500, 0.1, 1
    mu, scale_tril, m_d, c_d = _setup()
    model = Gaussian(mu, gcd.covariance(scale_tril), dtype=DT)
    data = Gaussian(m_d, c_d, dtype=DT)
    params = (model.mu, model.scale_tril)
    th_mu, th_l = model.mu.detach(), model.scale_tril.detach()
    est = []
    for _ in range(n_batches):
        x_diff = _x_diff(model, data.sample(n, rng), K, k, step, rng)
        est.append(flat_grad(*torch.autograd.grad(kl_loss(model, x_diff), params)))
    est = torch.stack(est)

    def energy_part(kk):
        def f(m, s):
            mq, cq = gcd.truncated_chain_law(m, s, m_d, c_d, K, kk, step)
            return gcd.expected_energy(m.detach(), s.detach(), mq, cq)
        return flat_grad(*gcd.autograd_of(f, th_mu, th_l))

    truncated, full = energy_part(k), energy_part(K)
    pv, se = batch_mean_pvalues(est, truncated)
    assert t_test_power(full - truncated, se, n_batches, alpha / len(pv)) > 1 - 1e-3
    assert_pvalues(pv, alpha)
    with pytest.raises(AssertionError):
        assert_pvalues(batch_mean_pvalues(est, full)[0], alpha)
