"""The tiny training run that the in-process training tests share: 2-D data, a 4-unit MLP, a
buffer of 8 states, one deterministic Langevin step per update (float64 on the CPU, no noise, no
clipping), so that a whole run takes milliseconds. Tests override what they pin."""

from __future__ import annotations

import torch

from ebmref.config import TrainConfig, with_overrides
from ebmref.energy import Energy
from ebmref.nets import MLPEnergy

DT = torch.float64
TINY = {"run.n_updates": 2, "run.batch_size": 4, "run.device": "cpu", "run.dtype": "float64",
        "run.progress": False, "run.log_every": 1, "buffer.size": 8, "buffer.noise_low": -2.0,
        "buffer.noise_high": 2.0, "sampler.n_steps": 1, "sampler.step_size": 0.01,
        "sampler.noise": None, "sampler.grad_clip": None, "sampler.clamp": None}


def tiny_config(**overrides) -> TrainConfig:
    """TrainConfig with TINY's settings, then ``overrides`` (dotted paths)."""
    return with_overrides(TrainConfig(), {**TINY, **overrides})


def tiny_mlp() -> MLPEnergy:
    """A 2-D MLP energy (4 hidden units, one layer) with the weights of torch seed 0."""
    torch.manual_seed(0)
    return MLPEnergy(2, hidden=4, depth=1)


def tiny_data(n: int = 16) -> torch.Tensor:
    """n standard normal points in 2-D (float64), the same for every call."""
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=DT)


class ConstEnergy(Energy):
    """E(x) = c for every x in 2-D, c a trained parameter: ∇ₓE = 0, so chains stay put."""

    def __init__(self, c: float):
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(c, dtype=DT))
        self.event_shape = (2,)

    def forward(self, x):
        return self.c + 0.0 * x.sum(-1)


class SlopeEnergy(Energy):
    """E(x) = w·Σx in 2-D with w = 1 trained: ∇ₓE = (w, w), a slope pushing chains down."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones((), dtype=DT))
        self.event_shape = (2,)

    def forward(self, x):
        return self.w * x.sum(-1)


class QuadraticEnergy(Energy):
    """E(x) = w·Σx² in 1-D with w = 1 trained."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones((), dtype=DT))
        self.event_shape = (1,)

    def forward(self, x):
        return self.w * (x ** 2).sum(-1)
