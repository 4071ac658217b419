"""ebmref.training's buffer memory check quotes both the memory the replay buffer needs and the
free memory in GiB (2³⁰ bytes), here with the free memory of the CPU pinned to 3 GiB."""

from __future__ import annotations

import pytest
import torch

from ebmref import training as T
from ebmref.config import TrainConfig, with_overrides


def test_need_and_free_are_quoted_in_gib(monkeypatch):
    """4096 float64 states of shape (2¹⁷,) need 2¹²·2¹⁷·8 B = 4 GiB; free = 3·2¹⁸ pages of
    4096 B = 3 GiB."""
    pages = {"SC_AVPHYS_PAGES": 3 * 2**18, "SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(T.os, "sysconf", lambda name: pages[name])
    cfg = with_overrides(TrainConfig(), {"buffer.size": 4096, "run.dtype": "float64"})
    with pytest.raises(ValueError, match=r"^buffer\.size: 4096 states of shape \(131072,\) need "
                       r"4\.0 GiB, more than the 3\.0 GiB free on cpu$"):
        T._check_buffer_memory(cfg, (2**17,), 1, torch.device("cpu"))
    T._check_buffer_memory(cfg, (2**16,), 1, torch.device("cpu"))  # 2 GiB fit
