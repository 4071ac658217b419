"""What ebmref.training.train reports and keeps along the way: the "train" progress bar counts
one per update, the callback receives the logged records, a mid-run checkpoint holds θ of the
step it names (copied, not the live parameters the next update changes), TrainState resumes rank
r of a process group from its own saved generator and buffer shard, and a buffer or batch too
small to split over the ranks is refused naming the field."""

from __future__ import annotations

import re

import pytest
import torch

from ebmref import distributed
from ebmref.checkpoint import load_checkpoint
from ebmref.config import TrainConfig
from ebmref.training import TrainState, train, train_step
from verification.tiny_runs import tiny_config, tiny_data, tiny_mlp

DT = torch.float64


def _config(**extra) -> TrainConfig:
    return tiny_config(**{"run.n_updates": 3, "sampler.n_steps": 2, "optim.lr": 0.01, **extra})


def test_progress_bar_is_labelled_train_and_counts_updates(capsys):
    """run.progress: a tqdm bar on stderr, "train", ending at n_updates/n_updates."""
    train(tiny_mlp(), tiny_data(32), _config(**{"run.progress": True}))
    last = capsys.readouterr().err.replace("\n", "\r").strip("\r").split("\r")[-1]
    assert re.match(r"^train: 100%\|[^|]*\| 3/3 \[", last), last


def test_callback_receives_the_logged_records():
    seen = []
    result = train(tiny_mlp(), tiny_data(32), _config(),
                   callback=lambda step, record: seen.append((step, record)))
    assert [s for s, _ in seen] == [1, 2, 3]
    assert [r for _, r in seen] == result.history
    assert all(r["step"] == s and "loss" in r for s, r in seen)


class _Stop(Exception):
    pass


def test_a_checkpoint_holds_the_parameters_of_its_step(tmp_path):
    """ckpt_every = 2: θ₂ is written once update 3 has passed the checks. Stopping the run
    right then (a callback that raises at step 3) leaves checkpoint.pt = (step 2, θ₂), θ₂ as the
    callback saw it at step 2 — not θ₃, which the live parameters hold by then."""
    energy, seen = tiny_mlp(), {}

    def callback(step, record):
        seen[step] = {k: v.detach().clone() for k, v in energy.state_dict().items()}
        if step == 3:
            raise _Stop

    with pytest.raises(_Stop):
        train(energy, tiny_data(32), _config(**{"run.n_updates": 5, "run.ckpt_every": 2}), tmp_path,
              callback=callback)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 2
    assert all(torch.equal(state["model"][k], v) for k, v in seen[2].items())
    assert not all(torch.equal(seen[3][k], v) for k, v in seen[2].items())  # θ₃ ≠ θ₂


def test_rank_resumes_its_own_generator_and_buffer_shard(monkeypatch):
    """Rank 1 of 2 resuming a 2-rank checkpoint at the same world size takes its own saved
    generator state and buffer shard (pointer, count and buffer generator included), not rank
    0's state or a reshard of the merged buffer. The ranks are faked (the rank and world size
    are all load_state_dict asks of the process group)."""
    cfg = _config(**{"buffer.replacement": "fifo"})
    shards, gens = [], []
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "current", lambda r=rank: distributed.DistContext(r, 2))
        state = TrainState.create(tiny_mlp().to(DT), cfg)
        buf = state.ensure_buffer((2,))
        buf.sample(4, state.generator)  # fills the shard (4 states) from noise
        buf.push(torch.full((3, 2), 10.0 + rank, dtype=DT), state.generator)  # ptr → 3
        shards.append(buf.state_dict())
        gens.append(state.generator.get_state())
    monkeypatch.setattr(distributed, "current", lambda: distributed.DistContext())
    ckpt = TrainState.create(tiny_mlp().to(DT), cfg).state_dict(copy_tensors=True)
    ckpt.update(step=5, buffer=distributed.merge_buffer_states(shards), buffer_shards=shards)
    ckpt["rng"] = {"generator": gens[0], "generators": gens}

    monkeypatch.setattr(distributed, "current", lambda: distributed.DistContext(1, 2))
    resumed = TrainState.create(tiny_mlp().to(DT), cfg)
    resumed.load_state_dict(ckpt)
    assert resumed.step == 5 and torch.equal(resumed.generator.get_state(), gens[1])
    got = resumed.buffer.state_dict()
    assert got.keys() == shards[1].keys()
    for k, v in shards[1].items():
        assert torch.equal(got[k], v) if isinstance(v, torch.Tensor) else got[k] == v, k
    assert got["ptr"] == 3 and not torch.equal(gens[0], gens[1])


def test_too_few_items_for_the_ranks_name_the_field(monkeypatch):
    """Under 2 ranks (faked), a buffer.size or run.batch_size below the world size cannot be
    split and the error names the field."""
    monkeypatch.setattr(distributed, "current", lambda: distributed.DistContext(0, 2))
    small_buffer = TrainState.create(tiny_mlp().to(DT), _config(**{"buffer.size": 1,
                                                                  "run.batch_size": 1}))
    with pytest.raises(ValueError, match=r"^buffer\.size: must be an integer in \[2, ∞\], "
                                         r"got 1$"):
        small_buffer.ensure_buffer((2,))
    state = TrainState.create(tiny_mlp().to(DT), _config(**{"run.batch_size": 1}))
    with pytest.raises(ValueError, match=r"^run\.batch_size: must be an integer in \[2, ∞\], "
                                         r"got 1$"):
        train_step(state, torch.zeros(1, 2, dtype=DT))


def test_ensembles_are_refused_under_a_process_group(monkeypatch):
    """Even the smallest ensemble (2 members) is refused when train joins a process group of
    2 ranks (faked: init_from_env reports them)."""
    from ebmref.ensemble import EnsembleEnergy

    monkeypatch.setattr(distributed, "init_from_env",
                        lambda *a, **k: distributed.DistContext(0, 2))
    with pytest.raises(ValueError, match=r"^energy: ensembles do not run under a process group "
                                         r"\(torchrun\)$"):
        train(EnsembleEnergy([tiny_mlp(), tiny_mlp()]), tiny_data(32),
              _config(**{"optim.max_grad_norm": None}))
