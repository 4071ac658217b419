"""ebmref.config.SamplerConfig.langevin_kwargs: the keyword arguments of
ebmref.samplers.langevin that the config sets (grad_clip and clamp), usable as they are."""

from __future__ import annotations

import torch

from ebmref.config import SamplerConfig
from ebmref.energy import Gaussian
from ebmref.samplers import langevin


def test_langevin_kwargs_are_langevins_keywords():
    """The documented defaults (IGEBM's clip 0.01, the box (0, 1)), and a call of langevin with
    them clamps every chain into the configured box."""
    assert SamplerConfig().langevin_kwargs() == {"grad_clip": 0.01, "clamp": (0.0, 1.0)}
    cfg = SamplerConfig(step_size=0.5, noise=None, grad_clip=None, clamp=(-0.1, 0.2))
    assert cfg.langevin_kwargs() == {"grad_clip": None, "clamp": (-0.1, 0.2)}
    x0 = torch.linspace(-3.0, 3.0, 16, dtype=torch.float64)[:, None]
    out = langevin(Gaussian([0.0], [[1.0]], dtype=torch.float64), x0, 3, cfg.step_size,
                   cfg.noise, generator=torch.Generator().manual_seed(0),
                   **cfg.langevin_kwargs())
    assert out.x.min() >= -0.1 and out.x.max() <= 0.2
