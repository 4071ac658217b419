"""ebmref.training.train's checks before any work, exactly, without a GPU: an energy that is not
an ``ebmref.energy.Energy`` is refused naming its type; ``run.device`` = CUDA is refused where
CUDA is not available and accepted where it is (faked); the replay buffer's memory is checked
against the free memory of the run's own CUDA device (``torch.cuda.mem_get_info`` of that
device, faked) or of the host, counting every ensemble member's states, with a buffer that
exactly fills the free memory accepted."""

from __future__ import annotations

import pytest
import torch

from ebmref import training as T
from ebmref.config import TrainConfig, with_overrides
from ebmref.nets import MLPEnergy
from ebmref.training import train

DT = torch.float64
GIB = 2**30


def _config(**extra) -> TrainConfig:
    return with_overrides(TrainConfig(), {
        "run.n_updates": 1, "run.batch_size": 4, "run.device": "cpu", "run.dtype": "float64",
        "run.progress": False, "buffer.size": 8, "sampler.n_steps": 1, **extra})


def _data() -> torch.Tensor:
    return torch.zeros(8, 2, dtype=DT)


def test_an_energy_of_another_type_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"^energy: expected an ebmref\.energy\.Energy, got "
                                         r"<class 'torch\.nn\.modules\.linear\.Linear'>$"):
        train(torch.nn.Linear(2, 1), _data(), _config())


def test_cuda_asked_for_without_cuda(monkeypatch):
    """run.device = "cuda:1" on a machine without CUDA: refused, quoting the setting."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^run\.device: 'cuda:1' asked for, but no CUDA "
                                         r"device is available here$"):
        train(MLPEnergy(2, hidden=4, depth=1), _data(), _config(**{"run.device": "cuda:1"}))


def test_buffer_memory_is_checked_on_the_runs_cuda_device(monkeypatch):
    """With CUDA (faked) the device check passes and the buffer check asks the run's device
    for its free memory (the first of mem_get_info's (free, total)): 2¹⁶ float64 states of
    shape (2¹⁴,) need 8 GiB, more than 6 GiB free of 80 GiB."""
    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info",
                        lambda device=None: asked.append(device) or (6 * GIB, 80 * GIB))
    data = torch.zeros(4, 2**14, dtype=DT)
    cfg = _config(**{"run.device": "cuda:1", "buffer.size": 2**16})
    with pytest.raises(ValueError, match=r"^buffer\.size: 65536 states of shape \(16384,\) "
                                         r"need 8\.0 GiB, more than the 6\.0 GiB free on "
                                         r"cuda:1$"):
        train(MLPEnergy(2**14, hidden=4, depth=1), data, cfg)
    assert asked == [torch.device("cuda:1")]


def test_buffer_memory_counts_members_and_accepts_an_exact_fit(monkeypatch):
    """Free host memory pinned to 4 GiB: 2¹¹ states × 2 members × 2¹⁷ values × 8 B = 4 GiB fit
    exactly; 3 members (6 GiB) do not."""
    pages = {"SC_AVPHYS_PAGES": 2**20, "SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(T.os, "sysconf", lambda name: pages[name])
    cfg = with_overrides(TrainConfig(), {"buffer.size": 2048, "run.dtype": "float64"})
    T._check_buffer_memory(cfg, (2**17,), 2, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"^buffer\.size: 2048 states of shape \(131072,\) need "
                                         r"6\.0 GiB, more than the 4\.0 GiB free on cpu$"):
        T._check_buffer_memory(cfg, (2**17,), 3, torch.device("cpu"))
