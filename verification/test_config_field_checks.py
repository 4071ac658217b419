"""ebmref.config's field checks, exactly: the messages name the field's dotted path, the lowest
allowed values (one update, a batch of one, Adam's β = 0) are accepted, "cuda:i" devices pass
the config check, and run.device "auto" resolves to the CPU where no CUDA device exists."""

from __future__ import annotations

import pytest
import torch

from ebmref.config import BufferConfig, OptimConfig, RunConfig, TrainConfig, with_overrides


@pytest.mark.parametrize("make,message", [
    (lambda: BufferConfig(reinit_prob=1.5),
     r"^buffer\.reinit_prob: must lie in \[0, 1\], got 1\.5$"),
    (lambda: OptimConfig(lr=0.0), r"^optim\.lr: must be a finite number > 0, got 0\.0$"),
    (lambda: OptimConfig(betas=(-0.1, 0.5)),
     r"^optim\.betas: expected two numbers \(each in \[0\.0, 1\.0\)\), got \(-0\.1, 0\.5\)$"),
    (lambda: with_overrides(TrainConfig(), {"buffer.size": 8, "run.batch_size": 9}),
     r"^run\.batch_size: must be an integer in \[1, 8\], got 9$"),
])
def test_messages_name_the_field(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_lowest_values_are_accepted():
    """One update of a batch of one, β = (0, 0) (Adam without momentum), a CUDA device by
    index (whether it exists is checked when training starts, not by the config)."""
    run = RunConfig(n_updates=1, batch_size=1, device="cuda:1")
    assert (run.n_updates, run.batch_size, run.device) == (1, 1, "cuda:1")
    assert OptimConfig(betas=(0.0, 0.0)).betas == (0.0, 0.0)


def test_auto_device_resolves_to_cuda_or_cpu():
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert RunConfig(device="auto").resolved_device() == torch.device(want)
    assert RunConfig(device="cpu").resolved_device() == torch.device("cpu")
