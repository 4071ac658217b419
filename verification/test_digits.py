"""The 8×8-digits rung (digits/): the fixed stratified split, the classifier, AIS on the digits
energy against an independent estimate, the decision inputs of the report, the command line, and
``python -m digits --quick`` end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from digits.claims import c16_family, gate, likelihood_family
from digits.config import config_from_args, quick_config
from digits.data import (
    DIM,
    NOISE_STD,
    fixed_noisy,
    load_split,
    split_indices,
    split_record,
)
from digits.likelihood import AISConfig, nll_members
from digits.models import build_energy
from ebmref.energy import Gaussian

ROOT = Path(__file__).resolve().parents[1]
SPLIT_SHA = "da53ea98a3a0b401afbadaed3bcf77fff2e424324c8f8fab98963593feb4e095"


def test_split_is_fixed_disjoint_complete_and_stratified():
    parts = split_indices(0)
    allidx = np.concatenate(list(parts.values()))
    assert allidx.size == 1797 and np.unique(allidx).size == 1797  # disjoint and complete
    rec = split_record(0)
    assert rec["sha256"] == SPLIT_SHA  # the recorded split, byte for byte
    assert rec["sizes"] == {"train": 1078, "val": 359, "test": 360}
    totals = np.sum([rec["per_class"][s] for s in ("train", "val", "test")], axis=0)
    for s, frac in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        # stratified: every class within one digit of its share
        assert np.all(np.abs(np.asarray(rec["per_class"][s]) - frac * totals) <= 1.0)
    assert split_record(1)["sha256"] != SPLIT_SHA  # the seed matters
    d = load_split("test")
    assert d.images.shape == (360, 1, 8, 8) and 0.0 <= float(d.images.min())
    assert float(d.images.max()) <= 1.0 and torch.equal(d.indices, torch.from_numpy(parts["test"]))


def test_classifier_tiny_run_and_committed_accuracy():
    from mnist.classifier import accuracy, train_classifier

    torch.manual_seed(0)
    train, test = load_split("train"), load_split("test")
    clf = train_classifier(train, epochs=10, batch=64, max_shift=0, noise_std=NOISE_STD)
    assert accuracy(clf, test) >= 0.95  # 10 epochs (0.967, < 1 s); the study's 30 reach ≥ 0.97
    committed = json.loads((ROOT / "digits" / "results" / "metrics.json").read_text())
    committed = committed["classifier"]
    assert committed["test_accuracy_clean"] >= 0.97


def _known_energy(biases: list[float], scale: float = 0.02):
    """A digits energy whose MLP is nearly constant: E_g ≈ b_g + ‖x − 0.5‖²/2."""
    energy = build_energy(len(biases), hidden=16, depth=2, seed0=3)
    with torch.no_grad():
        for w in energy.net.weights:
            w.mul_(scale)
        last = energy.net.biases[-1]
        last.copy_(torch.tensor(biases).view(-1, 1, 1))
    return energy


def test_ais_on_the_digits_energy_matches_importance_sampling():
    """nll_members (one vectorised AIS run for all members) against an independent estimate:
    plain importance sampling from the model's own quadratic part N(0.5, I), 200,000 draws per
    member (log Z = log Z_N + log mean exp(−MLP), MLP ≈ constant, so its SE is < 0.005).
    Tolerance: 4 stated AIS SEs + 0.02 nats. The members' biases differ by 3 nats, so block
    g must be member g's."""
    torch.manual_seed(0)
    energy = _known_energy([0.5, 3.5])
    base = Gaussian(torch.full((DIM,), 0.5), torch.eye(DIM))
    x_eval = torch.full((5, DIM), 0.5)
    res = nll_members(energy, x_eval, base, AISConfig(n_temps=30, n_particles=400,
                                                      step_size=0.5, n_pilot=16),
                      torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    log_zn = float(base.log_partition().detach())
    for m in range(2):
        member = energy.member(m)
        x = base.sample(200_000, g)
        with torch.no_grad():
            mlp = member.net(x).double()
        log_z_is = log_zn + float(torch.logsumexp(-mlp, 0) - math.log(x.shape[0]))
        assert abs(res["log_z"][m] - log_z_is) < 4 * res["se"][m] + 0.02
        with torch.no_grad():
            e_mean = float(member(x_eval).double().mean())
        assert res["nll"][m] == pytest.approx(e_mean + res["log_z"][m], abs=1e-4)
    assert res["log_z"][0] - res["log_z"][1] == pytest.approx(3.0, abs=0.05)


def _sets(values: dict[str, list[float]], key: str) -> dict:
    return {name: {"per_seed": [{key: v} for v in vals], "pooled": {}}
            for name, vals in values.items()}


def test_decision_inputs_of_the_report():
    cfg = quick_config()
    # the gate: NLL chains from noise must be digits before C27/C29 are decided
    ok, why = gate({"nll/noise": {"pooled": {"confident_fraction": 0.5}}}, cfg)
    assert not ok and "not measured at CPU scale" in why and "0.50 < 0.8" in why
    assert gate({"nll/noise": {"pooled": {"confident_fraction": 0.85}}}, cfg)[0]
    # C16 on fixed per-seed values: a clear CD excess is verified, the rest are not
    hi, lo = [0.3 + 0.01 * i for i in range(10)], [0.01 * (i % 3) for i in range(10)]
    sets = _sets({"cd/noise": hi, "pcd/noise": lo, "nll/noise": lo, "true_cd/noise": lo,
                  "cd/descent": lo, "pcd/descent": lo, "nll/descent": lo,
                  "true_cd/descent": lo}, "spurious_fraction")
    fam = c16_family(sets, cfg)
    assert fam["noise: cd vs pcd"].verdict == "verified" and fam["noise: cd vs pcd"].m == 6
    assert fam["descent: cd vs pcd"].verdict == "not reproduced"
    # the likelihood table: an equivalence inside ±1 nat is refuted, a big excess verified
    rng = np.random.default_rng(0)
    base = list(-20 + 0.1 * rng.standard_normal(10))
    nll = {"nll": {"nll": base}, "cd": {"nll": [v + 5 for v in base]},
           "pcd": {"nll": [v + 0.01 for v in base]}}
    fam = likelihood_family(nll, cfg)
    assert fam["cd vs nll"].verdict == "verified"
    assert fam["pcd vs nll"].verdict == "refuted" and "equivalence" in fam["pcd vs nll"].note


@pytest.mark.parametrize("argv,option", [(["--seeds", "1"], "--seeds"),
                                         (["--threads", "0"], "--threads"),
                                         (["--methods", "nll,bogus"], "--methods"),
                                         (["--seeds", "x"], "--seeds")])
def test_command_line_bad_values_name_the_option(argv, option, capsys):
    with pytest.raises(SystemExit) as info:
        config_from_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert option in err[-1]  # one error line, naming the option


def test_noise_model_is_fixed_per_seed():
    x = load_split("val").flat[:5]
    assert torch.equal(fixed_noisy(x, 3, copies=2), fixed_noisy(x, 3, copies=2))
    assert fixed_noisy(x, 3, copies=2).shape == (10, DIM)


def test_quick_study_end_to_end(tmp_path):
    """``python -m digits --quick`` in-process, on four of its methods (every phase runs; the
    missing arms make rows "not measured"): every output exists and every experiment has a
    verdict from ebmref.verdict's vocabulary."""
    from digits.__main__ import main

    out = tmp_path / "out"
    assert main(["--quick", "--out", str(out), "--cache", str(tmp_path / "cache"),
                 "--methods", "nll,true_cd,nll_elastic,du_nll"]) == 0
    report = (out / "report.md").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert report.startswith("# Section 6 on 8×8 digits") and "Summary of findings" in report
    for name in ("likelihood", "C16", "C26", "C27", "C28", "C29"):
        assert name in metrics["verdicts"]
    words = ("verified", "qualified", "not reproduced", "refuted", "not measured")
    for name in ("C16", "C26", "C27", "C28", "C29"):
        assert metrics["verdicts"][name]["headline"]["verdict"] in words
    for png in ("nll.png", "ais.png", "claims.png", "chains_c27.png"):
        assert (out / png).is_file()
    assert set(metrics["likelihood"]["test"]) == {m for m in metrics["fits"]
                                                  if not m.startswith("du_")}
