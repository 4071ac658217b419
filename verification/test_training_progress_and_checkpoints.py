"""ebmref.training.train's progress bar, record times and checkpoint schedule: a resumed run's
bar starts at the resumed step and ends at n_updates/n_updates with the last record's loss and
energies (3 significant digits) as its postfix; ``time_s`` is the time since the loop started
(non-negative, non-decreasing, within the wall time of the call); ``run.ckpt_every = 0`` writes
no checkpoint before the end, and ``ckpt_every = 2`` only at even steps; a divergence found by
the check after the final update names the last good checkpoint, of an earlier session."""

from __future__ import annotations

import re
import time

import pytest
import torch

from ebmref.checkpoint import load_checkpoint
from ebmref.config import TrainConfig, with_overrides
from ebmref.training import TrainingDiverged, train
from verification.tiny_runs import QuadraticEnergy, tiny_config, tiny_data, tiny_mlp

DT = torch.float64


def _config(**extra) -> TrainConfig:
    return tiny_config(**extra)


def test_resumed_bar_counts_from_the_resumed_step_with_the_last_record(tmp_path, capsys):
    """2 updates, then a resume to 4 with the bar on: it ends at 4/4 after 2 updates of this
    session, its postfix the last record's loss, energy_data and energy_samples (.3g)."""
    train(tiny_mlp(), tiny_data(), _config(), tmp_path)
    capsys.readouterr()
    res = train(tiny_mlp(), tiny_data(), _config(**{"run.n_updates": 4, "run.progress": True}),
                tmp_path, resume=True)
    assert [r["step"] for r in res.history] == [3, 4]
    last = capsys.readouterr().err.replace("\n", "\r").strip("\r").split("\r")[-1]
    rec = res.history[-1]
    post = ", ".join(f"{k}={rec[k]:.3g}" for k in ("loss", "energy_data", "energy_samples"))
    assert re.match(r"^train: 100%\|[^|]*\| 4/4 \[[^\]]*, " + re.escape(post) + r"\]$",
                    last), last


def test_record_times_are_seconds_since_the_loop_started():
    t0 = time.perf_counter()
    res = train(tiny_mlp(), tiny_data(), _config(**{"run.n_updates": 3}))
    wall = time.perf_counter() - t0
    times = [r["time_s"] for r in res.history]
    assert 0 <= times[0] <= times[1] <= times[2] <= wall


class _Stop(Exception):
    pass


def _stop_at(step: int):
    def callback(s, record):
        if s == step:
            raise _Stop

    return callback


@pytest.mark.parametrize("ckpt_every,stop,want", [(0, 4, None), (2, 4, 2), (2, 3, 2)])
def test_checkpoints_follow_ckpt_every(tmp_path, ckpt_every, stop, want):
    """Stopped by its callback at step `stop` of 6: with ckpt_every = 0 no checkpoint exists
    yet; with 2, the last one on disk is step 2 (step 4's would be written at step 5)."""
    cfg = _config(**{"run.n_updates": 6, "run.ckpt_every": ckpt_every})
    with pytest.raises(_Stop):
        train(tiny_mlp(), tiny_data(), cfg, tmp_path, callback=_stop_at(stop))
    path = tmp_path / "checkpoint.pt"
    assert (load_checkpoint(path)["step"] if path.exists() else None) == want


def test_final_divergence_names_the_last_good_checkpoint(tmp_path):
    """Data at 2, chains near 0: ∂L/∂w = 4 − mean x⁻² ≈ 4 at every update, and each Adam step
    (β₁ = 0, lr = 1000) moves w by 1000, so |E(x⁺)| ≈ 4·1001 after update 1, ≈ 4·2001 after
    update 2. Session 1 (max_energy 1e6) ends at step 1 with a checkpoint; session 2 resumes to
    step 2 with max_energy = 6000 (resumable): update 2 starts below it, the check after it
    fails and names session 1's checkpoint."""
    cfg = _config(**{"run.n_updates": 1, "run.max_energy": 1e6, "optim.lr": 1000.0,
                     "optim.l2": 0.0, "optim.max_grad_norm": None, "buffer.noise_low": -0.01,
                     "buffer.noise_high": 0.01, "buffer.reinit_prob": 1.0,
                     "sampler.step_size": 1e-6})
    data = torch.full((16, 1), 2.0, dtype=DT)
    train(QuadraticEnergy(), data, cfg, tmp_path)
    more = with_overrides(cfg, {"run.n_updates": 2, "run.max_energy": 6000.0})
    with pytest.raises(TrainingDiverged) as info:
        train(QuadraticEnergy(), data, more, tmp_path, resume=True)
    err = info.value
    assert (err.step, err.quantity) == (2, "|energy| of data E(x⁺) after the final update")
    assert 7000.0 < err.value < 9000.0
    assert err.detail == f" > max_energy=6000.0; last good checkpoint: {tmp_path / 'checkpoint.pt'}"
