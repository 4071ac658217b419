"""The KL options of a train_step reach the KL loss (ebmref.training → ebmref.objectives.kl_loss):
the entropy term is linear in kl.entropy_weight, kl.entropy_estimator and the size of the
entropy reference change it; with the KL loss off, its options change nothing (no reference is
drawn from the buffer, so the run's random stream is untouched)."""

from __future__ import annotations

import math

import torch

from ebmref.config import TrainConfig
from ebmref.nets import MLPEnergy
from ebmref.training import TrainState, train, train_step
from verification.tiny_runs import tiny_config, tiny_data

DT = torch.float64


def _config(**extra) -> TrainConfig:
    return tiny_config(**{"run.n_updates": 3, "run.batch_size": 8, "buffer.size": 32,
                          "sampler.n_steps": 2, "optim.max_grad_norm": None, **extra})


def _first_kl(**extra) -> float:
    """loss_kl of the first update (same energy, data and generator for every call)."""
    torch.manual_seed(0)
    state = TrainState.create(MLPEnergy(2, hidden=4, depth=1).to(DT),
                              _config(**{"kl.weight": 1.0, **extra}))
    state.ensure_buffer((2,)).sample(32, state.generator)  # a full buffer to draw references
    return train_step(state, tiny_data(64)[:8]).stats["loss_kl"]


def test_entropy_weight_estimator_and_reference_reach_the_kl_loss():
    """loss_kl = (sign term) − w·Ĥ: the same first update with w = 0, 0.3, 0.6 has
    loss(0.6) − loss(0) = 2·(loss(0.3) − loss(0)) ≠ 0; Ĥ changes with the estimator ("kl"
    against "nn") and with the number of reference states (4 against 16)."""
    base = _first_kl(**{"kl.entropy_weight": 0.0})
    d3 = _first_kl(**{"kl.entropy_weight": 0.3, "kl.entropy_reference": 16}) - base
    d6 = _first_kl(**{"kl.entropy_weight": 0.6, "kl.entropy_reference": 16}) - base
    assert abs(d3) > 1e-6 and abs(d6 - 2 * d3) < 1e-9 * max(1.0, abs(d6))
    kl_est = _first_kl(**{"kl.entropy_weight": 0.3, "kl.entropy_reference": 16,
                          "kl.entropy_estimator": "kl"}) - base
    assert abs(kl_est - d3) > 1e-6
    small_ref = _first_kl(**{"kl.entropy_weight": 0.3, "kl.entropy_reference": 4}) - base
    assert abs(small_ref - d3) > 1e-6


def test_kl_options_are_inert_without_the_kl_loss():
    """kl.weight = 0: runs that differ only in kl.entropy_reference are identical."""
    runs = []
    for ref in (4, 24):
        torch.manual_seed(0)
        energy = MLPEnergy(2, hidden=4, depth=1)
        res = train(energy, tiny_data(64), _config(**{"kl.entropy_reference": ref}))
        runs.append((res.history, [p.detach().clone() for p in energy.parameters()]))
    (h0, p0), (h1, p1) = runs
    assert [{k: v for k, v in r.items() if k != "time_s"} for r in h0] == \
        [{k: v for k, v in r.items() if k != "time_s"} for r in h1]
    assert all(torch.equal(a, b) for a, b in zip(p0, p1))


def test_cd_k_with_an_entropy_term_estimates_against_the_chains():
    """CD-k has no buffer to draw references from: the entropy is estimated among the chains
    themselves, and the run trains."""
    torch.manual_seed(0)
    cfg = _config(**{"buffer.init": "cd", "kl.weight": 1.0, "kl.entropy_weight": 0.3,
                     "kl.entropy_reference": 16})
    res = train(MLPEnergy(2, hidden=4, depth=1), tiny_data(64), cfg)
    assert res.step == 3 and res.buffer is None
    assert all(math.isfinite(r["loss_kl"]) for r in res.history)
