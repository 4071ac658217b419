"""§3, claim C11: negative samples from chains that do not mix give a biased learning gradient.

Model: the 1-D two-mode mixture p_a = Σₖ softmax(a)ₖ N(μₖ, 0.25), μ = (−3, +3), parameters the
logits a (ebmref.energy.GaussianMixture). For the logits ∇_aE(x) = −r(x), the posterior
responsibilities, so the exact negative phase is E_{p_a}[∇_aE] = −softmax(a) = −π, and each
per-sample term lies in [−1, 0]: Hoeffding's inequality gives a distribution-free calibrated
test, P(|mean − E| ≥ ε) ≤ 2 exp(−2Mε²).

The barrier between the modes is ~18 nats high; Langevin/MALA chains started in one mode stay
there, so their negative phase is ≈ −(1, 0) instead of −π.
"""

from __future__ import annotations

import math

import pytest
import torch

from ebmref.energy import GaussianMixture
from ebmref.objectives import contrastive_loss
from ebmref.samplers import langevin, mala
from verification.cd_theory_helpers import DT

ALPHA = 1e-6
M = 4000


def _hoeffding_eps(n: int, alpha: float) -> float:
    return math.sqrt(math.log(2.0 / alpha) / (2.0 * n))


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


@pytest.mark.stochastic
def test_c11_non_mixing_chains_bias_the_gradient(rng):
    """C11: with M = 4000 negatives, Hoeffding (α = 1e-6 over 2 coordinates × 2 estimators,
    ε = 0.043) accepts exact samples and MALA chains started at exact samples (mixed,
    stationary); chains started in the left mode (ULA and MALA, 100 steps) give −(1.00, 0.00)
    vs −π = −(0.4, 0.6): bias 0.6 ≫ 2ε. The learning gradient on data with weights (0.7, 0.3)
    is π − w = (−0.3, +0.3); from the chains stuck in the left mode it is (+0.3, −0.3): the
    wrong sign."""
    model = _model()
    pi = model.weights.detach()
    m_tests = 4
    eps = _hoeffding_eps(M, ALPHA / m_tests)
    exact = model.sample(M, rng)
    stationary = mala(model, model.sample(M, rng), 50, 0.1, generator=rng)
    assert float(stationary.acceptance.mean()) > 0.5  # the kernel moves (TESTING rule 5)
    for name, x in (("exact", exact), ("mixed_mala", stationary.x)):
        err = (_negative_phase(model, x) + pi).abs().max()
        assert float(err) < eps, (name, float(err), eps)

    left = -3.0 + 0.5 * torch.randn(M, 1, generator=rng, dtype=DT)
    stuck_ula = langevin(model, left, 100, 0.05, generator=rng).x
    stuck_mala = mala(model, left, 100, 0.1, generator=rng).x
    bias_effect = float(pi[1])  # what is missing: the mass of the unvisited mode
    assert bias_effect > 2 * eps  # power: Hoeffding cannot miss it (2ε margin covers the noise)
    for name, x in (("stuck_ula", stuck_ula), ("stuck_mala", stuck_mala)):
        err = (_negative_phase(model, x) + pi).abs().max()
        assert float(err) > eps, name  # the same assertion as above fails: biased
        assert float(err) > bias_effect - eps

    # The learning gradient: exact negatives vs the chains stuck in the left mode.
    data = _model((0.7, 0.3)).sample(M, rng)
    g_exact = _learning_gradient(model, data, exact)
    truth = pi - torch.tensor([0.7, 0.3], dtype=DT)
    assert float((g_exact - truth).abs().max()) < 2 * _hoeffding_eps(M, ALPHA / m_tests)
    g_stuck = _learning_gradient(model, data, stuck_ula)
    assert bool((torch.sign(g_stuck) != torch.sign(truth)).all())
