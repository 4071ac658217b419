"""``python -m toy_problems [--quick] [--out DIR] [--seeds N] [--targets ...] [--methods ...]``

Trains every method on every target for every seed (sequentially: the runs are small and
vectorised over chains, so one thread each is fastest on a 2-core CPU), measures them with
exact likelihoods, and writes ``report.md`` (with PNG figures), ``metrics.json`` and
``config.json`` under ``--out``: a descriptive report (no verdicts).

``python -m toy_problems --study claims [--quick] [options of toy_problems.study_config]``
runs the claims study instead (:mod:`toy_problems.study`): tuned, early-stopped ensembles of
10 seeds per method and target, the claim probes and the pre-registered verdicts of
:mod:`ebmref.verdict`, written to ``toy_problems/results/claims`` by default.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ebmref.cli import (
    ArgumentParser,
    add_config_arguments,
    guarded,
    option_words,
    overrides_from_args,
)
from ebmref.files import check_output_dir
from toy_problems import figures
from toy_problems.config import ToyConfig, build_parser, config_from_args
from toy_problems.experiment import funnel, reference_row, run_one, summarise
from toy_problems.report import COLUMNS, write_report
from toy_problems.targets import make_target

SUMMARY_KEYS = [c[0] for c in COLUMNS] + ["heldout_nll", "data_nll", "leak", "log_z_error",
                                           "kl_bias", "train_s", "eval_s"]


def run(cfg: ToyConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    (out / "runs.jsonl").unlink(missing_ok=True)
    t_start = time.perf_counter()
    cpu_start = time.process_time()

    targets = {t: make_target(t) for t in cfg.targets}
    jobs = [(t, m, s) for t in cfg.targets for m in cfg.methods for s in range(cfg.seeds)]
    records, artefacts, nll_models = [], {}, {}
    for t, m, s in tqdm(jobs, desc="toy runs", unit="run"):
        rec, art, energy = run_one(targets[t], m, s, cfg, keep_artefacts=(s == 0))
        records.append(rec)
        with open(out / "runs.jsonl", "a") as f:  # survives a crash later in the sweep
            f.write(json.dumps(rec, default=float) + "\n")
        if art is not None:
            artefacts.setdefault(t, {})[m] = art
        if m == "nll" and energy is not None and t in cfg.funnel_targets:
            nll_models[(t, s)] = energy

    funnel_rows = []
    for (t, s), energy in tqdm(sorted(nll_models.items()), desc="funnel (C28)", unit="model"):
        funnel_rows.extend(funnel(energy, targets[t], cfg, s))

    references = {t: reference_row(targets[t], cfg) for t in cfg.targets}
    summary = summarise(records, SUMMARY_KEYS)

    figs = []
    for t, target in targets.items():
        if t in artefacts:
            figures.landscapes(target, artefacts[t], out / f"landscape_{t}.png")
            figures.chains(target, artefacts[t], out / f"chains_{t}.png")
            figs += [f"landscape_{t}.png", f"chains_{t}.png"]
    figures.summary_bars(summary, cfg.targets, cfg.methods, out / "summary.png")
    if funnel_rows:
        figures.funnel(funnel_rows, out / "funnel.png")

    wall = time.perf_counter() - t_start
    cpu = time.process_time() - cpu_start
    timing = {"wall_s": wall, "process_cpu_s": cpu,
              "train_s_total": sum(r.get("train_s", 0.0) for r in records),
              "eval_s_total": sum(r.get("eval_s", 0.0) for r in records),
              "load_average_1min_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg")
              else None}
    metrics = {"config": cfg.to_dict(), "timing": timing, "runs": records,
               "summary": summary, "references": references, "funnel": funnel_rows,
               "environment": {"python": platform.python_version(), "torch": torch.__version__,
                               "cpus": os.cpu_count(), "threads": cfg.threads}}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float) + "\n")
    write_report(out, cfg, summary, references, figs, timing, funnel_rows)
    return metrics


def study_parser() -> argparse.ArgumentParser:
    from toy_problems.study_config import StudyConfig, quick_overrides

    p = ArgumentParser(
        prog="python -m toy_problems --study claims",
        description="The claims study: tuned, early-stopped 10-seed ensembles, claim probes "
                    "and pre-registered verdicts (ebmref.verdict); writes report.md, "
                    "metrics.json, config.json and figures under --out.")
    p.add_argument("--study", choices=["claims"], required=True)
    p.add_argument("--quick", action="store_true",
                   help="smoke version (seconds): " + ", ".join(
                       f"{k}={v}" for k, v in quick_overrides().items()))
    add_config_arguments(p, StudyConfig, title="study (toy_problems.study_config.StudyConfig)",
                         skip=("quick",))
    return p


def study_main(argv: list[str]) -> int:
    from toy_problems.study import run_study
    from toy_problems.study_config import StudyConfig, quick_overrides

    parser = study_parser()
    args = parser.parse_args(argv)
    values = quick_overrides() if args.quick else {}
    values.update(overrides_from_args(args))
    try:
        cfg = StudyConfig(**values, quick=args.quick)
    except ValueError as err:  # bad option values: a usage error naming the option
        parser.error(option_words(str(err), [(StudyConfig, "")]))
    command = "python -m toy_problems " + " ".join(argv)

    def body() -> int:
        check_output_dir(cfg.out, "--out")
        if cfg.cache:
            check_output_dir(cfg.cache, "--cache")
        metrics = run_study(cfg, command)
        print(f"report: {Path(cfg.out) / 'report.md'}  (wall {metrics['timing']['wall_s']:.0f} "
              f"s, CPU {metrics['timing']['process_cpu_s']:.0f} s)")
        return 0

    return guarded("python -m toy_problems --study claims", body)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a == "--study" or a.startswith("--study=") for a in argv):
        return study_main(argv)
    try:
        cfg = config_from_args(argv)
    except ValueError as err:  # bad option values: a usage error naming the option
        build_parser().error(option_words(str(err), [(ToyConfig, "")]))
    def body() -> int:
        check_output_dir(cfg.out, "--out")
        metrics = run(cfg)
        print(f"report: {Path(cfg.out) / 'report.md'}  "
              f"(wall {metrics['timing']['wall_s']:.0f} s)")
        return 0

    return guarded("python -m toy_problems", body)


if __name__ == "__main__":
    sys.exit(main())
