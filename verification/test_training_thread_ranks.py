"""ebmref.training.train under a process group of 2 ranks emulated in one process: threads over
a fake torch.distributed whose collectives (all_reduce, all_gather_object, barrier) wait for
both ranks, and DistributedDataParallel replaced by a recorder (no gradient averaging is
checked here; test_distributed.py does that with real processes). Pinned: a single energy trains
under the group, its loss forwards (only those) through the DDP wrapper; rank r draws its share
of the batch (5 → 3 + 2 chains per update) and keeps its share of the buffer (9 → 5 + 4); the
logged statistics are the same on both ranks (reduced); only rank 0 writes metrics; the
checkpoint holds both buffer shards, the merged buffer and both generator states; a fresh state
resumes it in one process with the merged buffer (its noise of the saved event shape) and the
main generator. Also: a single-process checkpoint resumed as rank 1 of 2 starts a fresh
generator stream from (seed + step, rank 1); the logged energies and losses are means over the
ranks; a too-large energy of data or samples on one rank stops both at the same update."""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist

from ebmref import distributed
from ebmref.checkpoint import load_checkpoint
from ebmref.config import TrainConfig
from ebmref.training import TrainingDiverged, TrainState, train, train_step
from verification.thread_ranks import ThreadGroup
from verification.tiny_runs import SlopeEnergy, tiny_config, tiny_data, tiny_mlp

DT = torch.float64
STRIDE = 0x9E3779B1  # the documented stride between rank seeds


@pytest.fixture
def group(monkeypatch):
    return ThreadGroup().install(monkeypatch)


def _config(**extra) -> TrainConfig:
    return tiny_config(**{"run.n_updates": 3, "run.batch_size": 5, "run.ckpt_every": 2,
                          "run.seed": 3, "buffer.size": 9, "buffer.reinit_prob": 0.5,
                          "sampler.n_steps": 2, "optim.lr": 0.01, **extra})


def test_two_ranks_train_their_shares_and_checkpoint_both(group, tmp_path, monkeypatch):
    """The whole 2-rank run (see the module docstring), then its single-process resumption."""
    out = tmp_path / "run"
    energies = [tiny_mlp(), tiny_mlp()]
    res = group.run(lambda r: train(energies[r], tiny_data(32), _config(), out))
    assert [x.step for x in res] == [3, 3]
    assert [x.buffer.capacity for x in res] == [5, 4]
    assert [x.buffer.n_seen for x in res] == [5 + 3 * 3, 4 + 3 * 2]  # 3 updates of 3 / 2
    # One wrapper per rank, without device ids (gloo), and only the two loss forwards of each
    # update go through it (the sampler and the final validation call the bare module).
    wrapped = sorted((r, w.module is energies[r], ids, w.calls) for r, w, ids in group.ddp)
    assert wrapped == [(0, True, None, 2 * 3), (1, True, None, 2 * 3)]
    for a, b in zip(res[0].history, res[1].history):  # reduced over the ranks: equal
        assert {k: v for k, v in a.items() if k != "time_s"} == \
               {k: v for k, v in b.items() if k != "time_s"}
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]

    ckpt = load_checkpoint(out / "checkpoint.pt")
    shards = ckpt["buffer_shards"]
    assert ckpt["step"] == 3 and [s["capacity"] for s in shards] == [5, 4]
    for s, x in zip(shards, res):
        assert torch.equal(s["storage"], x.buffer.storage) and s["n_seen"] == x.buffer.n_seen
    merged = ckpt["buffer"]
    assert merged["capacity"] == 9 and merged["n_seen"] == 14 + 10
    assert torch.equal(merged["storage"], torch.cat([x.buffer.storage for x in res]))
    gens = ckpt["rng"]["generators"]
    assert len(gens) == 2 and torch.equal(gens[0], ckpt["rng"]["generator"])
    assert not torch.equal(gens[0], gens[1])

    monkeypatch.setattr(dist, "is_initialized", lambda: False)  # one process, no group
    state = TrainState.create(tiny_mlp().to(DT), _config())  # no buffer: built from the ckpt
    state.load_state_dict(ckpt)
    assert state.step == 3 and torch.equal(state.generator.get_state(), gens[0])
    assert state.buffer.capacity == 9 and torch.equal(state.buffer.storage, merged["storage"])
    assert state.buffer.noise_fn.event_shape == (2,)
    x0, _ = state.buffer.sample(6, state.generator)
    assert x0.shape == (6, 2)


def test_single_process_checkpoint_resumed_as_rank_one(monkeypatch):
    """Rank 1 of 2 resuming a checkpoint of one process at step 4 takes the second half of the
    merged buffer (rows 5..8 of 9) and a generator seeded (seed + 4 + stride) mod 2⁶³."""
    cfg = _config()
    saved = TrainState.create(tiny_mlp().to(DT), cfg)
    train_step(saved, tiny_data(32)[:5])
    ckpt = saved.state_dict(copy_tensors=True)
    ckpt["step"] = 4
    monkeypatch.setattr(distributed, "current", lambda: distributed.DistContext(1, 2))
    state = TrainState.create(tiny_mlp().to(DT), cfg)
    state.load_state_dict(ckpt)
    want = torch.Generator().manual_seed((3 + 4 + STRIDE) % 2**63).get_state()
    assert state.step == 4 and torch.equal(state.generator.get_state(), want)
    assert state.buffer.capacity == 4
    assert torch.equal(state.buffer.storage, ckpt["buffer"]["storage"][5:])


def test_logged_statistics_are_means_over_the_ranks(group):
    """Rank 0's data are all (1, 1), rank 1's all (3, 3): at update 1 (w = 1) the ranks'
    mean data energies are 2 and 6, and both log their mean 4; the loss (no l2, no KL) is the
    mean of the ranks' contrastive losses, equal to the logged loss_contrastive."""
    cfg = _config(**{"run.n_updates": 1, "run.batch_size": 4, "optim.l2": 0.0})
    data = [torch.full((8, 2), 1.0 + 2 * r, dtype=DT) for r in range(2)]
    res = group.run(lambda r: train(SlopeEnergy(), data[r], cfg))
    for x in res:
        (record,) = x.history
        assert record["energy_data"] == 4.0
        assert record["loss"] == record["loss_contrastive"]


@pytest.mark.parametrize("which", ["data", "samples"])
def test_a_large_energy_on_one_rank_stops_every_rank(group, which):
    """max_energy = 1500; only rank 1 sees |E| ≈ 2000 (its data, or its buffer's noise box,
    near (1000, 1000)), rank 0 |E| ≤ 4: both ranks stop at update 1 naming that energy, with
    rank 1's value (the maximum over ranks, not the mean ≈ 1000)."""
    far = {"data": {}, "samples": {"buffer.noise_low": 999.0, "buffer.noise_high": 1001.0}}
    cfgs = [_config(**{"run.max_energy": 1500.0, "buffer.noise_low": -1.0,
                       "buffer.noise_high": 1.0}), _config(**{"run.max_energy": 1500.0,
                                                              **far[which]})]
    near = torch.zeros(8, 2, dtype=DT)
    data = [near, near + 1000.0 if which == "data" else near]
    errors = group.run(lambda r: _diverged(train, SlopeEnergy(), data[r], cfgs[r]))
    quantity = {"data": "|energy| of data E(x⁺)", "samples": "|energy| of samples E(x⁻)"}
    for err in errors:
        assert err.step == 1 and err.quantity == quantity[which]
        assert 1900.0 < err.value < 2100.0 and err.value == errors[1].value


def _diverged(fn, *args):
    with pytest.raises(TrainingDiverged) as info:
        fn(*args)
    return info.value
