"""§4.4 and §4.6 on the Gaussian family, in closed form.

C15  CD* (KL term dropped) does not follow the gradient of any fixed function: its update field
     F(θ) = E_data[∇_θE_θ] − E_{q_θ^t}[∇_θE_θ] has an asymmetric Jacobian and a nonzero
     circulation around a closed loop; the true CD and NLL gradient fields have neither.
C17  Persistent chains with small parameter updates approximate one long chain:
     p_{θ_k}^t(p_{θ_{k−1}}^t) → p_{θ_k}^{2t} as the update θ_k − θ_{k−1} = δv → 0.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ebmref import gaussian_cd as gcd
from ebmref.analytic import gaussian_kl
from verification.cd_theory_helpers import DT, gaussian_setup

T, STEP = 5, 0.2
_, _, M_D, C_D = gaussian_setup(1)


def _unpack(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """θ = (μ, σ) of the 1-D model N(μ, σ²), as (mu, scale_tril) of ebmref.energy.Gaussian."""
    return theta[:1], theta[1:].reshape(1, 1)


def cd_star_field(theta: torch.Tensor, kernel: str) -> torch.Tensor:
    """F(θ) = positive − divergence phase with q_θ^t at the *same* θ (the CD* update)."""
    mu, s = _unpack(theta)
    mq, cq = gcd.chain_law(mu, s, M_D, C_D, T, kernel, STEP)
    pos = gcd.expected_energy_grad(mu, s, M_D, C_D)
    div = gcd.expected_energy_grad(mu, s, mq, cq)
    return torch.cat([pos[0] - div[0], (pos[1] - div[1]).reshape(-1)])


def loss_field(loss_fn, theta: torch.Tensor, *args) -> torch.Tensor:
    """∇_θ of a closed-form loss, differentiable again (for its Jacobian, the Hessian)."""
    mu, s = _unpack(theta)
    g_mu, g_s = torch.autograd.grad(loss_fn(mu, s, M_D, C_D, *args), (mu, s), create_graph=True)
    return torch.cat([g_mu, g_s.reshape(-1)])


def _theta_leaf(values) -> torch.Tensor:
    return torch.tensor(values, dtype=DT, requires_grad=True)


def _jacobian(field, theta0) -> torch.Tensor:
    return torch.autograd.functional.jacobian(field, theta0)


def _circulation(field, centre, radius: float, n: int = 256) -> float:
    """∮ F·dθ on the circle θ(φ) = centre + r(cos φ, sin φ); the trapezoid rule is spectrally
    accurate for a smooth periodic integrand."""
    total = 0.0
    for phi in np.linspace(0.0, 2 * math.pi, n, endpoint=False):
        theta = (centre + radius * torch.tensor([math.cos(phi), math.sin(phi)], dtype=DT))
        theta = theta.detach().requires_grad_(True)
        dtheta = radius * torch.tensor([-math.sin(phi), math.cos(phi)], dtype=DT)
        total += float(field(theta) @ dtheta)
    return total * 2 * math.pi / n


@pytest.mark.parametrize("kernel", ["ou", "ula"])
def test_c15_cd_star_field_is_not_a_gradient(kernel):
    """C15: Jacobian of the CD* field is asymmetric (|J₁₂ − J₂₁| = 0.019 OU, 0.024 ULA, with
    J₁₂ ≈ 0.30) and its circulation around a loop of radius 0.2 is nonzero (−2.7e-3 OU,
    −3.5e-3 ULA; ~1e-18 for ∇L_CD); a gradient field has a symmetric
    Jacobian (Hessian) and zero circulation — checked on ∇L_CD and ∇L_NLL (the 'broken'
    variants of the asymmetry assertion: their asymmetry is < 1e-10)."""
    theta0 = _theta_leaf([0.3, 1.3])
    j_star = _jacobian(lambda th: cd_star_field(th, kernel), theta0)
    asym = float((j_star - j_star.T).abs().max())
    assert asym > 1e-2, asym
    circ_star = _circulation(lambda th: cd_star_field(th, kernel), theta0.detach(), 0.2, n=64)
    assert abs(circ_star) > 1e-3, circ_star
    gradient_fields = {
        "cd": lambda th: loss_field(gcd.cd_loss, th, T, kernel, STEP),
        "nll": lambda th: loss_field(gcd.nll_loss, th),
    }
    for name, field in gradient_fields.items():
        j = _jacobian(field, theta0)
        assert float((j - j.T).abs().max()) < 1e-10, name
        assert abs(_circulation(field, theta0.detach(), 0.2, n=64)) < 1e-10, name


def _persistent_vs_long(delta: float, kernel: str, restart: bool = False) -> tuple[float, float]:
    """(KL, ‖Δmean‖ + ‖ΔC‖_F) between t steps at θ_k started from t steps at θ_{k−1}
    (persistent; or from the data if ``restart``) and 2t steps at θ_k from the data."""
    mu, scale_tril, m_d, c_d = gaussian_setup(2)
    v_mu = torch.tensor([1.0, -0.5], dtype=DT)
    v_l = torch.tensor([[0.3, 0.0], [0.2, -0.4]], dtype=DT)
    mu_k, l_k = mu + delta * v_mu, scale_tril + delta * v_l
    m_long, c_long = gcd.chain_law(mu_k, l_k, m_d, c_d, 2 * T, kernel, STEP)
    m1, c1 = (m_d, c_d) if restart else gcd.chain_law(mu, scale_tril, m_d, c_d, T, kernel, STEP)
    m_p, c_p = gcd.chain_law(mu_k, l_k, m1, c1, T, kernel, STEP)
    kl = float(gaussian_kl(m_p, c_p, m_long, c_long))
    return kl, float((m_p - m_long).norm() + (c_p - c_long).norm())


@pytest.mark.parametrize("kernel", ["ou", "ula"])
def test_c17_persistent_chains_approximate_one_long_chain(kernel):
    """C17: at δ = 0 the two laws are equal (Markov semigroup, ≤ 1e-12); as δ → 0 the law
    error falls like δ (slope 1.00 ± 0.05 on a log-log fit over δ = 1e-1…1e-4) and the KL like
    δ² (slope 2.00 ± 0.05; KL ≈ 0.07 δ² for ULA, 0.095 δ² for OU here). Broken variant: chains
    restarted at the data each update — the error does not vanish (KL ≈ 0.022–0.027)."""
    kl0, err0 = _persistent_vs_long(0.0, kernel)
    assert abs(kl0) < 1e-12 and err0 < 1e-12
    deltas = np.array([1e-1, 1e-2, 1e-3, 1e-4])
    kls, errs = zip(*(_persistent_vs_long(float(d), kernel) for d in deltas))
    slope_err = np.polyfit(np.log(deltas), np.log(errs), 1)[0]
    slope_kl = np.polyfit(np.log(deltas), np.log(kls), 1)[0]
    assert abs(slope_err - 1.0) < 0.05, slope_err
    assert abs(slope_kl - 2.0) < 0.05, slope_kl
    restarted = [_persistent_vs_long(float(d), kernel, restart=True)[0] for d in deltas]
    assert min(restarted) > 1e-2  # broken variant: no convergence as δ → 0
