"""Contrastive divergence versus maximum likelihood in closed form on the Gaussian family (§3–4).

Model p_θ = N(μ, Σ) with θ = (μ, L), Σ = L Lᵀ — the parameters ``mu`` and ``scale_tril`` of
:class:`ebmref.energy.Gaussian` (only the lower triangle of L is used), energy
E_θ(x) = ½(x − μ)ᵀP(x − μ), P = Σ⁻¹, log Z_θ = ½ log det(2πΣ). Data p_data = N(m_d, C_d).

The chain law q_θ^t (t steps started at the data) is Gaussian for both kernels:

* ``kernel="ou"``: the exact Langevin diffusion dX = −∇E dt + √2 dW run for time t·λ/2
  (the exact version of t eq.-1 steps of size λ); it leaves p_θ invariant;
* ``kernel="ula"``: t steps of eq. 1, x ← x − (λ/2)∇E + √λ ξ (or Du's x − α∇E + σξ with
  ``noise=σ``); its stationary law N(μ, (P − (λ/4)P²)⁻¹) is *not* p_θ.

Everything is written in torch so that autograd of the closed-form losses cross-checks the
closed-form gradient pieces (float64 recommended). The pieces of §4.2, all unsigned
expectations of ∇_θE_θ or partial derivatives, are

    positive   = E_{p_data}[∇_θ E_θ]                    (eq. 2)
    divergence = E_{q_Ω(θ)^t}[∇_θ E_θ]                  (§4.2)
    negative   = E_{p_θ}[∇_θ E_θ]  (= −∇_θ log Z_θ)      (eq. 2, claim C8)
    kl_term    = ∂/∂θ KL[q_θ^t ‖ p_Ω(θ)]                (§4.2, §4.4)

so that ∇L_NLL = positive − negative, ∇KL[q_θ^t ‖ p_θ] = kl_term + divergence − negative,
∇L_CD = positive − divergence − kl_term and the CD* update is positive − divergence.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ebmref.analytic import gaussian_entropy, gaussian_kl, ou_transition_law, ula_gaussian_law
from ebmref.energy import gaussian_covariance as covariance
from ebmref.energy import gaussian_log_partition as log_partition
from ebmref.energy import gaussian_precision as precision
from ebmref.validation import check_choice, check_int_range, check_positive

KERNELS = ("ou", "ula")
Law = tuple[Tensor, Tensor]
Grad = tuple[Tensor, Tensor]


def expected_energy(mu: Tensor, scale_tril: Tensor, m: Tensor, c: Tensor) -> Tensor:
    """E_{N(m, C)}[E_θ(x)] = ½ tr(PC) + ½ (m − μ)ᵀP(m − μ)."""
    P = precision(scale_tril)
    diff = m - mu
    return 0.5 * (torch.trace(P @ c) + diff @ P @ diff)


def expected_energy_grad(mu: Tensor, scale_tril: Tensor, m: Tensor, c: Tensor) -> Grad:
    """E_{N(m, C)}[∇_θ E_θ(x)] by hand (no autograd):

    ∇_μ E = −P(x − μ);  ∂E/∂P = ½(x − μ)(x − μ)ᵀ, so with G_P = ½(C + (m − μ)(m − μ)ᵀ):
    ∂/∂Σ = −P G_P P and ∂/∂L = tril(2 (∂/∂Σ) L) (Σ = LLᵀ, G symmetric).
    ``m`` may be a batch (B, d) with ``c`` zero to get per-sample gradients (B, d), (B, d, d).
    """
    L = torch.tril(scale_tril)
    P = precision(scale_tril)
    diff = m - mu
    g_mu = -diff @ P
    outer = diff[..., :, None] * diff[..., None, :]
    g_p = 0.5 * (c + outer)
    g_sigma = -P @ g_p @ P
    return g_mu, torch.tril(2.0 * g_sigma @ L)


def chain_law(mu: Tensor, scale_tril: Tensor, m0: Tensor, c0: Tensor, t: int, kernel: str,
              step_size: float, noise: float | None = None) -> Law:
    """Law (mean, cov) of q_θ^t: t steps of ``kernel`` on p_θ from N(m₀, C₀).

    ``kernel="ou"`` runs the exact diffusion for time t·λ/2 (``noise`` must be None);
    ``kernel="ula"`` runs t eq.-1 steps (or Du's decoupled steps with ``noise=σ``).
    """
    check_choice(kernel, "kernel", KERNELS)
    check_int_range(t, "t", 0)
    check_positive(step_size, "step_size")
    if t == 0:
        return m0, c0
    if kernel == "ou":
        if noise is not None:
            raise ValueError(f"noise: the exact OU kernel has no separate noise, got {noise}")
        return ou_transition_law(mu, covariance(scale_tril), m0, c0, t * step_size / 2.0)
    return ula_gaussian_law(mu, precision(scale_tril), m0, c0, t, step_size, noise)


def nll_loss(mu: Tensor, scale_tril: Tensor, m_d: Tensor, c_d: Tensor) -> Tensor:
    """L_NLL = −E_data[log p_θ] = E_data[E_θ] + log Z_θ (§3)."""
    return expected_energy(mu, scale_tril, m_d, c_d) + log_partition(scale_tril)


def kl_data_model(mu: Tensor, scale_tril: Tensor, m_d: Tensor, c_d: Tensor) -> Tensor:
    """KL[p_data ‖ p_θ] (= L_NLL − H(p_data), claim C12)."""
    return gaussian_kl(m_d, c_d, mu, covariance(scale_tril))


def kl_chain_model(mu: Tensor, scale_tril: Tensor, m_d: Tensor, c_d: Tensor, t: int,
                   kernel: str, step_size: float, noise: float | None = None) -> Tensor:
    """KL[q_θ^t ‖ p_θ], θ entering both arguments."""
    mq, cq = chain_law(mu, scale_tril, m_d, c_d, t, kernel, step_size, noise)
    return gaussian_kl(mq, cq, mu, covariance(scale_tril))


def cd_loss(mu: Tensor, scale_tril: Tensor, m_d: Tensor, c_d: Tensor, t: int, kernel: str,
            step_size: float, noise: float | None = None) -> Tensor:
    """L_CD = KL[p_data ‖ p_θ] − KL[q_θ^t ‖ p_θ] (§4)."""
    return (kl_data_model(mu, scale_tril, m_d, c_d)
            - kl_chain_model(mu, scale_tril, m_d, c_d, t, kernel, step_size, noise))


def kl_to_frozen_model(mu: Tensor, scale_tril: Tensor, m_d: Tensor, c_d: Tensor, t: int,
                       kernel: str, step_size: float, noise: float | None = None) -> Tensor:
    """KL[q_θ^t ‖ p_Ω(θ)]: θ enters only through the chain law (p's parameters detached)."""
    mq, cq = chain_law(mu, scale_tril, m_d, c_d, t, kernel, step_size, noise)
    return gaussian_kl(mq, cq, mu.detach(), covariance(scale_tril.detach()))


def l_kl(mu: Tensor, scale_tril: Tensor, m_d: Tensor, c_d: Tensor, t: int, kernel: str,
         step_size: float, noise: float | None = None) -> Tensor:
    """L_KL = H(q_θ^t) − E_{q_θ^t}[E_Ω(θ)] − log Z_Ω(θ) (§5.4.1, claim C22)."""
    mq, cq = chain_law(mu, scale_tril, m_d, c_d, t, kernel, step_size, noise)
    mu_o, l_o = mu.detach(), scale_tril.detach()
    return gaussian_entropy(cq) - expected_energy(mu_o, l_o, mq, cq) - log_partition(l_o)


def _grad(f: Tensor, mu: Tensor, scale_tril: Tensor) -> Grad:
    g_mu, g_l = torch.autograd.grad(f, (mu, scale_tril), allow_unused=True)
    return (torch.zeros_like(mu) if g_mu is None else g_mu,
            torch.zeros_like(scale_tril) if g_l is None else g_l)


def gradient_pieces(mu: Tensor, scale_tril: Tensor, m_d: Tensor, c_d: Tensor, t: int,
                    kernel: str, step_size: float, noise: float | None = None) -> dict[str, Grad]:
    """The four pieces of §4.2 at θ, each a (∂/∂μ, ∂/∂L) pair (see the module docstring).

    positive, divergence, negative: :func:`expected_energy_grad` by hand at the data law, the
    detached chain law and p_θ itself; kl_term: autograd of :func:`kl_to_frozen_model`.
    """
    with torch.no_grad():
        mq, cq = chain_law(mu, scale_tril, m_d, c_d, t, kernel, step_size, noise)
        pieces = {
            "positive": expected_energy_grad(mu, scale_tril, m_d, c_d),
            "divergence": expected_energy_grad(mu, scale_tril, mq, cq),
            "negative": expected_energy_grad(mu, scale_tril, mu, covariance(scale_tril)),
        }
    th_mu = mu.detach().requires_grad_(True)
    th_l = scale_tril.detach().requires_grad_(True)
    with torch.enable_grad():
        kl = kl_to_frozen_model(th_mu, th_l, m_d, c_d, t, kernel, step_size, noise)
        pieces["kl_term"] = _grad(kl, th_mu, th_l)
    return pieces


def combine(pieces: dict[str, Grad], coefficients: dict[str, float]) -> Grad:
    """Σ cᵢ · pieceᵢ, e.g. {"positive": 1, "divergence": -1} for the CD* update."""
    g_mu = sum(c * pieces[k][0] for k, c in coefficients.items())
    g_l = sum(c * pieces[k][1] for k, c in coefficients.items())
    return g_mu, g_l


def autograd_of(loss_fn, mu: Tensor, scale_tril: Tensor, *args, **kwargs) -> Grad:
    """(∂/∂μ, ∂/∂L) of ``loss_fn(mu, scale_tril, *args, **kwargs)`` by autograd."""
    th_mu = mu.detach().requires_grad_(True)
    th_l = scale_tril.detach().requires_grad_(True)
    with torch.enable_grad():
        return _grad(loss_fn(th_mu, th_l, *args, **kwargs), th_mu, th_l)


def truncated_chain_law(mu: Tensor, scale_tril: Tensor, m0: Tensor, c0: Tensor, t: int, k: int,
                        step_size: float, noise: float | None = None) -> Law:
    """Law of q_θ^t as seen by back-propagation through only the last k of t ULA steps (§5.4.2):
    the law after t − k steps is computed at Ω(θ) (detached), then k steps at θ.

    Its θ-derivative is exactly what ``langevin(..., differentiable_steps=k)`` estimates by
    Monte Carlo (the eq.-1 noise does not depend on θ); k = t gives the full gradient.
    """
    check_int_range(t, "t", 1)
    check_int_range(k, "k", 1, t)
    with torch.no_grad():
        m_cut, c_cut = chain_law(mu, scale_tril, m0, c0, t - k, "ula", step_size, noise)
    return chain_law(mu, scale_tril, m_cut, c_cut, k, "ula", step_size, noise)


def truncated_kl_term(mu: Tensor, scale_tril: Tensor, m_d: Tensor, c_d: Tensor, t: int, k: int,
                      step_size: float, noise: float | None = None) -> Grad:
    """∂/∂θ KL[q_θ^t ‖ p_Ω(θ)] back-propagated through the last k ULA steps only (k = t: the
    KL term of §4.2); see :func:`truncated_chain_law`."""
    def kl(m: Tensor, s: Tensor) -> Tensor:
        mq, cq = truncated_chain_law(m, s, m_d, c_d, t, k, step_size, noise)
        return gaussian_kl(mq, cq, m.detach(), covariance(s.detach()))
    return autograd_of(kl, mu, scale_tril)
