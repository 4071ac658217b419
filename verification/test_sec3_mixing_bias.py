"""§3, claim C11: negative samples from chains that do not mix give a biased learning gradient.

Model: the 1-D two-mode mixture p_a = Σₖ softmax(a)ₖ N(μₖ, 0.25), μ = (−3, +3), parameters the
logits a (ebmref.energy.GaussianMixture). For the logits ∇_aE(x) = −r(x), the posterior
responsibilities, so the exact negative phase is E_{p_a}[∇_aE] = −softmax(a) = −π, and each
per-sample term lies in [−1, 0]: Hoeffding's inequality gives a distribution-free calibrated
test, P(|mean − E| ≥ ε) ≤ 2 exp(−2Mε²) per coordinate, 4 exp(−2Mε²) for the larger of the two
coordinates (union bound).

The barrier between the modes is ~18 nats high; Langevin/MALA chains started in one mode stay
there, so their negative phase is ≈ −(1, 0) instead of −π.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import integrate, stats

from ebmref.energy import GaussianMixture
from ebmref.objectives import contrastive_loss
from ebmref.samplers import langevin, mala
from verification.cd_theory_helpers import DT
from verification.stats import assert_pvalues

ALPHA = 1e-6
M = 4000


def _hoeffding_eps(n: int, alpha: float) -> float:
    """Radius ε with P(max over the 2 logit coordinates of |mean − E| ≥ ε) ≤ alpha."""
    return math.sqrt(math.log(4.0 / alpha) / (2.0 * n))


def _hoeffding_pvalue(deviation: float, n: int) -> float:
    """p-value of the larger coordinate deviation of a mean of n iid terms in [−1, 0]."""
    return min(1.0, 4.0 * math.exp(-2.0 * n * deviation * deviation))


def _model(weights=(0.4, 0.6)) -> GaussianMixture:
    return GaussianMixture(torch.log(torch.tensor(weights, dtype=DT)),
                           torch.tensor([[-3.0], [3.0]], dtype=DT), torch.tensor(0.25, dtype=DT),
                           dtype=DT)


def _negative_phase(model: GaussianMixture, x_neg: torch.Tensor) -> torch.Tensor:
    """E_neg[∇_a E] estimated by autograd of the library loss (−∂/∂a of contrastive_loss's
    negative term): grad of mean E(x_neg) w.r.t. the logits."""
    (g,) = torch.autograd.grad(model(x_neg).mean(), model.logits)
    return g


def _learning_gradient(model, x_data, x_neg) -> torch.Tensor:
    (g,) = torch.autograd.grad(contrastive_loss(model(x_data), model(x_neg)), model.logits)
    return g


def _data_responsibility(model: GaussianMixture, weights) -> torch.Tensor:
    """E_data[r(x)] under the model's responsibilities r, data Σ wₖ N(μₖ, 0.25), by quadrature
    (≈ w up to the modes' overlap)."""
    mus, sd = model.means.detach()[:, 0].numpy(), 0.5
    pi = model.weights.detach().numpy()
    dens = lambda t, k: stats.norm.pdf(t, mus[k], sd)
    r0 = lambda t: pi[0] * dens(t, 0) / (pi[0] * dens(t, 0) + pi[1] * dens(t, 1))
    e_r0 = integrate.quad(lambda t: (weights[0] * dens(t, 0) + weights[1] * dens(t, 1)) * r0(t),
                          -12, 12, points=[-3.0, 0.0, 3.0], epsabs=1e-13)[0]
    return torch.tensor([e_r0, 1.0 - e_r0], dtype=DT)


@pytest.mark.stochastic(alpha=ALPHA)
def test_c11_non_mixing_chains_bias_the_gradient(rng):
    """C11: with M = 4000 negatives, Hoeffding (α = 1e-6 over 3 p-values: exact samples, MALA
    chains started at exact samples, data; each the larger of the 2 logit coordinates, ε =
    0.045) accepts exact samples and stationary MALA chains; chains started in the left mode
    (ULA and MALA, 100 steps) give −(1.00, 0.00) vs −π = −(0.4, 0.6): bias 0.6 ≫ 2ε (for it to
    look smaller than ε, half of the chains would have to cross the 18-nat barrier). The
    learning gradient on data with weights (0.7, 0.3) is π − E_data[r] ≈ (−0.3, +0.3) (within
    2ε when the p-values pass); from the chains stuck in the left mode it is (+0.3, −0.3): the
    wrong sign."""
    model = _model()
    pi = model.weights.detach()
    eps = _hoeffding_eps(M, ALPHA / 3)
    exact = model.sample(M, rng)
    stationary = mala(model, model.sample(M, rng), 50, 0.1, generator=rng)
    assert float(stationary.acceptance.mean()) > 0.5  # the kernel moves
    data_weights = (0.7, 0.3)
    data = _model(data_weights).sample(M, rng)
    e_r_data = _data_responsibility(model, data_weights)
    dev = {"exact": float((_negative_phase(model, exact) + pi).abs().max()),
           "mixed_mala": float((_negative_phase(model, stationary.x) + pi).abs().max()),
           "data": float((_negative_phase(model, data) + e_r_data).abs().max())}
    assert_pvalues({k: _hoeffding_pvalue(v, M) for k, v in dev.items()}, ALPHA)

    left = -3.0 + 0.5 * torch.randn(M, 1, generator=rng, dtype=DT)
    stuck_ula = langevin(model, left, 100, 0.05, generator=rng).x
    stuck_mala = mala(model, left, 100, 0.1, generator=rng).x
    bias_effect = float(pi[1])  # what is missing: the mass of the unvisited mode
    assert bias_effect > 2 * eps  # power: Hoeffding cannot miss it (2ε margin covers the noise)
    for name, x in (("stuck_ula", stuck_ula), ("stuck_mala", stuck_mala)):
        err = float((_negative_phase(model, x) + pi).abs().max())
        with pytest.raises(AssertionError):  # the same assertion fails: biased
            assert_pvalues({name: _hoeffding_pvalue(err, M)}, ALPHA / 3)
        assert err > bias_effect - eps, name

    # The learning gradient (library contrastive_loss): exact negatives vs stuck chains.
    g_exact = _learning_gradient(model, data, exact)
    truth = pi - e_r_data
    assert float((g_exact - truth).abs().max()) < 2 * eps  # |g − truth| ≤ dev_data + dev_exact
    g_stuck = _learning_gradient(model, data, stuck_ula)
    assert bool((torch.sign(g_stuck) != torch.sign(truth)).all())
