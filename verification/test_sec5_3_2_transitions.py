"""C21 (§5.3.2): data-augmentation transitions "let chains teleport to far away regions while
remaining sensible". When does such a transition leave p_θ invariant?

For a move x ↦ g·x with g drawn uniformly from a finite group G of orthogonal maps, the law of
the moved point is (1/|G|) Σ_g p_θ(g⁻¹x); it equals p_θ for every p_θ-distributed input
exactly when p_θ(g x) = p_θ(x) for all g, i.e. when E_θ is G-invariant (orthogonal maps keep
volume). Tested on an 8-Gaussian ring with rotations by 2πk/8: equal weights (invariant energy)
→ the moved samples are p_θ (calibrated two-sample tests); unequal weights → the move pushes
p_θ to the equal-weight ring, a bias the same tests detect (numbers printed). Image
augmentations (crops, blur, elastic deformations) are not volume-preserving bijections, so
they are p_θ-invariant only for energies that ignore them: they are proposals, to be combined
with a Metropolis test, or accepted as a bias.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from ebmref.energy import GaussianMixture
from ebmref.samplers import mala
from ebmref.transitions import SymmetryMove
from verification.stats import ALPHA, assert_pvalues, projection_ks_pvalues

K, RADIUS, SD = 8, 2.0, 0.15
N = 4000
N_PROJ = 4


def ring(logits) -> GaussianMixture:
    a = 2 * math.pi * torch.arange(K, dtype=torch.float64) / K
    means = RADIUS * torch.stack([torch.cos(a), torch.sin(a)], 1)
    return GaussianMixture(torch.as_tensor(logits, dtype=torch.float64), means, SD**2,
                           dtype=torch.float64)


SYMMETRIC = torch.zeros(K)
ASYMMETRIC = torch.log(torch.tensor([0.3, 0.05, 0.15, 0.05, 0.15, 0.1, 0.1, 0.1]))


def nearest_mode(x: torch.Tensor) -> torch.Tensor:
    ang = torch.atan2(x[:, 1], x[:, 0])
    return torch.round(ang / (2 * math.pi / K)).long() % K


def two_sample_pvalues(x, y, generator) -> dict[str, float]:
    """Exact-null comparisons of two iid samples: χ² contingency on the nearest-mode counts and
    two-sample KS on N_PROJ random projections."""
    cx = torch.bincount(nearest_mode(x), minlength=K).numpy()
    cy = torch.bincount(nearest_mode(y), minlength=K).numpy()
    p = {"modes": float(stats.chi2_contingency(np.stack([cx, cy]))[1])}
    p.update(projection_ks_pvalues(x, y, N_PROJ, generator))
    return p


def contingency_power(p1: np.ndarray, p2: np.ndarray, n: int, alpha: float) -> float:
    """Power of the 2×K χ² contingency test (n per row) when the rows' cell laws are p1, p2:
    noncentral χ²(K − 1) with λ = (n/2) Σ (p1 − p2)² / p̄."""
    pbar = (p1 + p2) / 2
    lam = n / 2 * float(np.sum((p1 - p2) ** 2 / pbar))
    crit = stats.chi2.isf(alpha, K - 1)
    return float(stats.ncx2.sf(crit, K - 1, lam))


def test_energy_invariance_of_the_two_rings():
    """Deterministic: E(g x) = E(x) for every rotation g in C₈ for equal weights, not otherwise."""
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    group = SymmetryMove.rotations(K).group
    gx = torch.einsum("gij,bj->gbi", group, x)
    for logits, invariant in ((SYMMETRIC, True), (ASYMMETRIC, False)):
        e = ring(logits)
        with torch.no_grad():
            diff = (e(gx.reshape(-1, 2)).reshape(K, -1) - e(x)).abs().max()
        assert (float(diff) < 1e-10) is invariant


@pytest.mark.stochastic
@torch.no_grad()
def test_symmetry_move_keeps_p_theta_iff_energy_is_invariant(rng):
    """Exact samples of p_θ → one SymmetryMove → compared with fresh exact samples of p_θ.
    Equal weights: the assertion passes (α = 1e-6 over 1 + 4 p-values). Unequal weights
    (broken variant): the moved law is the equal-weight ring, and the same assertion fails;
    its power against that bias is asserted from the exact mode probabilities."""
    move = SymmetryMove.rotations(K)
    alpha_per = ALPHA / (1 + N_PROJ)
    pi = torch.softmax(ASYMMETRIC, 0).numpy()
    uniform = np.full(K, 1 / K)
    assert contingency_power(pi, uniform, N, alpha_per) >= 1 - 1e-3

    sym = ring(SYMMETRIC)
    x = move(sym.sample(N, rng), rng)
    jump = float((x - sym.sample(N, rng)).norm(dim=1).mean())
    p_sym = two_sample_pvalues(x, sym.sample(N, rng), rng)
    assert_pvalues(p_sym, ALPHA)

    asym = ring(ASYMMETRIC)
    moved = move(asym.sample(N, rng), rng)
    p_bias = two_sample_pvalues(moved, asym.sample(N, rng), rng)
    with pytest.raises(AssertionError):
        assert_pvalues(p_bias, ALPHA)
    freq0 = float((nearest_mode(moved) == 0).double().mean())
    print(f"mean jump {jump:.3f} (ring radius {RADIUS}); asymmetric ring: mode-0 weight "
          f"{pi[0]:.3f} under p_θ, {freq0:.3f} after one move (exact 1/8 = 0.125); "
          f"mode-count p-value {p_bias['modes']:.2e}; symmetric ring: min p "
          f"{min(p_sym.values()):.3f}")


@pytest.mark.stochastic
@torch.no_grad()
def test_symmetry_move_mixes_where_mala_alone_does_not(rng):
    """Chains started in mode 0 of the symmetric ring: 40 MALA steps (λ = 0.02, exact for
    p_θ) never leave the mode (modes are 1.53 apart, 10 σ), while the same MALA with one
    symmetry move reaches every mode with the exact 1/8 frequencies (χ² goodness of fit);
    the stuck chains keep mode 0's N(μ₀, σ²I) law (‖z‖² ~ χ²(2), up to the other modes'
    density there, < 1e-5), α = 1e-6 over the 2 p-values; the acceptance rate shows MALA does
    move."""
    sym = ring(SYMMETRIC)
    n = 2000
    x0 = sym.means[0].detach() + SD * torch.randn(n, 2, generator=rng, dtype=torch.float64)
    out = mala(sym, x0, 40, 0.02, generator=rng)
    assert float(out.acceptance.mean()) > 0.5
    stuck = nearest_mode(out.x)
    assert int((stuck != 0).sum()) == 0
    moved = SymmetryMove.rotations(K)(out.x, rng)
    out2 = mala(sym, moved, 40, 0.02, generator=rng)
    counts = torch.bincount(nearest_mode(out2.x), minlength=K).numpy()
    assert_pvalues({"uniform_modes": float(stats.chisquare(counts).pvalue),
                    "stuck_radius": float(stats.kstest(
                        ((out.x - sym.means[0].detach()).norm(dim=1) / SD).numpy() ** 2,
                        stats.chi2(2).cdf).pvalue)}, ALPHA)
    assert stats.chi2.isf(ALPHA / 2, K - 1) < n * (1 - 1 / K)  # an unmixed chain would fail
