"""The study's configuration (what ``python -m digits`` runs), its two scales and the command
line. Everything a verdict depends on — metrics, comparisons, directions, α, margins, seeds,
n — is fixed here before the run and written to ``config.json``."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, replace

from digits.fit import FitConfig
from digits.likelihood import AISConfig
from digits.methods import METHODS
from ebmref.cli import ArgumentParser, add_debug_argument
from ebmref.validation import check_int_range, check_positive


@dataclass(frozen=True)
class StudyConfig:
    """fit: training rule and grid; test_ais / check_ais: the accurate AIS and the longer
    schedule it is checked against; mixture_runs: AIS runs on the tractable mixture;
    inflate: the AIS base's widening; chains: per seed, and their length; alpha; margins
    (stated before the run, in the units of each metric)."""

    out: str = "digits/results"
    cache: str = "runs/digits_study"
    methods: tuple[str, ...] = tuple(METHODS)
    split_seed: int = 0
    fit: FitConfig = field(default_factory=FitConfig)
    test_ais: AISConfig = field(default_factory=lambda: AISConfig(n_temps=1000,
                                                                  n_particles=100))
    check_ais: AISConfig = field(default_factory=lambda: AISConfig(n_temps=4000,
                                                                   n_particles=100))
    inflate: float = 1.5
    eval_copies: int = 2
    mixture_runs: int = 4
    classifier_epochs: int = 30
    chains_per_seed: int = 100
    chain_steps: int = 2000
    du_chain_steps: int = 1000
    record_every: int = 100
    deform_every: int = 100
    funnel_noises: tuple[float, ...] = (0.005, 0.02, 0.05)
    c26_short: int = 20
    c26_long: int = 500
    floor_draws: int = 50
    n_boot: int = 200
    alpha: float = 0.05
    confident_needed: float = 0.8
    nll_margin: float = 1.0
    kept_margin: float = 0.1
    frechet_margin_of_floor: float = 0.5
    threads: int = 1
    quick: bool = False

    def __post_init__(self):
        for m in self.methods:
            if m not in METHODS:
                raise ValueError(f"methods: unknown method {m!r}; allowed {sorted(METHODS)}")
        for name in ("chains_per_seed", "chain_steps", "du_chain_steps", "record_every",
                     "floor_draws", "threads", "mixture_runs", "classifier_epochs",
                     "eval_copies"):
            check_int_range(getattr(self, name), name, 1)
        check_int_range(self.n_boot, "n_boot", 10)
        check_positive(self.inflate, "inflate")
        for name in ("chain_steps", "du_chain_steps"):
            if getattr(self, name) % self.record_every:
                raise ValueError(f"{name}: must be a multiple of record_every="
                                 f"{self.record_every}, got {getattr(self, name)}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha: must lie in (0, 1), got {self.alpha!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def quick_config(**kw) -> StudyConfig:
    """Seconds: 2 seeds, tens of updates, short AIS and chains (a smoke run, no claims)."""
    fit = FitConfig(cap=20, eval_every=10, patience=1, lrs=(3e-3,), tune_seeds=1, tune_cap=10,
                    seeds=2, hidden=32, proxy=AISConfig(n_temps=5, n_particles=4, n_pilot=2),
                    du_updates=10)
    base = StudyConfig(fit=fit, test_ais=AISConfig(n_temps=10, n_particles=8, n_pilot=2),
                       check_ais=AISConfig(n_temps=20, n_particles=8, n_pilot=2),
                       mixture_runs=1, classifier_epochs=1, chains_per_seed=10,
                       chain_steps=20, du_chain_steps=20, record_every=10, deform_every=10,
                       c26_short=5, c26_long=20, floor_draws=5, n_boot=20, quick=True,
                       out="runs/digits_quick", cache="runs/digits_quick/cache", eval_copies=1)
    return replace(base, **kw)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m digits",
        description="The 8×8-digits rung of section 6: train every method to convergence on "
                    "sklearn's digits, measure test NLL by AIS, decide C16, C26-C29, write the "
                    "report.")
    p.add_argument("--quick", action="store_true", help="a smoke run in under a minute")
    p.add_argument("--out", default=None, help="report directory (default digits/results)")
    p.add_argument("--cache", default=None,
                   help="trained models are kept here and reused (default runs/digits_study)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per method (default 10)")
    p.add_argument("--methods", default=None,
                   help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1)")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild the report from the results saved under --cache by the last "
                        "run (no training)")
    add_debug_argument(p)
    return p


def _positive_int(parser, name: str, value) -> None:
    if value is not None and value < 1:
        parser.error(f"--{name}: must be >= 1, got {value}")


def config_from_args(argv: list[str] | None = None) -> StudyConfig:
    """Parse; a bad value exits with one line naming the option (argparse's usage error)."""
    return config_and_args(argv)[0]


def config_and_args(argv: list[str] | None = None) -> tuple[StudyConfig, argparse.Namespace]:
    """The config and the parsed arguments (for ``--report-only`` and ``--debug``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _positive_int(parser, "seeds", args.seeds)
    _positive_int(parser, "threads", args.threads)
    kw: dict = {}
    if args.out:
        kw["out"] = args.out
    if args.cache:
        kw["cache"] = args.cache
    if args.threads:
        kw["threads"] = args.threads
    if args.methods:
        names = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        bad = [m for m in names if m not in METHODS]
        if bad or not names:
            parser.error(f"--methods: unknown method(s) {bad}; allowed {','.join(METHODS)}")
        kw["methods"] = names
    cfg = quick_config(**kw) if args.quick else StudyConfig(**kw)
    if args.seeds:
        if args.seeds < 2:
            parser.error(f"--seeds: must be >= 2 (a comparison needs a spread), got {args.seeds}")
        cfg = replace(cfg, fit=replace(cfg.fit, seeds=args.seeds))
    return cfg, args
