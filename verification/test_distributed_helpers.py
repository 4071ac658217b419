"""ebmref.distributed's single-process helpers and its process-group set-up, without spawning:
the argument messages of rank_seed and shard_sizes; generator_state_for_rank's choice between
the checkpoint's main state (rank 0) and a fresh stream seeded from (seed + step, rank) on the
other ranks when the world size changed; init_from_env's reading of torchrun's LOCAL_RANK and
its backend choice (NCCL with CUDA, gloo without), with the process-group calls recorded instead
of made; and data_parallel pinning DDP to GPU LOCAL_RANK on NCCL only."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from ebmref import distributed
from ebmref.distributed import (
    DistContext,
    generator_state_for_rank,
    init_from_env,
    rank_seed,
    shard_sizes,
)

STRIDE = 0x9E3779B1  # odd stride between rank seeds; fixed so saved runs resume identically


def test_argument_messages():
    """A negative rank and a total smaller than the world size are errors naming the argument
    ("total" when the caller gives no name)."""
    with pytest.raises(ValueError, match=r"^rank: must be an integer in \[0, ∞\], got -1$"):
        rank_seed(3, -1)
    with pytest.raises(ValueError, match=r"^total: must be an integer in \[2, ∞\], got 1$"):
        shard_sizes(1, 2)


def test_generator_state_at_a_changed_world_size():
    """Resuming a single-process checkpoint on 2 ranks: rank 0 continues the saved stream, rank 1
    starts a fresh generator seeded (seed + step + STRIDE) mod 2**63, unlike rank 0's."""
    fallback = torch.Generator().manual_seed(123).get_state()
    seed, step = 7, 40
    got0 = generator_state_for_rank(None, fallback, DistContext(0, 2), seed, step,
                                    torch.device("cpu"))
    got1 = generator_state_for_rank(None, fallback, DistContext(1, 2), seed, step,
                                    torch.device("cpu"))
    want1 = torch.Generator().manual_seed((seed + step + STRIDE) % 2**63).get_state()
    assert torch.equal(got0, fallback)
    assert torch.equal(got1, want1)
    assert not torch.equal(got1, fallback)


@pytest.fixture
def fake_group(monkeypatch):
    """torchrun's variables for rank 1 of 2 on local GPU 3, and the process-group calls
    recorded instead of made."""
    calls = {}
    for var, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "3",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999"}.items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("local_rank", raising=False)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group",
                        lambda **kw: calls.__setitem__("init", kw))
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.__setitem__("device", i))
    monkeypatch.setattr(distributed.atexit, "register", lambda f: None)
    return calls


@pytest.mark.parametrize("cuda,backend", [(False, "gloo"), (True, "nccl")])
def test_init_from_env_picks_the_backend(fake_group, monkeypatch, cuda, backend):
    """backend=None: NCCL (pinned to GPU LOCAL_RANK) when CUDA is available, gloo otherwise;
    the context carries LOCAL_RANK from the environment, not the rank."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    ctx = init_from_env()
    assert ctx == DistContext(rank=1, world_size=2, local_rank=3, backend=backend)
    assert fake_group["init"] == {"backend": backend, "rank": 1, "world_size": 2}
    assert fake_group.get("device") == (3 if cuda else None)


@pytest.mark.parametrize("backend,device_ids", [("nccl", [3]), ("gloo", None)])
def test_data_parallel_device_ids(monkeypatch, backend, device_ids):
    """Under a 2-rank group DDP wraps the module with device_ids=[LOCAL_RANK] on NCCL and
    without device ids on gloo (CPU)."""
    seen = {}
    monkeypatch.setattr(distributed, "current", lambda: DistContext(1, 2, 3, backend))
    monkeypatch.setattr(distributed, "DistributedDataParallel",
                        lambda module, **kw: seen.update(module=module, **kw) or "ddp")
    module = torch.nn.Linear(2, 1)
    assert distributed.data_parallel(module) == "ddp"
    assert seen == {"module": module, "device_ids": device_ids}
