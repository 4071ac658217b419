"""What ebmref.training.train records and refuses at the level of the run: config.json holds
the resolved device and the transition's repr ("None" without one), extra ``records`` are
written beside it, the checkpoint records the energy's ``model_spec``; a directory holding a
finished run is refused by default and replaced with ``overwrite=True``; under a process group
(faked) a batch too small to split names ``run.batch_size``; the logged metrics carry an
``acceptance`` rate for MALA only; the data are cast to ``run.dtype``; the buffer is built with
the configured replacement and its own generator seeded with ``run.seed``."""

from __future__ import annotations

import json

import pytest
import torch

from ebmref import distributed
from ebmref.checkpoint import load_checkpoint
from ebmref.config import TrainConfig
from ebmref.training import train
from verification.tiny_runs import tiny_config, tiny_data, tiny_mlp

DT = torch.float64


def _config(**extra) -> TrainConfig:
    return tiny_config(**{"run.n_updates": 1, **extra})


class _Identity:
    def __call__(self, x, generator):
        return x

    def __repr__(self) -> str:
        return "Identity()"


def test_config_json_records_and_model_spec(tmp_path):
    spec = {"hidden": 4, "depth": 1}
    cfg = _config(**{"buffer.transition_on_read": True})
    train(tiny_mlp(), tiny_data(), cfg, tmp_path / "a", transition=_Identity(),
          records={"extra.json": {"note": [1, 2]}}, model_spec=spec)
    recorded = json.loads((tmp_path / "a" / "config.json").read_text())
    assert recorded["resolved_device"] == "cpu" and recorded["transition"] == "Identity()"
    assert json.loads((tmp_path / "a" / "extra.json").read_text()) == {"note": [1, 2]}
    assert load_checkpoint(tmp_path / "a" / "checkpoint.pt")["energy"]["spec"] == spec
    train(tiny_mlp(), tiny_data(), _config(), tmp_path / "b")
    assert json.loads((tmp_path / "b" / "config.json").read_text())["transition"] == "None"


def test_a_finished_run_is_refused_unless_overwrite(tmp_path):
    """Without overwrite (the default) a directory holding a run is refused; with it, the new
    run (here 2 updates) replaces the old one (1 update)."""
    train(tiny_mlp(), tiny_data(), _config(), tmp_path)
    with pytest.raises(ValueError, match=r"holds another run; resume it \(resume=True\), or "
                                         r"pass overwrite=True"):
        train(tiny_mlp(), tiny_data(), _config(**{"run.n_updates": 2}), tmp_path)
    train(tiny_mlp(), tiny_data(), _config(**{"run.n_updates": 2}), tmp_path, overwrite=True)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2


def test_a_batch_too_small_for_the_ranks_names_the_field(monkeypatch):
    """train under 2 ranks (init_from_env faked): run.batch_size = 1 cannot be split."""
    monkeypatch.setattr(distributed, "init_from_env",
                        lambda *a, **k: distributed.DistContext(0, 2))
    with pytest.raises(ValueError, match=r"^run\.batch_size: must be an integer in \[2, ∞\], "
                                         r"got 1$"):
        train(tiny_mlp(), tiny_data(), _config(**{"run.batch_size": 1}))


def test_acceptance_is_logged_for_mala_only():
    """ULA's records hold exactly step, time_s, the losses, energies and gradient norm; MALA's
    also its acceptance rate, in [0, 1]."""
    ula = train(tiny_mlp(), tiny_data(), _config()).history[0]
    assert set(ula) == {"step", "time_s", "loss", "loss_contrastive", "loss_kl", "energy_data",
                        "energy_samples", "grad_norm"}
    mala = train(tiny_mlp(), tiny_data(), _config(**{"sampler.kind": "mala"})).history[0]
    assert set(mala) == set(ula) | {"acceptance"} and 0.0 <= mala["acceptance"] <= 1.0


def test_float32_data_are_cast_to_the_run_dtype():
    """float32 data in a float64 run: the PCD buffer, picked from the data, holds float64."""
    res = train(tiny_mlp(), tiny_data().float(), _config(**{"buffer.init": "data"}))
    assert res.buffer.storage.dtype == DT


def test_the_buffer_follows_its_config():
    """buffer.replacement = "reservoir" (FIFO's pointer would have moved by the 4 chains); the
    buffer's own generator (used by pushes without one; train_step passes the run's) is
    seeded with run.seed = 7 and left untouched."""
    res = train(tiny_mlp(), tiny_data(), _config(**{"buffer.replacement": "reservoir",
                                                "run.seed": 7}))
    assert res.buffer.replacement == "reservoir" and res.buffer.ptr == 0
    want = torch.Generator().manual_seed(7).get_state()
    assert torch.equal(res.buffer.state_dict()["generator"], want)
