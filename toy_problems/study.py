"""The claims study: ``python -m toy_problems --study claims``.

For every (method, target) a registered comparison needs (:meth:`StudyConfig.jobs`):

1. **tune** — one ensemble of (lr, l2) settings × ``tune_seeds`` seeds (per-member rates and
   penalties, :mod:`toy_problems.fit`) trained with the stopping rule below; the setting with the
   lowest mean best validation NLL wins (a diverged member counts as +∞);
2. **train** — ``seeds`` fresh seeds with that setting as one ensemble, each member stopped
   early on its exact validation NLL (eval every ``eval_every`` updates, ``patience``
   evaluations without improvement of any member, ``cap`` updates) and kept at its best;
3. **score** — every member on its own (``member(g)``) by fine quadrature on the data box widened
   until the mass beyond it is < ``leak_tol`` nats (else flagged "leak" and excluded; non-finite
   energies flag "diverged"): test NLL gap, mode weights, far-field mass, mass outside the data
   box (:mod:`toy_problems.probes`).

Then the claim probes (:mod:`toy_problems.study_probes`) give per-seed values for every
registered comparison (:func:`toy_problems.study_config.registered`), and
:mod:`toy_problems.study_report` decides them with :mod:`ebmref.verdict` and writes the report.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ebmref.config import with_overrides
from ebmref.machine import cpu_model
from toy_problems import metrics as M
from toy_problems import probes as P
from toy_problems.fit import (
    EnsembleGrid,
    FactorisedGrid,
    FitResult,
    StopRule,
    block_energy,
    fit,
    make_ensemble,
    member,
)
from toy_problems.methods import METHODS, Budget, ConfinedEnergy, make_train_config, make_transition
from toy_problems.study_config import StudyConfig, registered
from toy_problems.targets import Target, make_target


@dataclass
class Split:
    train: Tensor
    val: Tensor
    test: Tensor
    entropy: float  # −(1/n)Σ log p_data(x_test): the test NLL of the truth


@dataclass
class Trained:
    """One (method, target): the ensemble at its members' best θ, and how it got there."""

    method: str
    target: str
    energy: ConfinedEnergy
    lr: float
    l2: float
    fit: FitResult
    tuning: list[dict]
    members: list[dict]  # per-member scores (status "ok" | "leak" | "diverged")
    grids: list  # per-member fine grid (M.DensityGrid, or a list per block), None if not ok
    train_cpu_s: float = 0.0
    tune_cpu_s: float = 0.0
    job_cpu_s: float = 0.0  # tuning + training + scoring, this job's process CPU time
    job_wall_s: float = 0.0
    extra: dict = field(default_factory=dict)


def data_split(target: Target, cfg: StudyConfig) -> Split:
    """One draw of training, validation and test data per target, shared by all methods."""
    g = torch.Generator().manual_seed(cfg.data_seed + sum(map(ord, target.name)))
    x = target.sample(cfg.n_train + cfg.n_val + cfg.n_test, g)
    a, b = cfg.n_train, cfg.n_train + cfg.n_val
    test = x[b:]
    return Split(x[:a], x[a:b], test, M.data_nll(target, test))


def widened(bounds, factor: float):
    return tuple(((lo + hi) / 2 - factor * (hi - lo) / 2, (lo + hi) / 2 + factor * (hi - lo) / 2)
                 for lo, hi in bounds)


def val_grid(target: Target, cfg: StudyConfig):
    """The coarse validation grid (the data box widened ``grid_expand`` times)."""
    bounds = widened(target.bounds, cfg.grid_expand)
    if target.blocks is None:
        return EnsembleGrid(bounds, cfg.val_points_2d if target.dim == 2 else cfg.val_points_1d)
    return FactorisedGrid(bounds, target.blocks, [cfg.val_points_2d if len(b) == 2
                                                  else cfg.val_points_1d for b in target.blocks])


def train_config(method: str, target: Target, cfg: StudyConfig):
    budget = Budget(steps=cfg.cap, batch_size=cfg.batch_size, n_steps=cfg.n_steps,
                    step_size=cfg.step_size, hidden=cfg.hidden, depth=cfg.depth,
                    lr=cfg.lr_grid[0], beta1=cfg.beta1, l2=cfg.l2_grid[0],
                    buffer_size=cfg.buffer_size, dtype=cfg.dtype)
    tcfg = make_train_config(METHODS[method], target, budget, 0)
    return with_overrides(tcfg, {"run.n_updates": cfg.cap, "run.dtype": cfg.dtype})


def stop_rule(cfg: StudyConfig) -> StopRule:
    return StopRule(eval_every=cfg.eval_every, patience=cfg.patience, cap=cfg.cap,
                    min_updates=cfg.min_updates, min_delta=cfg.min_delta)


def tune(method: str, target: Target, split: Split, cfg: StudyConfig) -> tuple[list[dict], dict]:
    """Every (lr, l2) of the grid × ``tune_seeds`` seeds as one ensemble, the same stopping
    rule; returns the table and the winning setting (lowest mean best validation NLL)."""
    settings = [(lr, l2) for lr in cfg.lr_grid for l2 in cfg.l2_grid]
    seeds = list(range(cfg.tune_seeds))
    energy = make_ensemble(target, [s for _ in settings for s in seeds], cfg.hidden, cfg.depth,
                           getattr(torch, cfg.dtype), cfg.hidden_1d)
    lrs = [lr for lr, _ in settings for _ in seeds]
    l2s = [l2 for _, l2 in settings for _ in seeds]
    res = fit(energy, split.train, split.val, train_config(method, target, cfg), stop_rule(cfg),
              val_grid(target, cfg), lr=lrs, l2=l2s,
              transition=make_transition(METHODS[method], target))
    table = []
    for i, (lr, l2) in enumerate(settings):
        idx = range(i * len(seeds), (i + 1) * len(seeds))
        vals = [res.best_val[j] if res.diverged[j] is None else math.inf for j in idx]
        table.append({"lr": lr, "l2": l2, "best_val": vals,
                      "mean_best_val": sum(vals) / len(vals),
                      "best_step": [res.best_step[j] for j in idx],
                      "diverged": [res.diverged[j] for j in idx]})
    best = min(table, key=lambda r: (r["mean_best_val"], r["lr"]))
    return table, {"lr": best["lr"], "l2": best["l2"], "updates": res.updates,
                   "cpu_s": res.train_cpu_s}


def score_member(energy: ConfinedEnergy, target: Target, split: Split, cfg: StudyConfig):
    """One member's exact scores (fine quadrature, validated box). Returns (record, grid)."""
    if target.blocks is not None:
        return _score_factorised(energy, target, split, cfg)
    n = cfg.grid_points_2d if target.dim == 2 else cfg.grid_points_1d
    check = P.validated_grid(energy, target.bounds, n, expand=cfg.grid_expand,
                             max_expand=cfg.max_expand, tol=cfg.leak_tol)
    rec = {"status": check.status, "leak": check.leak, "expand": check.expand}
    if check.status != "ok":
        return rec, None
    g = check.grid
    nll = M.heldout_nll(energy, split.test, g.log_z)
    val = M.heldout_nll(energy, split.val, g.log_z)
    w = M.model_mode_weights(g, target)
    rec.update(test_nll=nll, nll_gap=nll - split.entropy, val_nll_fine=val, log_z=g.log_z,
               log_z_error=g.log_z_error, mode_weights=w.tolist(),
               in_mode_mass=float(w.sum()), mode_weight_error=M.mode_weight_error(g, target),
               far_mass=P.far_mass(g, target, cfg.far_distance),
               outside_box_mass=P.outside_box_mass(g, target.bounds))
    return rec, g


def _score_factorised(energy, target: Target, split: Split, cfg: StudyConfig):
    """A factorised member: one validated grid per block; log Z = Σ log Z_b; far-field mass by
    the exact law of the extra coordinates' squared norm (:func:`toy_problems.study_probes`)."""
    from toy_problems.study_probes import factorised_far_mass

    grids, leak, worst = [], 0.0, "ok"
    for b, block in enumerate(target.blocks):
        sub = block_energy(energy, b)
        n = cfg.grid_points_2d if len(block) == 2 else cfg.grid_points_1d
        check = P.validated_grid(sub, tuple(target.bounds[i] for i in block), n,
                                 expand=cfg.grid_expand, max_expand=cfg.max_expand,
                                 tol=cfg.leak_tol / len(target.blocks))
        grids.append(check.grid)
        leak += check.leak if math.isfinite(check.leak) else math.inf
        if check.status != "ok":
            worst = "diverged" if "diverged" in (worst, check.status) else check.status
    rec = {"status": worst, "leak": leak, "expand": cfg.grid_expand}
    if worst != "ok":
        return rec, None
    log_z = sum(g.log_z for g in grids)
    e_test = float(M.as_float64_energy(energy)(split.test).mean())
    e_val = float(M.as_float64_energy(energy)(split.val).mean())
    inside = 1.0
    for g, block in zip(grids, target.blocks):
        inside *= 1.0 - P.outside_box_mass(g, tuple(target.bounds[i] for i in block))
    rec.update(test_nll=e_test + log_z, nll_gap=e_test + log_z - split.entropy,
               val_nll_fine=e_val + log_z, log_z=log_z,
               log_z_error=sum(g.log_z_error for g in grids),
               far_mass=factorised_far_mass(grids, target, cfg.far_distance),
               outside_box_mass=1.0 - inside)
    return rec, grids


def score_all(energy: ConfinedEnergy, res: FitResult, target: Target, split: Split,
              cfg: StudyConfig) -> tuple[list[dict], list]:
    """Every member scored on its own (:func:`score_member`), with its training record."""
    members, grids = [], []
    for g in range(energy.n_members):
        rec, grid = score_member(member(energy, g), target, split, cfg)
        if res.diverged[g] is not None:
            rec["diverged_at"] = res.diverged[g]
            if rec["status"] == "ok":
                rec["status_note"] = "stopped by divergence; scored at its best validated θ"
        rec.update(seed=cfg.seed_offset + g, best_step=res.best_step[g], val_nll=res.best_val[g])
        members.append(rec)
        grids.append(grid)
    return members, grids


def train_job(method: str, target: Target, split: Split, cfg: StudyConfig,
              reuse: Trained | None = None) -> Trained:
    """Tune (or take ``reuse``'s tuned setting), train the final seeds as one ensemble, and
    score every member."""
    c0, w0 = time.process_time(), time.perf_counter()
    if reuse is None:
        table, chosen = tune(method, target, split, cfg)
    else:
        table = [{**r, "reused_from": reuse.target} for r in reuse.tuning]
        chosen = {"lr": reuse.lr, "l2": reuse.l2}
    tune_cpu = time.process_time() - c0
    seeds = [cfg.seed_offset + g for g in range(cfg.seeds)]
    energy = make_ensemble(target, seeds, cfg.hidden, cfg.depth, getattr(torch, cfg.dtype),
                           cfg.hidden_1d)
    tcfg = with_overrides(train_config(method, target, cfg),
                          {"optim.lr": chosen["lr"], "optim.l2": chosen["l2"]})
    res = fit(energy, split.train, split.val, tcfg, stop_rule(cfg), val_grid(target, cfg),
              transition=make_transition(METHODS[method], target))
    members, grids = score_all(energy, res, target, split, cfg)
    return Trained(method, target.name, energy, chosen["lr"], chosen["l2"], res, table,
                   members, grids, train_cpu_s=res.train_cpu_s, tune_cpu_s=tune_cpu,
                   job_cpu_s=time.process_time() - c0, job_wall_s=time.perf_counter() - w0)


def summary_of(tr: Trained) -> dict:
    """What metrics.json keeps of a trained job (no tensors)."""
    ok = [m for m in tr.members if m["status"] == "ok"]
    gaps = [m["nll_gap"] for m in ok]
    return {"method": tr.method, "target": tr.target, "lr": tr.lr, "l2": tr.l2,
            "max_log_z_error": max((m["log_z_error"] for m in ok), default=None),
            "max_leak": max((m["leak"] for m in ok), default=None),
            "updates": tr.fit.updates, "stopped": tr.fit.stopped,
            "best_step": tr.fit.best_step, "diverged": tr.fit.diverged,
            "train_cpu_s": tr.train_cpu_s, "tune_cpu_s": tr.tune_cpu_s,
            "job_cpu_s": tr.job_cpu_s, "job_wall_s": tr.job_wall_s,
            "tuning": tr.tuning, "members": tr.members,
            "n_ok": len(ok), "mean_nll_gap": sum(gaps) / len(gaps) if gaps else None,
            "val_grid_error": max((abs(m["val_nll"] - m["val_nll_fine"]) for m in ok
                                   if "val_nll_fine" in m), default=None)}


def environment(cfg: StudyConfig) -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "cpus": os.cpu_count(), "threads": cfg.threads, "machine": platform.machine(),
            "processor": cpu_model(), "platform": platform.platform()}


def run_study(cfg: StudyConfig, command: str) -> dict:
    """Train every job, run the probes, decide, write the report (module docstring)."""
    from toy_problems import study_probes, study_report

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    regs = registered(cfg)
    # Pre-registration: the config and every comparison are on disk before training starts.
    (out / "config.json").write_text(json.dumps(
        {"command": command, "config": cfg.to_dict(),
         "registered": [r.__dict__ for r in regs]}, indent=1) + "\n")
    t0, c0 = time.perf_counter(), time.process_time()
    load_start = os.getloadavg()[0]
    targets = {t: make_target(t) for _, t in cfg.jobs()}
    splits = {t: data_split(targets[t], cfg) for t in targets}
    trained: dict[tuple[str, str], Trained] = {}
    from_cache, rescore_cpu, rescore_wall = [], 0.0, 0.0
    for m, t in cfg.jobs():
        cached = Path(cfg.cache) / f"{m}__{t}.pt" if cfg.cache else None
        if cached is not None and cached.is_file():
            # A cached job keeps its training; its members are scored again by this code.
            tr = torch.load(cached, weights_only=False)
            c_r, w_r = time.process_time(), time.perf_counter()
            tr.members, tr.grids = score_all(tr.energy, tr.fit, targets[t], splits[t], cfg)
            rescore_cpu += time.process_time() - c_r
            rescore_wall += time.perf_counter() - w_r
            trained[(m, t)] = tr
            from_cache.append(f"{m}/{t}")
            continue
        print(f"[study] {m} on {t}", flush=True)
        src = cfg.reuse_tuning.get(t)
        trained[(m, t)] = train_job(m, targets[t], splits[t], cfg,
                                    reuse=trained.get((m, src)) if src else None)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.save(trained[(m, t)], cached)
    c1, w1 = time.process_time(), time.perf_counter()
    values, details = study_probes.run_all(trained, targets, splits, cfg)
    # Jobs loaded from the cache count with the time they took when they were trained, so the
    # totals are those of the whole study however many sessions it took.
    jobs_cpu = sum(tr.job_cpu_s for tr in trained.values())
    jobs_wall = sum(tr.job_wall_s for tr in trained.values())
    probes_cpu, probes_wall = time.process_time() - c1, time.perf_counter() - w1
    timing = {"train_cpu_s": jobs_cpu, "train_wall_s": jobs_wall, "rescore_cpu_s": rescore_cpu,
              "probes_cpu_s": probes_cpu, "probes_wall_s": probes_wall,
              "process_cpu_s": jobs_cpu + rescore_cpu + probes_cpu,
              "wall_s": jobs_wall + rescore_wall + probes_wall, "rescore_wall_s": rescore_wall,
              "this_session_wall_s": time.perf_counter() - t0,
              "this_session_cpu_s": time.process_time() - c0, "jobs_from_cache": from_cache,
              "load_average_1min_start": load_start,
              "load_average_1min_end": os.getloadavg()[0]}
    jobs = {f"{m}/{t}": summary_of(tr) for (m, t), tr in trained.items()}
    return study_report.write(out, cfg, command, regs, values, details, jobs, timing,
                              environment(cfg), trained, targets)
