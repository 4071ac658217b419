"""The standard targets of :func:`ebmref.conformance.check_sampler`: energies whose laws are
known exactly, with the fixed design (chains, steps, step sizes) each kind of check uses.

* ``gauss2d``: N(μ, Σ) in 2-D, μ = (0.5, −1), Σ = [[1, 0.6], [0.6, 0.8]] (eigenvalues of Σ
  ≈ 1.51 and 0.29, so the precision reaches ≈ 3.4: ULA's bias is large on the stiff axis);
* ``gauss20d``: N(μ, Σ) in 20-D, μ evenly spaced in [−1, 1], Σ = Q diag(s) Qᵀ with the
  variances s evenly spaced in [0.5, 2] and Q the orthonormal DCT-II matrix (dense, no random
  numbers in the design);
* ``mixture2d``: a 2-D mixture of two correlated Gaussians (weights ∝ e⁰, e^0.5), whose
  projections uᵀX have the exact CDF Σₖ πₖ Φ((t − uᵀμₖ)/√(uᵀΣₖu));
* ``double_well``: E(x) = 2(x² − 1)² in 1-D, CDF by quadrature
  (:meth:`ebmref.energy.DoubleWell.cdf`).

Design (``scale=1``; :data:`TARGETS`), chains × steps of step size:

============  =========  ====================  ====================  ===================
target        chains     "ula" (λ)             "decoupled" (α)       "exact"
============  =========  ====================  ====================  ===================
gauss2d       40,000     15 × 0.4              15 × 0.2              5 × 0.6
gauss20d      10,000     10 × 0.4              10 × 0.2              5 × 0.5
mixture2d     150,000    —                     —                     4 × 0.3
double_well   100,000    —                     —                     6 × 0.15
============  =========  ====================  ====================  ===================

ULA chains start at N(μ + 1.5·1, 0.3·I), away from the target, so the transient is tested too;
exact kernels start at exact samples of the target.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from ebmref.energy import AnalyticEnergy, DoubleWell, Gaussian, GaussianMixture

F64 = torch.float64


def dct_orthogonal(d: int) -> Tensor:
    """The orthonormal DCT-II matrix Q (d × d), Q Qᵀ = I: a fixed dense rotation."""
    k = torch.arange(d, dtype=F64)[:, None]
    n = torch.arange(d, dtype=F64)[None, :]
    q = torch.cos(math.pi * (2 * n + 1) * k / (2 * d)) * math.sqrt(2.0 / d)
    q[0] /= math.sqrt(2.0)
    return q


def gauss2d() -> Gaussian:
    return Gaussian([0.5, -1.0], [[1.0, 0.6], [0.6, 0.8]], dtype=F64)


def gauss20d() -> Gaussian:
    d = 20
    q = dct_orthogonal(d)
    cov = q @ torch.diag(torch.linspace(0.5, 2.0, d, dtype=F64)) @ q.T
    return Gaussian(torch.linspace(-1.0, 1.0, d, dtype=F64), 0.5 * (cov + cov.T), dtype=F64)


def mixture2d() -> GaussianMixture:
    return GaussianMixture([0.0, 0.5], [[-1.5, 0.0], [1.5, 0.5]],
                           [[[0.5, 0.2], [0.2, 0.4]], [[0.3, 0.0], [0.0, 0.6]]], dtype=F64)


def double_well() -> DoubleWell:
    return DoubleWell(2.0, 0.0, dtype=F64)


@dataclass(frozen=True)
class Target:
    """A standard target and its design.

    ``n``: chains at ``scale=1``; ``step``/``n_steps``: defaults per kind ("ula" is eq. 1's λ,
    "decoupled" Du's α, "exact" the kernel's own step, chosen for MALA-like kernels);
    ``sd_min``: the smallest standard deviation of the target (of a component, for the
    mixture; of a well, for the double well), the unit of the movement guard; ``start``:
    (m₀ shift from μ, C₀ scale) of the ULA start N(μ + shift·1, scale·I).
    """

    name: str
    make: Callable[[], AnalyticEnergy]
    n: int
    step: dict[str, float]
    n_steps: dict[str, int]
    sd_min: float
    start: tuple[float, float] = (1.5, 0.3)


TARGETS: dict[str, Target] = {
    "gauss2d": Target("gauss2d", gauss2d, 40_000, {"ula": 0.4, "decoupled": 0.2, "exact": 0.6},
                      {"ula": 15, "decoupled": 15, "exact": 5}, 0.54),
    "gauss20d": Target("gauss20d", gauss20d, 10_000,
                       {"ula": 0.4, "decoupled": 0.2, "exact": 0.5},
                       {"ula": 10, "decoupled": 10, "exact": 5}, math.sqrt(0.5)),
    "mixture2d": Target("mixture2d", mixture2d, 150_000, {"exact": 0.3}, {"exact": 4}, 0.5),
    "double_well": Target("double_well", double_well, 100_000, {"exact": 0.15}, {"exact": 6},
                          0.25),
}

KIND_TARGETS: dict[str, tuple[str, ...]] = {
    "ula": ("gauss2d", "gauss20d"),
    "decoupled": ("gauss2d", "gauss20d"),
    "exact": ("gauss2d", "gauss20d", "mixture2d", "double_well"),
}


def ula_start(energy: Gaussian, target: Target) -> tuple[Tensor, Tensor]:
    """(m₀, C₀) of the ULA check's start law N(m₀, C₀), away from the target."""
    shift, var = target.start
    d = energy.dim
    return (energy.mu.detach() + shift, var * torch.eye(d, dtype=F64))


def mixture_projected_cdf(gm: GaussianMixture, u: Tensor) -> Callable[[np.ndarray], np.ndarray]:
    """Exact CDF of uᵀX for X ~ Σ πₖ N(μₖ, Σₖ): t ↦ Σ πₖ Φ((t − uᵀμₖ)/√(uᵀΣₖu))."""
    w = gm.weights.detach().numpy()
    L = torch.tril(gm.scale_trils.detach())
    m = (gm.means.detach() @ u).numpy()
    s = torch.sqrt(torch.einsum("i,kij,klj,l->k", u, L, L, u)).numpy()
    return lambda t: (w * stats.norm.cdf((np.asarray(t, dtype=np.float64)[..., None] - m)
                                         / s)).sum(-1)


def mixture_centre(gm: GaussianMixture, u: Tensor) -> float:
    """E[uᵀX] of the mixture (the centre of the dilation effect)."""
    return float(gm.weights.detach() @ (gm.means.detach() @ u))
