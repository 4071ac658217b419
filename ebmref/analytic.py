"""Closed forms used by the verification suite and the toy metrics (never by the training loop).

Gaussian laws of Langevin chains
--------------------------------
On E(x) = ½(x − μ)ᵀP(x − μ) (P = Σ⁻¹) the generic Langevin step x' = x − a∇E + sξ is linear:
x' − μ = A(x − μ) + sξ with A = I − aP. From N(m₀, C₀) the law after n steps is

    mean μ + Aⁿ(m₀ − μ),   covariance C∞ + Aⁿ(C₀ − C∞)Aⁿ,   C∞ = s²(I − A²)⁻¹,

with (a, s²) = (λ/2, λ) for the paper's eq. 1 and (α, σ²) for Du's decoupled form. For eq. 1,
C∞ = (P − (λ/4)P²)⁻¹ ≠ Σ: ULA is biased at any fixed λ (claim C4).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ebmref.samplers import langevin_coefficients
from ebmref.validation import check_int_range, check_positive


def _sym(m: Tensor) -> Tensor:
    return 0.5 * (m + m.transpose(-1, -2))


def ula_stationary_covariance(precision: Tensor, step_size: float,
                              noise: float | None = None) -> Tensor:
    """C∞ = s²(I − A²)⁻¹ of ULA on a Gaussian with precision P; raises if A = I − aP is not a
    contraction (the chain diverges: a λ_max(P) ≥ 2)."""
    a, _, s2 = langevin_coefficients(step_size, noise)
    eye = torch.eye(precision.shape[-1], dtype=precision.dtype)
    A = eye - a * precision
    rho = float(torch.linalg.eigvalsh(_sym(A.detach())).abs().max())
    if rho >= 1.0:
        raise ValueError(f"step_size: {step_size} makes ULA unstable (spectral radius of "
                         f"I − aP is {rho:.3g} ≥ 1)")
    return _sym(s2 * torch.linalg.inv(eye - A @ A))


def ula_gaussian_law(mu: Tensor, precision: Tensor, m0: Tensor, c0: Tensor, n_steps: int,
                     step_size: float, noise: float | None = None) -> tuple[Tensor, Tensor]:
    """Exact mean and covariance after n ULA steps from N(m₀, C₀) on N(μ, P⁻¹)."""
    check_int_range(n_steps, "n_steps", 0)
    a, _, s2 = langevin_coefficients(step_size, noise)
    eye = torch.eye(mu.shape[-1], dtype=mu.dtype)
    A = eye - a * precision
    An = torch.linalg.matrix_power(A, n_steps)
    mean = mu + An @ (m0 - mu)
    # C ← ACAᵀ + s²I in closed form when the chain is stable; iterate it when C∞ does not exist.
    try:
        c_inf = ula_stationary_covariance(precision, step_size, noise)
    except ValueError:
        cov = c0
        for _ in range(n_steps):
            cov = A @ cov @ A.T + s2 * eye
        return mean, _sym(cov)
    return mean, _sym(c_inf + An @ (c0 - c_inf) @ An.T)


def ou_transition_law(mu: Tensor, covariance: Tensor, m0: Tensor, c0: Tensor,
                      tau: float) -> tuple[Tensor, Tensor]:
    """Law at time τ of dX = −∇E dt + √2 dW on N(μ, Σ) from N(m₀, C₀):
    mean μ + D(m₀ − μ), covariance Σ + D(C₀ − Σ)Dᵀ with D = e^{−τΣ⁻¹}."""
    check_positive(tau, "tau")
    D = torch.linalg.matrix_exp(-tau * torch.linalg.inv(covariance))
    return mu + D @ (m0 - mu), _sym(covariance + D @ (c0 - covariance) @ D.T)


def gaussian_entropy(covariance: Tensor) -> Tensor:
    """H(N(m, C)) = ½ log((2πe)^d det C)."""
    d = covariance.shape[-1]
    return 0.5 * (d * math.log(2 * math.pi * math.e) + torch.logdet(covariance))


def gaussian_kl(m1: Tensor, c1: Tensor, m2: Tensor, c2: Tensor) -> Tensor:
    """KL[N(m₁, C₁) ‖ N(m₂, C₂)] = ½(tr(C₂⁻¹C₁) + (m₂−m₁)ᵀC₂⁻¹(m₂−m₁) − d + log det C₂/det C₁)."""
    d = m1.shape[-1]
    p2 = torch.linalg.inv(c2)
    diff = m2 - m1
    return 0.5 * (torch.trace(p2 @ c1) + diff @ p2 @ diff - d
                  + torch.logdet(c2) - torch.logdet(c1))


def grid(bounds: tuple[tuple[float, float], ...], n_points: int,
         dtype: torch.dtype = torch.float64) -> tuple[Tensor, float]:
    """A regular grid over a box in 1-D or 2-D: points (N, d) and the cell volume."""
    axes = [torch.linspace(lo, hi, n_points, dtype=dtype) for lo, hi in bounds]
    cell = math.prod((hi - lo) / (n_points - 1) for lo, hi in bounds)
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1), cell


def simpson_weights(n_points: int, dim: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Tensor-product Simpson weights (1, 4, 2, 4, …, 4, 1)/3 per axis, flattened in the
    order of :func:`grid`; multiply by the cell volume to integrate. Simpson's rule pairs the
    intervals, so ``n_points`` is odd (≥ 3); ``dim`` is 1 or 2."""
    check_int_range(n_points, "n_points", 3)
    if n_points % 2 == 0:
        raise ValueError(f"n_points: Simpson's rule needs an odd number of points, got {n_points}")
    if dim not in (1, 2):
        raise ValueError(f"dim: must be 1 or 2, got {dim!r}")
    w = torch.ones(n_points, dtype=dtype)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    w = w / 3.0
    return (w[:, None] * w[None, :]).reshape(-1) if dim == 2 else w


def _log_simpson(log_f: Tensor, n_points: int, dim: int, cell: float) -> Tensor:
    """log ∫ f by the tensor-product Simpson rule, in log space."""
    w = simpson_weights(n_points, dim, log_f.dtype)
    return torch.logsumexp(log_f + torch.log(w), 0) + math.log(cell)


def log_partition_quadrature(
    energy: Callable[[Tensor], Tensor],
    bounds: tuple[tuple[float, float], ...],
    n_points: int = 801,
    dtype: torch.dtype = torch.float64,
    batch: int = 65536,
) -> tuple[float, float]:
    """log Z = log ∫_box exp(−E(x)) dx by Simpson's rule on a 1-D or 2-D grid.

    Returns (log Z, error estimate), the estimate being |log Z(n) − log Z((n+1)/2)| from the
    same rule on the grid with every other point (Simpson's error falls as h⁴, so this bounds
    the error of the fine grid by a wide margin once both are resolved). Mass outside the box is
    not counted: choose the box so that exp(−E) is negligible at its border.
    """
    dim = len(bounds)
    if dim not in (1, 2):
        raise ValueError(f"bounds: quadrature supports 1-D or 2-D boxes, got {dim} dimensions")
    for lo, hi in bounds:
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"bounds: each axis needs finite low < high, got ({lo}, {hi})")
    if n_points < 5 or n_points % 2 == 0 or (n_points - 1) % 4 != 0:
        raise ValueError(f"n_points: must be ≥ 5 with n_points ≡ 1 (mod 4), got {n_points}")
    pts, cell = grid(bounds, n_points, dtype)
    with torch.no_grad():
        neg_e = torch.cat([-energy(pts[i:i + batch]) for i in range(0, len(pts), batch)])
    if not torch.isfinite(neg_e).any():
        raise ValueError("energy: non-finite everywhere on the quadrature grid")
    neg_e = torch.nan_to_num(neg_e, nan=-math.inf)
    fine = _log_simpson(neg_e, n_points, dim, cell)
    coarse_n = (n_points + 1) // 2
    shaped = neg_e.reshape(*([n_points] * dim))
    coarse_vals = shaped[::2] if dim == 1 else shaped[::2, ::2]
    coarse = _log_simpson(coarse_vals.reshape(-1), coarse_n, dim, cell * 2**dim)
    return float(fine), float((fine - coarse).abs())
