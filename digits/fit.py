"""Training to convergence, with one tuning procedure for every method.

Each method is trained as a vectorised ensemble of seeds (:mod:`digits.models`) with the
library's update (:func:`ebmref.training.train_step`) in a loop that, every ``eval_every``
updates, estimates each seed's validation NLL by a cheap AIS run (the *proxy*, validated
against the accurate test-time AIS in the report) and keeps each seed's best parameters.
Training stops when the mean validation NLL over seeds has not improved by ``min_delta`` nats
for ``patience`` evaluations (the method has converged), or at the cap. (A rule on every seed
separately never fires: the proxy's noise of about a nat lets some seed "improve" at almost
every evaluation.) What a seed is reported with is its best evaluation (its update count is
the budget it used).

Tuning (the same for every likelihood method): the learning rate is chosen from ``lrs`` by the
mean best validation NLL of ``tune_seeds`` seeds (seeds 100, 101, …, never the reported ones)
trained with the same rule and cap ``tune_cap``; then ``seeds`` seeds (0, 1, …) are trained at
the chosen rate. Methods of Du's low-temperature regime have no likelihood (T ≪ 1): they train
for a fixed ``du_updates`` at ``du_lr``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from digits.data import noisy
from digits.likelihood import AISConfig, nll_members
from digits.methods import Method
from digits.models import Confined, build_energy
from ebmref.training import TrainingDiverged, TrainState, train_step
from ebmref.validation import check_int_range


@dataclass(frozen=True)
class FitConfig:
    """The convergence rule, the tuning grid and the model size (module docstring)."""

    cap: int = 5000
    eval_every: int = 250
    patience: int = 3
    min_delta: float = 0.5
    lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2)
    tune_seeds: int = 3
    tune_cap: int = 1500
    seeds: int = 10
    hidden: int = 128
    depth: int = 2
    proxy: AISConfig = field(default_factory=lambda: AISConfig(n_temps=200, n_particles=32,
                                                               n_pilot=8))
    du_lr: float = 1e-3
    du_updates: int = 1500

    def __post_init__(self):
        check_int_range(self.eval_every, "eval_every", 1)
        check_int_range(self.cap, "cap", self.eval_every)
        check_int_range(self.patience, "patience", 1)
        if not (isinstance(self.min_delta, float) and self.min_delta >= 0):
            raise ValueError(f"min_delta: expected a float >= 0, got {self.min_delta!r}")
        check_int_range(self.tune_seeds, "tune_seeds", 1)
        check_int_range(self.seeds, "seeds", 1)
        if not self.lrs or any(not (isinstance(v, float) and v > 0) for v in self.lrs):
            raise ValueError(f"lrs: expected positive floats, got {self.lrs!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Splits:
    """What training and evaluation read: clean training digits (N, 64), the fixed noisy
    validation set and the AIS base."""

    train: Tensor
    val_noisy: Tensor
    base: object


@dataclass
class FitResult:
    method: str
    lr: float
    seed0: int
    energy: Confined
    best_step: list[int]
    best_val: list[float]
    history: list[dict]
    updates: int
    cpu_s: float
    wall_s: float
    diverged: str = ""
    stopped: str = ""

    def summary(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "energy"}
        d["n_members"] = self.energy.n_members
        return d


def _batch(method: Method, train: Tensor, state: TrainState) -> tuple[Tensor, Tensor]:
    """(x⁺, the pool data re-picks read from): noisy digits (fresh noise) or clean ones."""
    g, rows = state.generator, state.config.run.batch_size * state.energy.n_members
    idx = torch.randint(0, train.shape[0], (rows,), generator=g)
    if method.regime == "du":
        return train[idx], train
    return noisy(train[idx], g), noisy(train, g)


def _snapshot(energy: Confined, best: dict | None, improved: list[bool]) -> dict:
    """Copy member g's parameters into ``best`` where ``improved[g]`` (dim 0 = member)."""
    cur = energy.state_dict()
    if best is None:
        return {k: v.detach().clone() for k, v in cur.items()}
    for g, ok in enumerate(improved):
        if ok:
            for k, v in cur.items():
                best[k][g] = v[g]
    return best


def train_ensemble(method: Method, lr: float, n_members: int, seed0: int, cap: int,
                   splits: Splits, cfg: FitConfig, evaluate: bool = True,
                   generator_seed: int = 0) -> FitResult:
    """Train ``n_members`` seeds of ``method`` (module docstring); ``evaluate=False`` trains
    for ``cap`` updates and keeps the last parameters."""
    t0, c0 = time.perf_counter(), time.process_time()
    energy = build_energy(n_members, cfg.hidden, cfg.depth, seed0)
    state = TrainState.create(energy, method.config(lr, cap, seed0))
    state.ensure_buffer((splits.train.shape[1],))
    transition = method.transition()
    g_eval = torch.Generator().manual_seed(generator_seed)
    best_val = [math.inf] * n_members
    best_step = [0] * n_members
    best, history, diverged, stopped = None, [], "", "cap"
    best_mean, since = math.inf, 0
    while state.step < cap:
        x_pos, pool = _batch(method, splits.train, state)
        try:
            out = train_step(state, x_pos, pool=pool, transition=transition)
        except TrainingDiverged as err:
            diverged = str(err)
            break
        if not evaluate or state.step % cfg.eval_every:
            continue
        val = nll_members(energy, splits.val_noisy, splits.base, cfg.proxy, g_eval)["nll"]
        improved = [v < b for v, b in zip(val, best_val)]
        for g_, ok in enumerate(improved):
            best_val[g_], best_step[g_] = ((val[g_], state.step) if ok
                                           else (best_val[g_], best_step[g_]))
        best = _snapshot(energy, best, improved)
        history.append({"step": state.step, "val_nll": val, **out.stats})
        mean = sum(val) / len(val)
        since = 0 if mean < best_mean - cfg.min_delta else since + 1
        best_mean = min(best_mean, mean)
        if since >= cfg.patience:
            stopped = "converged"
            break
    if diverged:
        stopped = "diverged"
    if evaluate and best is not None:
        energy.load_state_dict(best)
    elif not evaluate:
        best_step = [state.step] * n_members
        best_val = [math.nan] * n_members
    return FitResult(method.name, lr, seed0, energy, best_step, best_val, history, state.step,
                     time.process_time() - c0, time.perf_counter() - t0, diverged,
                     stopped if evaluate else "fixed budget")


def tune_and_fit(method: Method, splits: Splits, cfg: FitConfig, log=print) -> dict:
    """The learning rate by the tuning rule, then the reported seeds (module docstring).
    Returns {"fit": FitResult, "tuning": [{lr, mean best val NLL, per seed, cpu_s}]}."""
    if method.regime == "du":
        fit = train_ensemble(method, cfg.du_lr, cfg.seeds, 0, cfg.du_updates, splits, cfg,
                             evaluate=False)
        log(f"[fit] {method.name}: {fit.updates} updates (fixed budget), "
            f"{fit.cpu_s:.0f} s CPU")
        return {"fit": fit, "tuning": []}
    tuning = []
    for lr in cfg.lrs:
        r = train_ensemble(method, lr, cfg.tune_seeds, 100, cfg.tune_cap, splits, cfg)
        vals = [v for v in r.best_val if math.isfinite(v)]
        score = sum(vals) / len(vals) if vals and not r.diverged else math.inf
        tuning.append({"lr": lr, "mean_best_val_nll": score, "best_val": r.best_val,
                       "best_step": r.best_step, "updates": r.updates, "cpu_s": r.cpu_s,
                       "diverged": r.diverged})
        log(f"[tune] {method.name} lr {lr:g}: val NLL {score:.2f} ({r.updates} updates, "
            f"{r.cpu_s:.0f} s CPU){' DIVERGED' if r.diverged else ''}")
    lr = min(tuning, key=lambda t: t["mean_best_val_nll"])["lr"]
    fit = train_ensemble(method, lr, cfg.seeds, 0, cfg.cap, splits, cfg)
    log(f"[fit] {method.name} lr {lr:g}: val NLL {sum(fit.best_val) / len(fit.best_val):.2f}, "
        f"{fit.updates} updates ({fit.stopped}), {fit.cpu_s:.0f} s CPU")
    return {"fit": fit, "tuning": tuning}
