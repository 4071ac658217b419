"""Every command line with bad values: one line on stderr naming the option, the documented
exit status (2: bad input, 1: a failure while running), no traceback, and no file written.
The commands run in-process from an empty working directory (their default outputs land
there if anything is written)."""

from __future__ import annotations

import importlib

import pytest

CASES = [
    # (module, argv, option named, exit status)
    ("mnist.train", ["--preset", "tiny", "--out", "o", "--sampler.step-size", "-1"],
     "--sampler.step-size", 2),
    ("mnist.train", ["--preset", "tiny", "--out", "o", "--run.n-updates", "abc"],
     "--run.n-updates", 2),
    ("mnist.train", ["--preset", "tiny", "--out", "o", "--model.elastic-sigma", "nan"],
     "--model.elastic-sigma", 2),
    ("mnist.train", ["--preset", "tiny", "--out", "o", "--optim.betas", "0.1"],
     "--optim.betas", 2),
    ("mnist.train", ["--preset", "tiny", "--out", "o", "--resume"], "--resume", 2),
    ("mnist.train", ["--preset", "tiny", "--out", "o", "--threads", "0"], "--threads", 2),
    ("mnist.train", ["--preset", "tiny", "--out", "o", "--run.device", "cuda:7"],
     "--run.device", 2),
    ("mnist.train", ["--preset", "tiny", "--out", "o", "--buffer.size", "10000000000"],
     "--buffer.size", 2),
    ("mnist.train", ["--preset", "nope", "--out", "o"], "--preset", 2),
    ("mnist.sample", ["--run", "missing", "--out", "s"], "--run", 1),
    ("mnist.sample", ["--run", "r", "--out", "s", "--sampler.n-steps", "0"],
     "--sampler.n-steps", 2),
    ("mnist.sample", ["--run", "r", "--out", "s", "--init", "data"], "--init", 2),
    ("mnist.sample", ["--run", "r", "--out", "s", "--record-every", "7"], "--record-every", 2),
    ("mnist.evaluate", ["--classifier-epochs", "0"], "--classifier-epochs", 2),
    ("mnist.evaluate", ["--reference", "nodir/ref.json"], "--reference", 2),
    ("mnist.evaluate", ["--samples", "nochains"], "chains.pt", 1),
    ("mnist.figures", ["--study", "nostudy"], "--study", 2),
    ("mnist.run_section6", ["--study", "s", "--sets", "bogus"], "--sets", 2),
    ("mnist.run_section6", ["--study", "s", "--seed", "-1"], "--seed", 2),
    ("mnist.gpu_study", ["--out", "o", "--dry-run", "--budget-min", "0"], "--budget-min", 2),
    ("mnist.gpu_study", ["--out", "o", "--dry-run", "--command-min", "-1"], "--command-min",
     2),
    ("mnist.gpu_study", ["--out", "o", "--dry-run", "--seed", "-1"], "--seed", 2),
    ("mnist.gpu_study", ["--out", "o", "--dry-run", "--threads", "0"], "--threads", 2),
    ("mnist.gpu_study", ["--out", "o", "--device", "cuda:99"], "--device", 2),
    ("mnist.gpu_study", ["--out", "o", "--device", "tpu"], "--device", 2),
    ("mnist.gpu_study", ["--out", "o", "--dry-run", "--data-source", "idx", "--data-root",
                         "nodata"], "--data-root", 1),
    ("toy_problems.__main__", ["--l2", "-1"], "--l2", 2),
    ("toy_problems.__main__", ["--targets", "moons"], "--targets", 2),
    ("toy_problems.__main__", ["--grid-points-2d", "200"], "--grid-points-2d", 2),
    ("toy_problems.__main__", ["--study", "claims", "--seeds", "0"], "--seeds", 2),
    ("toy_problems.__main__", ["--study", "claims", "--lr-grid", "x"], "--lr-grid", 2),
    ("toy_problems.__main__", ["--study", "claims", "--out", "/dev/null"], "--out", 2),
    ("digits.__main__", ["--seeds", "1"], "--seeds", 2),
    ("digits.__main__", ["--methods", "nll,bogus"], "--methods", 2),
    ("digits.__main__", ["--out", "/dev/null"], "--out", 2),
    ("digits.__main__", ["--report-only", "--cache", "nocache"], "--report-only", 2),
    ("benchmarks.samplers", ["--repeats", "x"], "--repeats", 2),
    ("benchmarks.ensemble", ["--dtype", "float16"], "--dtype", 2),
]


@pytest.mark.parametrize("module,argv,option,status", CASES,
                         ids=[f"{c[0]}:{c[2]}" for c in CASES])
def test_bad_values_give_one_line_naming_the_option(module, argv, option, status, tmp_path,
                                                    monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main = importlib.import_module(module).main
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own usage errors
        code = stop.code
    err = capsys.readouterr().err.strip()
    assert code == status, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert option in err and "error:" in err, err
    assert not list(tmp_path.iterdir()), "a rejected command wrote files"
