"""The message of ebmref.training.TrainingDiverged, exactly: ``training diverged at step s:
<quantity> = <value><detail>``, with no detail by default (a bare train_step), train()'s
note of where to go back to ("; no checkpoint written yet" before the first checkpoint), and
the check of the final parameters after the last update, which names the data or the samples."""

from __future__ import annotations

import math

import pytest
import torch

from ebmref import distributed
from ebmref import training as T
from ebmref.config import TrainConfig, with_overrides
from ebmref.nets import MLPEnergy
from ebmref.training import TrainingDiverged, TrainState, train, train_step
from verification.tiny_runs import QuadraticEnergy

DT = torch.float64


def _config() -> TrainConfig:
    return with_overrides(TrainConfig(), {
        "run.n_updates": 3, "run.batch_size": 4, "run.device": "cpu", "run.dtype": "float64",
        "run.progress": False, "buffer.size": 8, "sampler.n_steps": 2,
        "sampler.step_size": 0.01, "sampler.noise": None, "sampler.clamp": None})


def _nan_energy() -> MLPEnergy:
    """An MLP with one NaN weight: every energy, hence every sampler step, is NaN."""
    torch.manual_seed(0)
    energy = MLPEnergy(2, hidden=4, depth=1).to(DT)
    with torch.no_grad():
        energy.net[0].weight[0, 0] = float("nan")
    return energy


def test_the_message_without_detail():
    err = TrainingDiverged(7, "loss", float("inf"))
    assert str(err) == "training diverged at step 7: loss = inf" and err.detail == ""
    err = TrainingDiverged(2, "loss", 3.5, " > max_energy=1")
    assert str(err) == "training diverged at step 2: loss = 3.5 > max_energy=1"


def test_train_step_raises_the_bare_message():
    state = TrainState.create(_nan_energy(), _config())
    with pytest.raises(TrainingDiverged) as info:
        train_step(state, torch.zeros(4, 2, dtype=DT))
    assert str(info.value) == ("training diverged at step 1: samples x⁻ (non-finite entries) "
                               "= nan")


def test_train_says_no_checkpoint_was_written():
    """Without a run directory nothing was saved: the same divergence, its value and fields
    kept, the note appended to the detail."""
    with pytest.raises(TrainingDiverged) as info:
        train(_nan_energy(), torch.zeros(16, 2, dtype=DT), _config())
    err = info.value
    assert str(err) == ("training diverged at step 1: samples x⁻ (non-finite entries) = nan; "
                        "no checkpoint written yet")
    assert (err.step, err.quantity, err.detail) == (1, "samples x⁻ (non-finite entries)",
                                                    "; no checkpoint written yet")
    assert math.isnan(err.value)


@pytest.mark.parametrize("data_at,box,quantity", [
    (2.0, (-0.01, 0.01), "|energy| of data E(x⁺)"),
    (0.0, (2.0, 3.0), "|energy| of samples E(x⁻)")])
def test_the_final_update_is_checked_and_named(data_at, box, quantity):
    """One Adam step of lr = 1000 moves w by ≈ ±1000 (Adam's first step is lr·sign(∂L/∂w)):
    with the data at 2 and the chains near 0, ∂L/∂w = mean x⁺² − mean x⁻² > 0 and |E(x⁺)| ≈
    4000 after the update; with the data at 0 and the chains in [2, 3], |E(x⁻)| ≥ 4000 while
    E(x⁺) = 0. Before the update every |E| ≤ 9 < max_energy = 100, so only the check after the
    final update sees it, and it names the quantity that exceeded."""
    cfg = with_overrides(_config(), {
        "run.n_updates": 1, "run.max_energy": 100.0, "optim.lr": 1000.0, "optim.l2": 0.0,
        "optim.max_grad_norm": None, "buffer.noise_low": box[0], "buffer.noise_high": box[1],
        "buffer.reinit_prob": 1.0, "sampler.n_steps": 1, "sampler.step_size": 1e-6})
    data = torch.full((16, 1), data_at, dtype=DT)
    with pytest.raises(TrainingDiverged) as info:
        train(QuadraticEnergy(), data, cfg)
    err = info.value
    assert (err.step, err.quantity) == (1, quantity + " after the final update")
    assert err.value > 1000.0
    assert str(err) == (f"training diverged at step 1: {quantity} after the final update = "
                        f"{err.value!r} > max_energy=100.0; no checkpoint written yet")


def _two_ranks(other):
    """all_reduce_stats as documented (mean; max for ``maxima``, min for ``minima``) over this
    rank's stats and a faked second rank's ``other(stats)``."""
    def reduce(stats, maxima=(), minima=()):
        both = torch.stack([stats, other(stats)])
        out = both.mean(0)
        if maxima:
            out[list(maxima)] = both.max(0).values[list(maxima)]
        if minima:
            out[list(minima)] = both.min(0).values[list(minima)]
        return out
    return reduce


def test_the_final_check_takes_the_largest_energy_over_ranks(monkeypatch):
    """Under a process group the final |E| checks use the maximum over ranks (a divergence on
    any rank stops all of them), not the mean. Faked here: a second rank whose final |E(x⁺)| is
    150, reduced as ebmref.distributed.all_reduce_stats documents (max for ``maxima``, mean for
    the rest; test_distributed.py checks the real reduction on two ranks). This rank's |E| are
    below 1, so the mean over ranks (< 76) would pass max_energy = 100 and the max does not."""
    other = torch.tensor([150.0, 0.0], dtype=DT)
    monkeypatch.setattr(distributed, "all_reduce_stats", _two_ranks(lambda stats: other))
    torch.manual_seed(0)
    state = TrainState.create(MLPEnergy(2, hidden=4, depth=1).to(DT),
                              with_overrides(_config(), {"run.max_energy": 100.0}))
    x = 0.1 * torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=DT)
    with torch.no_grad():
        assert state.energy(x).abs().max() < 1.0
    with pytest.raises(TrainingDiverged) as info:
        T._validate_final(state, x, x)
    assert info.value.quantity == "|energy| of data E(x⁺) after the final update"
    assert info.value.value == 150.0


def test_every_update_takes_the_largest_energies_over_ranks(monkeypatch):
    """The in-update checks, like the final one: a second rank (faked, reduced as documented)
    whose |E(x⁺)| or |E(x⁻)| alone is 150 stops the update at max_energy = 100 although the
    mean over the two ranks (< 76) would pass."""
    for index, quantity in ((0, "|energy| of data E(x⁺)"), (1, "|energy| of samples E(x⁻)")):
        def other(stats, index=index):
            return stats.index_fill(0, torch.tensor([index]), 150.0)

        monkeypatch.setattr(distributed, "all_reduce_stats", _two_ranks(other))
        torch.manual_seed(0)
        state = TrainState.create(MLPEnergy(2, hidden=4, depth=1).to(DT),
                                  with_overrides(_config(), {"run.max_energy": 100.0}))
        x = 0.1 * torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=DT)
        with pytest.raises(TrainingDiverged) as info:
            train_step(state, x)
        assert (info.value.quantity, info.value.value) == (quantity, 150.0)
