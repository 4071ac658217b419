"""``python -m digits [--quick] [--out DIR] [--cache DIR] [--seeds N] [--methods a,b]``

Runs the digits study (:mod:`digits.study`) and writes ``report.md``, ``metrics.json``,
``config.json`` and the figures under ``--out`` (default ``digits/results``). Trained models are
cached under ``--cache`` and reused by later runs with the same configuration;
``--report-only`` rebuilds the report from the last run's saved results.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

from digits import figures, report
from digits.claims import all_verdicts
from digits.config import StudyConfig, config_and_args
from digits.study import (
    _Phase,
    chain_sets,
    fit_all,
    jsonable,
    likelihoods,
    machine,
    prepare,
    yardsticks,
)
from ebmref.cli import guarded
from ebmref.files import atomic_torch_save, atomic_write_json, atomic_write_text, check_output_dir

RESULTS_NAME = "results.pt"


def run_study(cfg: StudyConfig, log=print) -> dict:
    """Every phase (:mod:`digits.study`), then the outputs; torch and BLAS use
    ``cfg.threads`` threads."""
    torch.set_num_threads(cfg.threads)
    with threadpool_limits(limits=cfg.threads, user_api="blas"):
        return _run(cfg, log)


def _run(cfg: StudyConfig, log) -> dict:
    timing: dict = {}
    t0, c0 = time.perf_counter(), time.process_time()
    with _Phase(timing, "prepare", log):
        ctx, prep = prepare(cfg, log)
    with _Phase(timing, "fit", log):
        fits = fit_all(ctx, log)
    with _Phase(timing, "likelihood", log):
        lik = likelihoods(ctx, fits, log)
    with _Phase(timing, "chains", log):
        chains = chain_sets(ctx, fits, log)
    timing["total"] = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
    refs = {k: ({kk: vv for kk, vv in v.items() if kk != "features"} if isinstance(v, dict)
                else v) for k, v in prep["references"].items()}
    results = {
        "config": cfg.to_dict(), "machine": machine(), "timing": timing,
        "split": prep["split"], "classifier": prep["classifier"], "references": refs,
        "fits": {m: {"summary": r["fit"].summary(), "tuning": r["tuning"],
                     "cached": r.get("cached", False)} for m, r in fits.items()},
        "likelihood": lik,
        "chains": {k: v for k, v in chains.items() if k != "grids"},
        "command": "python -m digits" + (" --quick" if cfg.quick else ""),
    }
    grids = chains["grids"]
    Path(cfg.cache).mkdir(parents=True, exist_ok=True)
    blob = json.dumps(jsonable(results))  # strict JSON: NaN → None, as --report-only reads it
    atomic_torch_save({"results": blob, "grids": grids}, Path(cfg.cache) / RESULTS_NAME)
    return write_outputs(cfg, json.loads(blob), grids, log)


def write_outputs(cfg: StudyConfig, results: dict, grids: dict, log=print) -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    results["likelihood"]["baselines"] = yardsticks(cfg)
    verdicts = all_verdicts(results, cfg)
    results["verdicts"] = {name: {"plan": v["plan"],
                                  "headline": v["headline"].to_dict() if v["headline"] else None,
                                  "comparisons": {k: c.to_dict()
                                                  for k, c in v["comparisons"].items()}}
                           for name, v in verdicts.items()}
    made = figures.make_all(results, grids, out)
    atomic_write_json(out / "config.json", jsonable(cfg.to_dict()))
    atomic_write_json(out / "metrics.json", jsonable(results), indent=1)
    atomic_write_text(out / "report.md", report.render(results, verdicts, made, cfg))
    log(f"wrote {out / 'report.md'}")
    return results


def main(argv: list[str] | None = None) -> int:
    cfg, args = config_and_args(list(sys.argv[1:] if argv is None else argv))

    def body() -> int:
        check_output_dir(cfg.out, "--out")
        check_output_dir(cfg.cache, "--cache")
        if not args.report_only:
            run_study(cfg)
            return 0
        path = Path(cfg.cache) / RESULTS_NAME
        if not path.is_file():
            raise ValueError(f"--report-only: no saved results at {path}; run the study")
        saved = torch.load(path, weights_only=True)
        write_outputs(replace(cfg), json.loads(saved["results"]), saved["grids"])
        return 0

    return guarded("python -m digits", body, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
