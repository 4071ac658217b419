"""The digits study, phase by phase (``python -m digits`` calls :func:`run_study`).

1. data (fixed split), the digit classifier, the AIS base, the real-data references;
2. AIS checked on a tractable 64-D model (exact log Z, forward and reverse);
3. every method tuned and trained to convergence (:mod:`digits.fit`; trained models are cached
   under ``cache`` and reused when their configuration matches);
4. test NLL by AIS per seed, the validation proxy checked against the accurate AIS, and the
   accurate AIS checked against a 4× longer schedule;
5. the chain sets of C16, C27, C28, C29 and the descent profile of C26, measured per seed;
6. the verdicts (:mod:`digits.claims`), figures and the report (:mod:`digits.report`).

Each phase's wall and process CPU time is recorded in ``metrics.json``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch

from digits.chains import (
    ChainSpec,
    descent_profile,
    energies_on,
    nearest_distances,
    run,
    seed_metrics,
    spurious_fraction,
)
from digits.config import StudyConfig
from digits.data import DigitsData, fixed_noisy, load_split, split_record
from digits.fit import FitResult, Splits, tune_and_fit
from digits.likelihood import (
    class_mixture,
    make_base,
    nll_members,
    validate_on_mixture,
)
from digits.methods import METHODS, get_method
from digits.models import build_energy
from mnist.classifier import accuracy, train_classifier
from mnist.metrics import classify, frechet_bootstrap, frechet_floor

# name → (method, init, kind): kind "plain" | "deform" | "descent" | a Du noise level
CHAIN_SETS = {
    "nll/noise": ("nll", "noise", "plain"),
    "true_cd/noise": ("true_cd", "noise", "plain"),
    "pcd/noise": ("pcd", "noise", "plain"),
    "cd/noise": ("cd", "noise", "plain"),
    "nll/data": ("nll", "data", "plain"),
    "true_cd/data": ("true_cd", "data", "plain"),
    "nll/descent": ("nll", "noise", "descent"),
    "true_cd/descent": ("true_cd", "noise", "descent"),
    "pcd/descent": ("pcd", "noise", "descent"),
    "cd/descent": ("cd", "noise", "descent"),
    "nll_elastic/noise+deform": ("nll_elastic", "noise", "deform"),
    "nll_elastic/noise": ("nll_elastic", "noise", "plain"),
    "nll/noise+deform": ("nll", "noise", "deform"),
}


@dataclass
class Context:
    """What every phase reads."""

    cfg: StudyConfig
    train: DigitsData
    val: DigitsData
    test: DigitsData
    classifier: torch.nn.Module
    base: object
    test_noisy: torch.Tensor
    references: dict = field(default_factory=dict)


class _Phase:
    """Context manager recording wall and process CPU seconds of a phase."""

    def __init__(self, timing: dict, name: str, log):
        self.timing, self.name, self.log = timing, name, log

    def __enter__(self):
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        self.log(f"== {self.name}")
        return self

    def __exit__(self, *exc):
        self.timing[self.name] = {"wall_s": time.perf_counter() - self.t0,
                                  "cpu_s": time.process_time() - self.c0}
        return False


def prepare(cfg: StudyConfig, log=print) -> tuple[Context, dict]:
    """Data, classifier, AIS base and the real-data references."""
    train, val, test = (load_split(s, cfg.split_seed) for s in ("train", "val", "test"))
    clf = train_classifier(train, epochs=cfg.classifier_epochs, batch=64, max_shift=0,
                           noise_std=0.1)
    test_noisy = fixed_noisy(test.flat, seed=1, copies=cfg.eval_copies)
    ns = SimpleNamespace(images=test_noisy.view(-1, 1, 8, 8),
                         labels=test.labels.repeat(cfg.eval_copies))
    clf_meta = {"epochs": cfg.classifier_epochs, "augmentation": "N(0, 0.1²) pixel noise",
                "test_accuracy_clean": accuracy(clf, test),
                "test_accuracy_noisy": accuracy(clf, ns), "val_accuracy_clean": accuracy(clf, val)}
    log(f"classifier: test accuracy {clf_meta['test_accuracy_clean']:.4f} (clean), "
        f"{clf_meta['test_accuracy_noisy']:.4f} (noisy)")
    base = make_base(fixed_noisy(train.flat, seed=3, copies=4), cfg.inflate)
    ctx = Context(cfg, train, val, test, clf, base, test_noisy)
    refs = references(ctx)
    ctx.references = refs
    return ctx, {"split": split_record(cfg.split_seed), "classifier": clf_meta,
                 "references": refs}


def references(ctx: Context) -> dict:
    """Metrics of real digits: the floor of every chain metric (noisy digits for the T = 1
    models, clean ones for Du's regime), Fréchet floors as distributions at the per-seed n and
    the pooled n."""
    cfg, out = ctx.cfg, {}
    n_seed, n_pool = cfg.chains_per_seed, cfg.chains_per_seed * cfg.fit.seeds
    for kind in ("noisy", "clean"):
        ref_x = ctx.test_noisy if kind == "noisy" else ctx.test.flat
        real = fixed_noisy(ctx.train.flat, 5, copies=2) if kind == "noisy" else ctx.train.flat
        _, ref_f = classify(ctx.classifier, ref_x.view(-1, 1, 8, 8))
        probs, feats = classify(ctx.classifier, real.view(-1, 1, 8, 8))
        conf = (probs.max(-1).values > 0.9).double().mean()
        out[kind] = {"confident_fraction": float(conf),
                     "floor_per_seed": frechet_floor(feats, ref_f, min(n_seed, len(feats)),
                                                     cfg.floor_draws, seed=1),
                     "floor_pooled": frechet_floor(feats, ref_f, min(n_pool, len(feats)),
                                                   cfg.floor_draws, seed=2),
                     "reference": ("noisy" if kind == "noisy" else "clean") + " test digits"}
        out[kind]["features"] = ref_f  # removed before writing
    out["nn_distance_noisy_q99"] = float(torch.quantile(
        nearest_distances(ctx.test_noisy, ctx.train.flat), 0.99))
    out["nn_distance_clean_q99"] = float(torch.quantile(
        nearest_distances(ctx.test.flat, ctx.train.flat), 0.99))
    return out


def _cache_key(cfg: StudyConfig, method: str) -> str:
    m = METHODS[method]
    blob = json.dumps({"method": m.config(1.0, 1).to_dict(), "elastic": m.elastic,
                       "regime": m.regime, "fit": cfg.fit.to_dict(), "split": cfg.split_seed,
                       "version": 1}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def fit_all(ctx: Context, log=print) -> dict[str, dict]:
    """{method: {"fit": FitResult, "tuning": [...]}}; cached models reused."""
    cfg = ctx.cfg
    cache = Path(cfg.cache) / "models"
    cache.mkdir(parents=True, exist_ok=True)
    splits = Splits(ctx.train.flat, fixed_noisy(ctx.val.flat, seed=11, copies=1), ctx.base)
    out = {}
    for name in cfg.methods:
        key = _cache_key(cfg, name)
        path = cache / f"{name}-{key}.pt"
        if path.is_file():
            saved = torch.load(path, weights_only=True)
            summ = json.loads(saved["summary"])
            energy = build_energy(summ["n_members"], cfg.fit.hidden, cfg.fit.depth)
            energy.load_state_dict(saved["state_dict"])
            summ.pop("n_members")
            fit = FitResult(energy=energy, **summ)
            out[name] = {"fit": fit, "tuning": json.loads(saved["tuning"]), "cached": True}
            log(f"[fit] {name}: reused {path}")
            continue
        res = tune_and_fit(get_method(name), splits, cfg.fit, log=log)
        fit = res["fit"]
        torch.save({"state_dict": fit.energy.state_dict(),
                    "summary": json.dumps(fit.summary(), default=float),
                    "tuning": json.dumps(res["tuning"], default=float)}, path)
        out[name] = {**res, "cached": False}
    return out


def likelihoods(ctx: Context, fits: dict, log=print) -> dict:
    """Test NLL per seed (accurate AIS); the proxy against the accurate AIS on validation; the
    accurate AIS against a 4× longer schedule (on ``nll`` and ``cd``); the tractable-model
    check."""
    cfg, out = ctx.cfg, {"test": {}, "val_accurate": {}, "schedule_check": {}}
    val_noisy = fixed_noisy(ctx.val.flat, seed=11, copies=1)
    for name, res in fits.items():
        if METHODS[name].regime != "t1":
            continue
        energy = res["fit"].energy
        g = torch.Generator().manual_seed(1000 + len(out["test"]))
        out["test"][name] = nll_members(energy, ctx.test_noisy, ctx.base, cfg.test_ais, g)
        out["val_accurate"][name] = nll_members(energy, val_noisy, ctx.base, cfg.test_ais, g)
        t = out["test"][name]
        log(f"[nll] {name}: test NLL {sum(t['nll']) / len(t['nll']):.2f} nats, ESS "
            f"{min(t['ess']):.1f}–{max(t['ess']):.1f} of {t['n_particles']}")
        if name in ("nll", "cd"):
            out["schedule_check"][name] = nll_members(energy, ctx.test_noisy, ctx.base,
                                                      cfg.check_ais, g)
    mixture = class_mixture(fixed_noisy(ctx.train.flat, seed=3, copies=4),
                            ctx.train.labels.repeat(4))
    mix_nll = float((mixture(ctx.test_noisy.double())
                     + torch.logsumexp(mixture.logits.detach(), 0)).mean().detach())
    out["mixture_check"] = validate_on_mixture(mixture, ctx.base, cfg.test_ais,
                                               cfg.mixture_runs, torch.Generator().manual_seed(5))
    out["baselines"] = yardsticks(ctx.cfg)
    assert abs(out["baselines"]["class_mixture_test_nll"] - mix_nll) < 1e-6
    return out


@torch.no_grad()
def yardsticks(cfg: StudyConfig) -> dict:
    """Exact test NLLs (same fixed noisy test digits as the EBMs) of tractable models fitted to
    noisy training digits: one full-covariance Gaussian, the AIS base (that Gaussian widened
    by ``inflate``) and one full Gaussian per class (deterministic, recomputed on demand)."""
    train = load_split("train", cfg.split_seed)
    test = fixed_noisy(load_split("test", cfg.split_seed).flat, seed=1, copies=cfg.eval_copies)
    train_noisy = fixed_noisy(train.flat, seed=3, copies=4)
    out = {}
    for name, inflate in (("gaussian_test_nll", 1.0), ("base_gaussian_test_nll", cfg.inflate)):
        g = make_base(train_noisy, inflate)
        out[name] = float((g(test) + g.log_partition()).mean())
    mixture = class_mixture(train_noisy, train.labels.repeat(4))
    out["class_mixture_test_nll"] = float((mixture(test.double())
                                           + torch.logsumexp(mixture.logits, 0)).mean())
    return out


def chain_sets(ctx: Context, fits: dict, log=print) -> dict:
    """Every chain set of :data:`CHAIN_SETS` whose method was trained, plus C28's noise levels
    and C26's descent profiles: per-seed metrics, pooled Fréchet distance with bootstrap CI,
    spurious fractions, and the final states of seed 0 for the figures."""
    cfg, out = ctx.cfg, {"sets": {}, "funnel": {}, "c26": {}, "grids": {}}
    refs = ctx.references
    for name, (method, init, kind) in CHAIN_SETS.items():
        if method not in fits:
            continue
        spec = ChainSpec(init=init, n_steps=cfg.chain_steps, record_every=cfg.record_every,
                         deform_every=cfg.deform_every if kind == "deform" else 0,
                         descent=kind == "descent")
        out["sets"][name] = measure_set(ctx, fits[method]["fit"].energy, METHODS[method], spec,
                                        refs["noisy"]["features"], ctx.test_noisy, seed=len(
                                            out["sets"]))
        out["grids"][name] = out["sets"][name].pop("grid")
        s = out["sets"][name]
        log(f"[chains] {name}: confident {s['pooled']['confident_fraction']:.2f}, Fréchet "
            f"{s['pooled']['frechet']['fd']:.1f}")
    if "du_nll" in fits:
        for sigma in cfg.funnel_noises:
            spec = ChainSpec(init="data", n_steps=cfg.du_chain_steps, noise=sigma,
                             record_every=cfg.record_every)
            key = f"du_nll/data σ={sigma:g}"
            out["funnel"][key] = measure_set(ctx, fits["du_nll"]["fit"].energy,
                                             METHODS["du_nll"], spec,
                                             refs["clean"]["features"], ctx.test.flat,
                                             seed=100 + len(out["funnel"]))
            out["grids"][key] = out["funnel"][key].pop("grid")
    for name in ("du_nll", "du_kl_du2020", "du_kl_cd"):
        if name in fits:
            out["c26"][name] = descent_profile(fits[name]["fit"].energy, METHODS[name],
                                               cfg.chains_per_seed, cfg.c26_short,
                                               cfg.c26_long, torch.Generator().manual_seed(9))
    return out


def measure_set(ctx: Context, energy, method, spec: ChainSpec, ref_features, eval_x,
                seed: int) -> dict:
    """Run one chain set and measure it per seed and pooled."""
    cfg = ctx.cfg
    g = torch.Generator().manual_seed(10_000 + seed)
    res = run(energy, method, spec, cfg.chains_per_seed, ctx.test, g)
    test_e = energies_on(energy, eval_x)
    per_seed = seed_metrics(ctx.classifier, energy, res, ref_features, test_e, spec.record_every)
    ends = res["trajectory"][-1]
    probs, feats = classify(ctx.classifier, ends.view(-1, 1, 8, 8))
    pooled = {"n": int(ends.shape[0]),
              "confident_fraction": float((probs.max(-1).values > 0.9).double().mean()),
              "frechet": frechet_bootstrap(feats, ref_features, cfg.n_boot, seed=seed)}
    tau = ctx.references["nn_distance_clean_q99" if spec.descent
                         else "nn_distance_noisy_q99"]
    e_thr = test_e.median(1).values
    spur = spurious_fraction(energy, ends, ctx.train.flat, tau, e_thr)
    for row, s in zip(per_seed, spur):
        row["spurious_fraction"] = s
    n = cfg.chains_per_seed
    grid = torch.stack([res["trajectory"][:, j] for j in range(min(8, n))])  # seed 0
    return {"spec": spec.__dict__, "per_seed": per_seed, "pooled": pooled,
            "tau": tau, "grid": grid}


def jsonable(obj):
    """Tensors to lists, NaN/inf to None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return jsonable(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def machine() -> dict:
    import platform

    return {"python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
