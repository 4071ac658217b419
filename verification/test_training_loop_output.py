"""What ebmref.training.train prints, keeps and reports along its loop: no progress bar at all
with ``run.progress`` off (stderr stays empty); a loss that overflows while the energies and the
weight gradient are still finite stops the run naming the loss; the data policies of the buffer
pick from the whole data tensor, not only the current batch; a checkpoint taken with
``copy_tensors=True`` keeps the optimiser state of its step through later updates, while the
default one (``copy_tensors=False``) holds the live parameters, uncopied."""

from __future__ import annotations

import copy

import pytest
import torch

from ebmref.config import TrainConfig
from ebmref.nets import MLPEnergy
from ebmref.training import TrainingDiverged, TrainState, train, train_step
from verification.tiny_runs import ConstEnergy, tiny_config, tiny_data

DT = torch.float64


def _config(**extra) -> TrainConfig:
    return tiny_config(**extra)


def test_no_progress_bar_when_progress_is_off(capsys):
    torch.manual_seed(0)
    train(MLPEnergy(2, hidden=4, depth=1), tiny_data(), _config())
    assert capsys.readouterr().err == ""


def test_an_overflowing_loss_is_reported_as_the_loss():
    """E ≡ 1e200 (below max_energy = 1e300): the l2 term 0.1·E² overflows to inf, while the
    gradient, 0.1·4E = 4e199, is finite: the run stops at step 1 on "loss = inf"."""
    cfg = _config(**{"run.max_energy": 1e300, "optim.l2": 0.1, "optim.max_grad_norm": None})
    with pytest.raises(TrainingDiverged) as info:
        train_step(TrainState.create(ConstEnergy(1e200), cfg), tiny_data()[:4])
    assert str(info.value) == "training diverged at step 1: loss = inf"
    assert info.value.quantity == "loss" and info.value.value == float("inf")


def test_pcd_buffer_is_filled_from_the_whole_data_tensor():
    """buffer.init = "data": the 16 buffer states are picks from all 64 data points, not from
    the batch of 4. After one update the FIFO push has overwritten slots 0..3; slots 4..15 are
    untouched picks, all data points, more than 4 distinct ones (a fixed seed; were the picks
    uniform over the 64 points, 12 of them would fall on at most 4 points with probability
    < C(64,4)·(4/64)¹² < 1e-8)."""
    data = torch.arange(128, dtype=DT).reshape(64, 2)
    torch.manual_seed(0)
    res = train(MLPEnergy(2, hidden=4, depth=1), data,
                _config(**{"run.n_updates": 1, "buffer.init": "data", "buffer.size": 16}))
    kept = res.buffer.storage[4:]
    assert all(any(torch.equal(row, d) for d in data) for row in kept)
    assert len({tuple(row.tolist()) for row in kept}) > 4


def test_a_copied_state_dict_keeps_the_optimizer_state_of_its_step():
    """state_dict(copy_tensors=True) after update 1, then update 2: the saved optimiser state
    (Adam's moments and step counts) is still that of update 1."""
    torch.manual_seed(0)
    state = TrainState.create(MLPEnergy(2, hidden=4, depth=1).to(DT), _config())
    train_step(state, tiny_data()[:4])
    saved = state.state_dict(copy_tensors=True)
    want = copy.deepcopy(state.optimizer.state_dict())
    train_step(state, tiny_data()[4:8])
    for k, moments in want["state"].items():
        for name, v in moments.items():
            assert torch.equal(saved["optimizer"]["state"][k][name], v), (k, name)
    assert not torch.equal(state.optimizer.state_dict()["state"][0]["exp_avg_sq"],
                           want["state"][0]["exp_avg_sq"])  # update 2 did change them


def test_state_dict_does_not_copy_by_default():
    """state_dict() (copy_tensors=False): the model entries share the live parameters' memory,
    so an in-place change of θ shows in it."""
    torch.manual_seed(0)
    energy = MLPEnergy(2, hidden=4, depth=1).to(DT)
    state = TrainState.create(energy, _config())
    saved = state.state_dict()
    with torch.no_grad():
        for p in energy.parameters():
            p.add_(1.0)
    assert all(torch.equal(saved["model"][k], v) for k, v in energy.state_dict().items())
