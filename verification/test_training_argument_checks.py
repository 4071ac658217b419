"""ebmref.training.train's checks and records, exactly: argument errors with their full
messages, the buffer-memory check (its numbers; none for CD-k, which has no buffer), the
divergence threshold (|E| = max_energy is still bounded) and the messages of non-finite
energies and gradients, config.json naming the energy class, resuming a finished run, and a
two-member ensemble's gradients (each member's own)."""

from __future__ import annotations

import json
import math
import os
import re

import pytest
import torch

from ebmref.config import TrainConfig, with_overrides
from ebmref.energy import Energy
from ebmref.ensemble import EnsembleEnergy
from ebmref.nets import MLPEnergy
from ebmref.objectives import contrastive_loss
from ebmref.training import TrainingDiverged, TrainState, train, train_step
from verification.tiny_runs import ConstEnergy, tiny_config

DT = torch.float64


def _config(**extra) -> TrainConfig:
    return tiny_config(**{"run.log_every": 10, "sampler.n_steps": 2, "optim.l2": 0.1, **extra})


def _mlp(seed: int = 0) -> MLPEnergy:
    torch.manual_seed(seed)
    return MLPEnergy(2, hidden=4, depth=1).to(DT)


def _data() -> torch.Tensor:
    return 0.5 + 0.1 * torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=DT)


def test_argument_errors_are_exact():
    with pytest.raises(ValueError, match=r"^transition: config asks for transitions "
                       r"\(buffer\.transition_on_read/sampler\.transition_every\) but no "
                       r"transition callable was given$"):
        train(_mlp(), _data(), _config(**{"buffer.transition_on_read": True}))
    with pytest.raises(ValueError, match=r"^resume: needs out_dir, got out_dir=None$"):
        train(_mlp(), _data(), _config(), resume=True)
    with pytest.raises(ValueError, match=r"^optim\.max_grad_norm: must be None for an ensemble "
                       r"\(a norm over all members would couple them\), got 1\.0$"):
        train(EnsembleEnergy([_mlp(0), _mlp(1)]), _data(),
              _config(**{"optim.max_grad_norm": 1.0}))


def test_buffer_memory_check_states_need_and_free():
    """2⁴⁰ float64 states of shape (2,) need 2⁴⁰·2·8 B = 16384 GiB; the free memory quoted is
    the machine's: positive and at most its physical memory (free memory changes between two
    reads on a shared machine, so it is not compared with a second read)."""
    cfg = _config(**{"buffer.size": 2**40})
    with pytest.raises(ValueError) as info:
        train(_mlp(), _data(), cfg)
    m = re.match(r"^buffer\.size: 1099511627776 states of shape \(2,\) need 16384\.0 GiB, "
                 r"more than the ([0-9.]+) GiB free on cpu$", str(info.value))
    assert m, str(info.value)
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    assert 0 < float(m.group(1)) <= total
    # CD-k keeps no buffer: the same buffer.size is not checked.
    res = train(_mlp(), _data(), with_overrides(cfg, {"buffer.init": "cd"}))
    assert res.step == 2 and res.buffer is None


class _SqrtScale(Energy):
    """E(x) = √w·Σx at w = 0: every energy is 0, ∂E/∂w is infinite."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros((), dtype=DT))
        self.event_shape = (2,)

    def forward(self, x):
        return self.w.sqrt() * x.sum(-1)


def test_divergence_threshold_and_messages():
    """|E| = max_energy exactly is bounded (the check is |E| > max_energy); an infinite energy
    and an infinite weight gradient are reported with their values and no threshold."""
    cfg = _config(**{"run.max_energy": 100.0, "optim.l2": 0.0})
    assert train(ConstEnergy(100.0), _data(), cfg).step == 2
    with pytest.raises(TrainingDiverged) as info:
        train_step(TrainState.create(ConstEnergy(math.inf), cfg), _data()[:4])
    assert str(info.value) == "training diverged at step 1: |energy| of data E(x⁺) = inf"
    with pytest.raises(TrainingDiverged) as info:
        train_step(TrainState.create(_SqrtScale(), cfg), _data()[:4])
    err = info.value
    assert err.quantity == "weight-gradient norm" and not math.isfinite(err.value)
    assert str(err) == f"training diverged at step 1: weight-gradient norm = {err.value!r}"


def test_config_json_names_the_energy_and_a_finished_run_resumes_as_is(tmp_path):
    train(_mlp(), _data(), _config(), tmp_path)
    recorded = json.loads((tmp_path / "config.json").read_text())
    assert recorded["energy"] == "MLPEnergy"
    before = (tmp_path / "checkpoint.pt").read_bytes()
    res = train(_mlp(), _data(), _config(), tmp_path, resume=True)  # n_updates already done
    assert res.step == 2 and res.history == []
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


def test_two_member_ensemble_gets_each_members_own_gradient():
    """G = 2 (the smallest ensemble): after train_step the stacked gradient of member g is the
    gradient of g's own contrastive loss on its rows (the members' losses are summed)."""
    members, b = [_mlp(0), _mlp(1)], 4
    state = TrainState.create(EnsembleEnergy([_mlp(0), _mlp(1)]),
                              _config(**{"optim.max_grad_norm": None}))
    x_pos = _data()[:2 * b]
    out = train_step(state, x_pos)
    for g, m in enumerate(members):
        rows = slice(g * b, (g + 1) * b)
        loss = contrastive_loss(m(x_pos[rows]), m(out.x_neg[rows]), 0.1)
        want = torch.autograd.grad(loss, list(m.parameters()))
        got = [state.energy.stacked[k.replace(".", "__")].grad[g]
               for k, _ in m.named_parameters()]
        assert all(torch.allclose(a, w, rtol=0, atol=1e-12) for a, w in zip(got, want))
