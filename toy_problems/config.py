"""The toy experiment's configuration: one dataclass, mapped one to one onto the command line."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

from ebmref.cli import ArgumentParser, add_config_arguments, overrides_from_args
from ebmref.validation import check_int_range, check_nonnegative, check_positive
from toy_problems.methods import MAIN_METHODS, METHOD_NAMES, Budget
from toy_problems.targets import TARGETS

MAIN_TARGETS = ("ring8", "two_modes", "checkerboard", "bimodal_1d")

QUICK_METHODS = ("nll", "cd10", "true_cd", "nll_kl_du2020", "nll_teleport")
QUICK_TARGETS = ("ring8", "bimodal_1d")


@dataclass
class ToyConfig:
    """Everything a report depends on (written to ``config.json`` next to it).

    Training budget (the same for every method): steps, batch_size, n_steps (sampler steps per
    update = t of CD-t), step_size (λ of eq. 1), hidden/depth (MLP), lr, l2, buffer_size.
    Evaluation: eval_chains chains from noise and as many from test data, eval_steps ULA steps
    (eq. 1, λ = step_size, T = 1) on the trained model; grid_points per axis for log Z;
    kl_bins histogram bins per axis for KL[q‖p_θ]. Funnel (C28): funnel_temperatures for Du's
    decoupled step at α = step_size/2, funnel_steps steps from noise, on funnel_targets.
    """

    out: str = "runs/toy"
    targets: list[str] = field(default_factory=lambda: list(MAIN_TARGETS))
    methods: list[str] = field(default_factory=lambda: list(MAIN_METHODS))
    seeds: int = 3
    # the training budget every method shares (defaults from methods.Budget)
    steps: int = Budget.steps
    batch_size: int = Budget.batch_size
    n_steps: int = Budget.n_steps
    step_size: float = Budget.step_size
    hidden: int = Budget.hidden
    depth: int = Budget.depth
    lr: float = Budget.lr
    beta1: float = Budget.beta1
    l2: float = Budget.l2
    buffer_size: int = Budget.buffer_size
    n_train: int = 5000
    n_test: int = 5000
    eval_chains: int = 200
    eval_steps: int = 200
    grid_points_2d: int = 201
    grid_points_1d: int = 2001
    kl_bins: int = 20
    grid_expand: int = 2  # quadrature box = data box widened this many times (same spacing)
    funnel_targets: list[str] = field(default_factory=lambda: ["bimodal_1d", "two_modes"])
    funnel_temperatures: list[float] = field(
        default_factory=lambda: [0.0025, 0.05, 0.25, 1.0, 2.0])
    funnel_steps: int = 600
    threads: int = 1
    quick: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for t in self.targets:
            if t not in TARGETS or TARGETS[t]().dim > 2:
                raise ValueError(f"targets: {t!r} is not one of the 1-D/2-D targets "
                                 f"{tuple(k for k in TARGETS if TARGETS[k]().dim <= 2)}")
        for m in self.methods:
            if m not in METHOD_NAMES:
                raise ValueError(f"methods: {m!r} is not one of {METHOD_NAMES}")
        if not self.targets or not self.methods:
            raise ValueError("targets, methods: need at least one of each")
        for name in ("seeds", "steps", "batch_size", "n_steps", "hidden", "depth",
                     "buffer_size", "eval_chains", "eval_steps", "funnel_steps", "threads"):
            check_int_range(getattr(self, name), name, 1)
        check_int_range(self.n_train, "n_train", self.batch_size)
        check_int_range(self.n_test, "n_test", self.eval_chains)
        check_int_range(self.kl_bins, "kl_bins", 2)
        check_int_range(self.grid_expand, "grid_expand", 1)
        for name in ("step_size", "lr"):
            check_positive(getattr(self, name), name)
        check_nonnegative(self.l2, "l2")
        if not (isinstance(self.beta1, float) and 0.0 <= self.beta1 < 1.0):
            raise ValueError(f"beta1: must be a number in [0, 1), got {self.beta1!r}")
        for name in ("grid_points_2d", "grid_points_1d"):
            n = getattr(self, name)
            if not (isinstance(n, int) and n >= 5 and (n - 1) % 4 == 0):
                raise ValueError(f"{name}: must be an integer ≥ 5 with n ≡ 1 (mod 4), got {n!r}")
        for t in self.funnel_temperatures:
            check_positive(t, "funnel_temperatures")

    def budget(self) -> Budget:
        return Budget(steps=self.steps, batch_size=self.batch_size, n_steps=self.n_steps,
                      step_size=self.step_size, hidden=self.hidden, depth=self.depth,
                      lr=self.lr, beta1=self.beta1, l2=self.l2,
                      buffer_size=self.buffer_size)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def quick_overrides() -> dict:
    """The CI smoke version (< 60 s): tiny budget, one seed, fewer methods and targets."""
    return {"targets": list(QUICK_TARGETS), "methods": list(QUICK_METHODS), "seeds": 1,
            "steps": 40, "batch_size": 64, "buffer_size": 256, "n_train": 1000, "n_test": 1000,
            "eval_chains": 64, "eval_steps": 60, "grid_points_2d": 101, "grid_points_1d": 401,
            "funnel_targets": ["bimodal_1d"], "funnel_temperatures": [0.05, 1.0],
            "funnel_steps": 100, "out": "runs/toy_quick"}


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m toy_problems",
        description="Toy EBM experiments with exact likelihood: train every method on every "
                    "target, measure, and write report.md, metrics.json and config.json.")
    p.add_argument("--quick", action="store_true",
                   help="smoke version for CI (< 60 s): " + ", ".join(
                       f"{k}={v}" for k, v in quick_overrides().items()))
    add_config_arguments(p, ToyConfig, title="experiment (toy_problems.config.ToyConfig)",
                         skip=("quick",))
    return p


def config_from_args(argv: list[str] | None = None) -> ToyConfig:
    """Defaults, then the --quick preset, then every option given explicitly."""
    args = build_parser().parse_args(argv)
    values = quick_overrides() if args.quick else {}
    values.update(overrides_from_args(args))
    return ToyConfig(**values, quick=args.quick)
