"""ebmref.distributed in one process, exactly: ranks emulated by threads over a fake
torch.distributed (``all_reduce`` sums, maxima and minima over what every rank contributes,
behind a barrier, as a real collective does), so the reduction of the divergence statistics is
pinned per entry (mean, max, min, NaN → ±inf) for 3 ranks; the context read from a group
(``LOCAL_RANK`` from the environment, else the rank); ``init_from_env`` at 3 ranks without
``LOCAL_RANK`` (which closes the group at exit); the shard sizes and rank seeds against their
closed forms, with their messages; and a merged buffer resharded at another world size (slice,
capacity, states seen, FIFO pointer, the buffer generator's fresh seed) and generator states
for unchanged world sizes."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from ebmref import distributed
from ebmref.distributed import DistContext
from verification.thread_ranks import ThreadGroup

STRIDE = 0x9E3779B1  # the documented odd stride between rank seeds


@pytest.fixture
def group3(monkeypatch):
    return ThreadGroup(3).install(monkeypatch)


def test_all_reduce_stats_mean_max_min_over_three_ranks(group3):
    """Rank r reports (r+1, 10r, −r, 2r): the mean (2, 10, −1, 2) of every entry, except
    entry 1 in maxima (20) and entry 2 in minima (−2); the input is left as it was."""
    inputs = [torch.tensor([r + 1.0, 10.0 * r, -float(r), 2.0 * r], dtype=torch.float64)
              for r in range(3)]
    before = [t.clone() for t in inputs]
    out = group3.run(lambda r: distributed.all_reduce_stats(inputs[r], maxima=(1,),
                                                            minima=(2,)))
    for r in range(3):
        assert out[r].tolist() == [2.0, 20.0, -2.0, 2.0]
        assert torch.equal(inputs[r], before[r])
    plain = group3.run(lambda r: distributed.all_reduce_stats(inputs[r]))
    assert all(p.tolist() == [2.0, 10.0, -1.0, 2.0] for p in plain)


def test_a_nan_on_one_rank_is_seen_by_every_rank(group3):
    """A NaN on rank 1 makes the maximum +inf and the minimum −inf on every rank (and the
    mean NaN), so no rank misses a divergence."""
    nan = float("nan")
    inputs = [torch.tensor([1.0, 1.0, 1.0]) if r != 1 else torch.tensor([nan, nan, nan])
              for r in range(3)]
    out = group3.run(lambda r: distributed.all_reduce_stats(inputs[r], maxima=(0,),
                                                            minima=(1,)))
    for o in out:
        assert o[0].item() == float("inf") and o[1].item() == float("-inf")
        assert torch.isnan(o[2])


def test_context_of_a_group_reads_local_rank(group3, monkeypatch):
    """current(): rank and world size of the group, LOCAL_RANK from the environment (the rank
    when it is unset or empty), the group's backend; is_main on rank 0 only."""
    assert group3.run(lambda r: distributed.current()) == [
        DistContext(r, 3, r, "gloo") for r in range(3)]
    assert group3.run(lambda r: distributed.is_main()) == [True, False, False]
    monkeypatch.setenv("LOCAL_RANK", "")
    assert group3.run(lambda r: distributed.current().local_rank) == [0, 1, 2]
    monkeypatch.setenv("LOCAL_RANK", "5")
    assert group3.run(lambda r: distributed.current()) == [
        DistContext(r, 3, 5, "gloo") for r in range(3)]
    monkeypatch.setenv("LOCAL_RANK", "five")
    with pytest.raises(ValueError, match=r"^LOCAL_RANK: expected an integer in the "
                                         r"environment, got 'five'$"):
        group3.run(lambda r: distributed.current())


def test_init_from_env_at_three_ranks_without_local_rank(monkeypatch):
    """WORLD_SIZE=3, RANK=2, no LOCAL_RANK, backend gloo: the group is joined as rank 2 of 3,
    LOCAL_RANK defaults to the rank, and distributed.shutdown is registered to run at exit."""
    calls = {}
    for var, value in {"WORLD_SIZE": "3", "RANK": "2", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "29999"}.items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: calls.setdefault("init", kw))
    monkeypatch.setattr(distributed.atexit, "register",
                        lambda f: calls.setdefault("atexit", f))
    assert distributed.init_from_env("gloo") == DistContext(2, 3, 2, "gloo")
    assert calls == {"init": {"backend": "gloo", "rank": 2, "world_size": 3},
                     "atexit": distributed.shutdown}


def test_shard_sizes_and_their_messages():
    """total = q·W + m: the first m ranks get q + 1; a DistContext takes its rank's share; a
    world size below 1 and a total below the world size are refused, naming the argument."""
    assert distributed.shard_sizes(7, 3) == [3, 2, 2]
    assert distributed.shard_sizes(8, 3) == [3, 3, 2]
    assert distributed.shard_sizes(6, 3) == [2, 2, 2]
    assert distributed.shard_sizes(5, 1) == [5]
    assert [DistContext(r, 3).shard(8) for r in range(3)] == [3, 3, 2]
    with pytest.raises(ValueError, match=r"^world_size: must be an integer in \[1, ∞\], "
                                         r"got 0$"):
        distributed.shard_sizes(4, 0)
    with pytest.raises(ValueError, match=r"^run\.batch_size: must be an integer in \[3, ∞\], "
                                         r"got 2$"):
        DistContext(2, 3).shard(2, "run.batch_size")
    with pytest.raises(ValueError, match=r"^total: must be an integer in \[3, ∞\], got 2$"):
        DistContext(1, 3).shard(2)


def test_rank_seeds_follow_the_documented_stride():
    """rank_seed(s, r) = (s + r·0x9E3779B1) mod 2⁶³, an int; it wraps at 2⁶³."""
    assert distributed.rank_seed(5, 0) == 5
    assert distributed.rank_seed(5, 2) == 5 + 2 * STRIDE
    assert type(distributed.rank_seed(5, 2)) is int
    assert distributed.rank_seed(2**63 - 1, 1) == STRIDE - 1
    with pytest.raises(ValueError, match=r"^rank: must be an integer in \[0, ∞\], got -2$"):
        distributed.rank_seed(0, -2)


def _merged(capacity: int, n_seen: int, storage: bool = True) -> dict:
    return {"storage": torch.arange(float(capacity))[:, None] if storage else None,
            "capacity": capacity, "n_seen": n_seen, "ptr": 2, "init": "data",
            "replacement": "reservoir", "generator": torch.Generator().manual_seed(9).get_state()}


def test_reshard_of_a_merged_buffer_for_rank_one_of_two():
    """Capacity 7 on 2 ranks: rank 1 gets rows 4..6 (3 states), FIFO pointer 0, states seen
    scaled to its share (⌊30·3/7⌋ = 12, at least its capacity: 3 when 5 were seen), and the
    buffer generator freshly seeded from rank_seed(seed, 1) on the CPU by default."""
    part = distributed.buffer_state_for_rank(_merged(7, 30), None, DistContext(1, 2), seed=4)
    assert part["storage"].flatten().tolist() == [4.0, 5.0, 6.0]
    assert (part["capacity"], part["n_seen"], part["ptr"]) == (3, 12, 0)
    assert part["init"] == "data" and part["replacement"] == "reservoir"
    want = torch.Generator().manual_seed(4 + STRIDE).get_state()
    assert torch.equal(part["generator"], want)
    small = distributed.buffer_state_for_rank(_merged(7, 5), None, DistContext(0, 2), seed=4)
    assert small["storage"].flatten().tolist() == [0.0, 1.0, 2.0, 3.0]
    assert (small["capacity"], small["n_seen"]) == (4, 4)
    empty = distributed.buffer_state_for_rank(_merged(7, 0, storage=False), None,
                                              DistContext(1, 2), seed=4)
    assert empty["storage"] is None and empty["capacity"] == 3
    assert distributed.buffer_state_for_rank(None, None, DistContext(1, 2), seed=4) is None


def test_reshard_refuses_a_buffer_smaller_than_the_world():
    with pytest.raises(ValueError, match=r"^buffer capacity: must be an integer in \[3, ∞\], "
                                         r"got 2$"):
        distributed.buffer_state_for_rank(_merged(2, 2), None, DistContext(0, 3), seed=0)


def test_generator_states_at_an_unchanged_world_size():
    """A single-process checkpoint (no saved list) resumes in a single process with its main
    state; saved per-rank states go back to their own rank at the same world size."""
    states = [torch.Generator().manual_seed(s).get_state() for s in (1, 2)]
    cpu = torch.device("cpu")
    got = distributed.generator_state_for_rank(None, states[0], DistContext(), 3, 10, cpu)
    assert torch.equal(got, states[0])
    for r in (0, 1):
        got = distributed.generator_state_for_rank(states, states[0], DistContext(r, 2), 3, 10,
                                                   cpu)
        assert torch.equal(got, states[r])
