"""ebmref.training.train_step clears gradients to None before backward (``zero_grad(
set_to_none=True)``): a parameter that a later update's loss does not use gets no Adam step —
it stays exactly where it is and Adam's step count for it does not advance — instead of being
moved by its stale first moment through a zero gradient."""

from __future__ import annotations

import torch

from ebmref.config import TrainConfig, with_overrides
from ebmref.energy import Energy
from ebmref.training import TrainState, train_step

DT = torch.float64


class _Switch(Energy):
    """E(x) = ½‖x − μ‖² + b·x₁ when ``use_b``, ½‖x − μ‖² otherwise: b is used on some calls."""

    def __init__(self):
        super().__init__()
        self.mu = torch.nn.Parameter(torch.zeros(2, dtype=DT))
        self.b = torch.nn.Parameter(torch.tensor(0.5, dtype=DT))
        self.event_shape = (2,)
        self.use_b = True

    def forward(self, x):
        e = 0.5 * ((x - self.mu) ** 2).sum(-1)
        return e + self.b * x[:, 0] if self.use_b else e


def test_an_unused_parameter_gets_no_adam_step():
    cfg = with_overrides(TrainConfig(), {
        "run.batch_size": 4, "run.device": "cpu", "run.dtype": "float64", "run.progress": False,
        "buffer.init": "cd", "sampler.n_steps": 2, "sampler.step_size": 0.01,
        "sampler.noise": None, "sampler.clamp": None, "optim.lr": 0.1})
    energy = _Switch()
    state = TrainState.create(energy, cfg)
    x_pos = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [2.0, -1.0], [0.0, 3.0]], dtype=DT)
    train_step(state, x_pos)  # b used: one Adam step moves it
    b_after_first = energy.b.detach().clone()
    assert state.optimizer.state[energy.b]["step"] == 1
    assert b_after_first != 0.5
    energy.use_b = False
    train_step(state, x_pos)  # b unused: no gradient, so Adam leaves it alone
    assert energy.b.grad is None
    assert torch.equal(energy.b.detach(), b_after_first)
    assert state.optimizer.state[energy.b]["step"] == 1
    assert state.optimizer.state[energy.mu]["step"] == 2
