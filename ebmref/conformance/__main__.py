"""Conformance checks from the command line: test a sampler, a KL loss or an entropy estimator
given as MODULE:FUNCTION, print the table, exit 0 when every row passes, 1 when one fails,
2 for bad input.

    python -m ebmref.conformance --sampler mysamplers:ula --kind ula
    python -m ebmref.conformance --sampler mysamplers:du_step --kind decoupled --noise 0.005
    python -m ebmref.conformance --sampler mysamplers:hmc --kind exact --step-size 0.3
    python -m ebmref.conformance --kl-loss mylosses:kl --sign cd --entropy-weight 1
    python -m ebmref.conformance --entropy myestimators:knn

The function is imported from MODULE (the current directory is searched first) and called as
described in :mod:`ebmref.conformance`: a sampler as ``fn(energy, x0, n_steps, step_size,
generator)``, a KL loss as ``loss_fn(energy, x_diff)``, an estimator as ``estimator(x)``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

from ebmref.cli import ArgumentParser, add_debug_argument, guarded
from ebmref.conformance.losses import KL_SIGNS, check_entropy, check_kl_loss
from ebmref.conformance.report import Report
from ebmref.conformance.sampler import SAMPLER_KINDS, check_sampler
from ebmref.stats import ALPHA, UnderpoweredError

PROG = "python -m ebmref.conformance"
OPTION_NAMES = {"fn": "--sampler", "loss_fn": "--kl-loss", "estimator": "--entropy",
                "kind": "--kind", "noise": "--noise", "targets": "--targets",
                "step_size": "--step-size", "n_steps": "--n-steps", "scale": "--scale",
                "rel_error": "--rel-error", "min_moved": "--min-moved", "alpha": "--alpha",
                "seed": "--seed", "sign": "--sign", "entropy_weight": "--entropy-weight"}
SAMPLER_ONLY = ("kind", "noise", "targets", "step_size", "n_steps", "scale", "rel_error",
                "min_moved")
KL_ONLY = ("sign", "entropy_weight")


def load_function(spec: str, option: str) -> Callable:
    """Import ``MODULE:FUNCTION`` (FUNCTION may be dotted, e.g. ``Class.method``); the current
    directory is searched first. ValueError naming ``option`` when it cannot be had."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{option}: expected MODULE:FUNCTION, got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"{option}: cannot import module {module_name!r}: {err}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{option}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{option}: {spec} is not callable ({type(obj).__name__})")
    return obj


def user_code(fn: Callable, spec: str) -> Callable:
    """``fn`` whose own exceptions become RuntimeError naming it (one line, exit status 1):
    an error inside the code under test is a failed check, not bad input."""
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            raise RuntimeError(f"{spec} raised {type(err).__name__}: {err}") from err
    return call


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--sampler", metavar="MODULE:FUNCTION",
                      help="fn(energy, x0, n_steps, step_size, generator) -> states (B, d)")
    what.add_argument("--kl-loss", metavar="MODULE:FUNCTION",
                      help="loss_fn(energy, x_diff) -> scalar KL auxiliary loss")
    what.add_argument("--entropy", metavar="MODULE:FUNCTION",
                      help="estimator(x (N, d)) -> entropy estimate in nats")
    s = p.add_argument_group("--sampler options")
    s.add_argument("--kind", choices=SAMPLER_KINDS, help="law to test against (default exact)")
    s.add_argument("--noise", type=float, help="σ of a --kind decoupled sampler")
    s.add_argument("--targets", nargs="+", help="subset of the standard targets")
    s.add_argument("--step-size", type=float, help="one step size for every target")
    s.add_argument("--n-steps", type=int, help="one number of steps for every target")
    s.add_argument("--scale", type=float, help="multiply the sample sizes (default 1)")
    s.add_argument("--rel-error", type=float, help="variance error to detect (default 0.05)")
    s.add_argument("--min-moved", type=float, help="movement guard f0 (default 0.1)")
    k = p.add_argument_group("--kl-loss options")
    k.add_argument("--sign", choices=KL_SIGNS, help="sign convention (default cd)")
    k.add_argument("--entropy-weight", type=float, help="w of the loss (default 1)")
    p.add_argument("--alpha", type=float, default=ALPHA, help="total false-failure rate")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    add_debug_argument(p)
    return p


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def run(args: argparse.Namespace) -> int:
    """Run the selected check, print its table; 0 if it passes, 1 if not."""
    common = {"alpha": args.alpha, "seed": args.seed}
    sampler_opts, kl_opts = _given(args, SAMPLER_ONLY), _given(args, KL_ONLY)
    if args.sampler is None and sampler_opts:
        raise ValueError(f"{OPTION_NAMES[next(iter(sampler_opts))]}: only with --sampler")
    if args.kl_loss is None and kl_opts:
        raise ValueError(f"{OPTION_NAMES[next(iter(kl_opts))]}: only with --kl-loss")
    try:
        if args.sampler is not None:
            fn = user_code(load_function(args.sampler, "--sampler"), args.sampler)
            if "targets" in sampler_opts:
                sampler_opts["targets"] = tuple(sampler_opts["targets"])
            report: Report = check_sampler(fn, **sampler_opts, **common)
        elif args.kl_loss is not None:
            fn = user_code(load_function(args.kl_loss, "--kl-loss"), args.kl_loss)
            report = check_kl_loss(fn, **kl_opts, **common)
        else:
            fn = user_code(load_function(args.entropy, "--entropy"), args.entropy)
            report = check_entropy(fn, **common)
    except UnderpoweredError as err:
        raise ValueError(f"{'--scale' if args.sampler else '--alpha'}: {err}") from None
    print(report.markdown())
    return 0 if report.passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return guarded(PROG, lambda: run(args), debug=args.debug, names=OPTION_NAMES)


if __name__ == "__main__":
    sys.exit(main())
