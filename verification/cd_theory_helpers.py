"""Shared set-up of the §3–5.4 theory tests (C10–C15, C17, C22–C25, C30): a fixed Gaussian
model/data pair and the batch-means Student-t test used for Monte Carlo gradients.

Batch means: a Monte Carlo gradient from the library (autograd of a loss on a batch of n
chains) is computed for B independent batches; the B batch gradients are iid, each a mean of
n iid per-chain terms, so (ḡ − g)/(s/√B) ~ Student t(B − 1) up to the normal approximation of
a mean of n ≥ 500 terms (CLT). One p-value per parameter coordinate, Bonferroni over all.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats
from torch import Tensor

DT = torch.float64


def gaussian_setup(d: int = 2) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """θ = (μ, L) of the model and (m_d, C_d) of the data, generic (no symmetry), float64."""
    if d == 1:
        return (torch.tensor([0.3], dtype=DT), torch.tensor([[1.3]], dtype=DT),
                torch.tensor([1.0], dtype=DT), torch.tensor([[0.6]], dtype=DT))
    if d != 2:
        raise ValueError(f"d: 1 or 2, got {d}")
    mu = torch.tensor([0.3, -0.5], dtype=DT)
    scale_tril = torch.tensor([[1.2, 0.0], [0.4, 0.7]], dtype=DT)
    m_d = torch.tensor([1.0, 0.2], dtype=DT)
    c_d = torch.tensor([[0.8, 0.3], [0.3, 1.5]], dtype=DT)
    return mu, scale_tril, m_d, c_d


def flat_grad(g_mu: Tensor, g_l: Tensor) -> Tensor:
    """(∂/∂μ, ∂/∂L) → one vector: μ entries and the lower triangle of L (the used entries)."""
    d = g_mu.shape[-1]
    rows, cols = torch.tril_indices(d, d)
    return torch.cat([g_mu.reshape(-1), g_l[rows, cols].reshape(-1)])


def batch_mean_pvalues(batches: Tensor, expected: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Student-t p-values of the batch means against ``expected``; also the s.e.

    ``batches`` (B, P): one Monte Carlo estimate per independent batch; ``expected`` (P,).
    """
    b = batches.detach().to(DT).numpy()
    e = expected.detach().to(DT).numpy()
    n = b.shape[0]
    se = b.std(0, ddof=1) / np.sqrt(n)
    t = (b.mean(0) - e) / se
    return 2.0 * stats.t.sf(np.abs(t), n - 1), se


def t_test_power(effect: Tensor | np.ndarray, se: np.ndarray, n_batches: int,
                 alpha_per: float) -> float:
    """Power of the two-sided batch-means t-test (level ``alpha_per``) to see a mean shift
    ``effect`` in the *best* coordinate (noncentral t with the estimated s.e.)."""
    eff = np.abs(np.asarray(effect, dtype=np.float64))
    nc = eff / se
    crit = stats.t.isf(alpha_per / 2, n_batches - 1)
    with np.errstate(all="ignore"):
        power = stats.nct.sf(crit, n_batches - 1, nc) + stats.nct.cdf(-crit, n_batches - 1, nc)
    # scipy's noncentral t returns NaN far in the tail; there the normal limit is exact enough.
    power = np.where(np.isnan(power), stats.norm.sf(crit - nc), power)
    return float(np.max(power))
