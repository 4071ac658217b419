"""ebmref.gaussian_cd with Du's decoupled noise (``noise=σ``), against 1-D closed forms by hand.

On p_θ = N(μ, L²) a ULA step x ← x − α P(x − μ) + σξ (P = 1/L²) is linear, so after t steps
from N(m, v) the law is N(μ + Aᵗ(m − μ), C∞ + A²ᵗ(v − C∞)) with A = 1 − αP, C∞ = σ²/(1 − A²).
Every CD quantity of the module (chain KL, CD loss, L_KL, the divergence and KL-term
gradient pieces, the truncated chain law and its KL term) is recomputed here with plain floats
and central finite differences, with σ ≠ √α so that dropping ``noise`` anywhere (eq. 1's
noise √(2α)) changes the answer. The argument checks of ``truncated_chain_law`` are pinned too.
"""

from __future__ import annotations

import math

import pytest
import torch

from ebmref import gaussian_cd as gcd

F64 = torch.float64
MU, L, M_D, V_D = 0.3, 1.2, -0.5, 0.8  # model N(μ, L²), data N(m_d, v_d)
STEP, SIGMA, T = 0.1, 0.3, 4


def chain(mu, ell, m, v, t, step=STEP, sigma=SIGMA):
    """Mean and variance after t Du steps from N(m, v) on N(mu, ell²)."""
    a = 1.0 - step / ell**2
    c_inf = sigma**2 / (1.0 - a * a)
    return mu + a**t * (m - mu), c_inf + a ** (2 * t) * (v - c_inf)


def kl(m1, v1, m2, v2):
    """KL[N(m1, v1) ‖ N(m2, v2)] in 1-D."""
    return 0.5 * (v1 / v2 + (m2 - m1) ** 2 / v2 - 1.0 + math.log(v2 / v1))


def fd(f, mu, ell, h=1e-5):
    """(∂f/∂μ, ∂f/∂L) by central differences."""
    return ((f(mu + h, ell) - f(mu - h, ell)) / (2 * h),
            (f(mu, ell + h) - f(mu, ell - h)) / (2 * h))


def args():
    t = lambda v: torch.tensor(v, dtype=F64)
    return t([MU]), t([[L]]), t([M_D]), t([[V_D]])


def test_losses_with_du_noise_match_closed_forms():
    """KL[q_θᵗ ‖ p_θ], L_CD = KL[p_data ‖ p_θ] − KL[q_θᵗ ‖ p_θ], KL[q_θᵗ ‖ p_Ω(θ)] (same value)
    and L_KL = −KL[q_θᵗ ‖ p_θ] (as a value) for σ = 0.3, α = 0.1."""
    mq, vq = chain(MU, L, M_D, V_D, T)
    want = kl(mq, vq, MU, L**2)
    a = args()
    assert float(gcd.kl_chain_model(*a, T, "ula", STEP, SIGMA)) == pytest.approx(want, rel=1e-12)
    assert float(gcd.kl_to_frozen_model(*a, T, "ula", STEP, SIGMA)) == pytest.approx(want,
                                                                                     rel=1e-12)
    assert float(gcd.l_kl(*a, T, "ula", STEP, SIGMA)) == pytest.approx(-want, rel=1e-10)
    cd = kl(M_D, V_D, MU, L**2) - want
    assert float(gcd.cd_loss(*a, T, "ula", STEP, SIGMA)) == pytest.approx(cd, rel=1e-12)


def test_gradient_pieces_with_du_noise_match_closed_forms():
    """divergence = E_q[∇_θE] = (−(m_q − μ)/L², −(v_q + (m_q − μ)²)/L³) and kl_term =
    ∂/∂θ KL[q_θᵗ ‖ p_Ω] (finite differences of the closed form with p frozen)."""
    mq, vq = chain(MU, L, M_D, V_D, T)
    pieces = gcd.gradient_pieces(*args(), T, "ula", STEP, SIGMA)
    g_mu, g_l = pieces["divergence"]
    assert float(g_mu[0]) == pytest.approx(-(mq - MU) / L**2, rel=1e-12)
    assert float(g_l[0, 0]) == pytest.approx(-(vq + (mq - MU) ** 2) / L**3, rel=1e-12)
    want = fd(lambda m, s: kl(*chain(m, s, M_D, V_D, T), MU, L**2), MU, L)
    k_mu, k_l = pieces["kl_term"]
    assert float(k_mu[0]) == pytest.approx(want[0], rel=1e-7, abs=1e-10)
    assert float(k_l[0, 0]) == pytest.approx(want[1], rel=1e-7, abs=1e-10)


def test_truncated_chain_law_and_kl_term_with_du_noise():
    """The truncated law equals the full t-step law as a value (both segments with σ); its
    KL term differentiates only the last k steps from the frozen law after t − k steps."""
    t, k = 5, 2
    a = args()
    mq, vq = chain(MU, L, M_D, V_D, t)
    m, c = gcd.truncated_chain_law(*a, t, k, STEP, SIGMA)
    assert float(m[0]) == pytest.approx(mq, rel=1e-12)
    assert float(c[0, 0]) == pytest.approx(vq, rel=1e-12)
    m_cut, v_cut = chain(MU, L, M_D, V_D, t - k)
    want = fd(lambda mu, s: kl(*chain(mu, s, m_cut, v_cut, k), MU, L**2), MU, L)
    g_mu, g_l = gcd.truncated_kl_term(*a, t, k, STEP, SIGMA)
    assert float(g_mu[0]) == pytest.approx(want[0], rel=1e-7, abs=1e-10)
    assert float(g_l[0, 0]) == pytest.approx(want[1], rel=1e-7, abs=1e-10)


def test_truncated_chain_law_argument_checks():
    """t ≥ 1 (t = 1 with k = 1 is one step from the data) and 1 ≤ k ≤ t, named in the error."""
    a = args()
    m, c = gcd.truncated_chain_law(*a, 1, 1, STEP, SIGMA)
    mq, vq = chain(MU, L, M_D, V_D, 1)
    assert (float(m[0]), float(c[0, 0])) == pytest.approx((mq, vq), rel=1e-12)
    with pytest.raises(ValueError, match=r"^t: must be an integer in \[1, ∞\], got 0$"):
        gcd.truncated_chain_law(*a, 0, 1, STEP)
    with pytest.raises(ValueError, match=r"^k: must be an integer in \[1, 3\], got 4$"):
        gcd.truncated_chain_law(*a, 3, 4, STEP)


def test_chain_law_argument_checks_name_the_argument():
    """chain_law refuses a negative length and a non-positive step, naming each."""
    a = args()
    with pytest.raises(ValueError, match=r"^t: must be an integer in \[0, ∞\], got -1$"):
        gcd.chain_law(*a, -1, "ula", STEP)
    with pytest.raises(ValueError, match=r"^step_size: must be a finite number > 0, got 0\.0$"):
        gcd.chain_law(*a, 2, "ou", 0.0)
