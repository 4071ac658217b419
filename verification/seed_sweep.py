"""Measure the real false-failure rate of the stochastic tests over fresh seeds.

    python -m verification.seed_sweep --seeds 100 [--base B] [-k EXPR] [paths...]

Runs every ``@pytest.mark.stochastic`` test N times in ONE pytest process (``--seed-sweep N``,
handled in verification/conftest.py), with the sweep seeds B..B+N−1: B is ``--base`` when
given, else drawn from the clock, so every sweep sees new seeds. The base and the seeds are
printed first; rerunning with the same ``--base`` (and -k, paths) reproduces the sweep, and one
failing seed k of a test is rerun alone with ``EBMREF_SEED=k python -m pytest NODEID``.

The table lists, per test, the number of failing seeds against the expected number α·N, where
α is the test's stated rate (``@pytest.mark.stochastic(alpha=...)``, default
``verification.stats.ALPHA``), and the failing seeds.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict

import pytest

from verification.conftest import base_nodeid, clock_seed_base
from verification.stats import ALPHA


class _Collector:
    def __init__(self) -> None:
        self.runs: dict[str, int] = defaultdict(int)
        self.failures: dict[str, list[int]] = defaultdict(list)
        self.alpha: dict[str, float] = {}
        self.messages: dict[str, str] = {}

    def pytest_collection_modifyitems(self, items) -> None:
        for it in items:
            mark = it.get_closest_marker("stochastic")
            if mark is not None:
                self.alpha[base_nodeid(it.nodeid)] = float(mark.kwargs.get("alpha", ALPHA))

    def pytest_runtest_logreport(self, report) -> None:
        base = base_nodeid(report.nodeid)
        if report.when == "call" or (report.when == "setup" and report.failed):
            self.runs[base] += 1
            if report.failed:
                seed = re.search(r"(?<=[\[-])seed(\d+)(?=[\]-])", report.nodeid)
                self.failures[base].append(int(seed.group(1)) if seed else -1)
                self.messages.setdefault(base, str(report.longrepr).splitlines()[-1][:160])


def report(collector: _Collector, base: int, n_seeds: int, elapsed: float) -> int:
    """Print the table; return the total number of failing runs."""
    width = max([len(k) for k in collector.runs] + [4])
    print(f"\nseed sweep: {n_seeds} fresh seeds {base}..{base + n_seeds - 1} (base {base}), "
          f"{elapsed:.0f} s")
    print(f"{'test':<{width}}  failures/runs  expected (α·N)  failing seeds")
    total_fail, total_runs, total_expected = 0, 0, 0.0
    for name in sorted(collector.runs):
        runs, failed = collector.runs[name], collector.failures.get(name, [])
        expected = collector.alpha.get(name, ALPHA) * runs
        total_fail += len(failed)
        total_runs += runs
        total_expected += expected
        seeds = " ".join(map(str, failed))
        print(f"{name:<{width}}  {len(failed):>5}/{runs:<6}  {expected:.1e}        {seeds}")
    print(f"{'total':<{width}}  {total_fail:>5}/{total_runs:<6}  {total_expected:.1e}")
    for name, msg in collector.messages.items():
        print(f"  first failure of {name}: {msg}")
        print(f"    rerun: EBMREF_SEED={collector.failures[name][0]} python -m pytest '{name}'")
    return total_fail


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=100, help="number of fresh seeds N")
    ap.add_argument("--base", type=int, default=None,
                    help="first seed B (seeds B..B+N-1); default: drawn from the clock")
    ap.add_argument("-k", default=None, help="pytest -k expression to select tests")
    ap.add_argument("paths", nargs="*", default=["verification"])
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error("--seeds: need N >= 1")
    base = clock_seed_base() if args.base is None else args.base
    print(f"seed sweep: base {base}, seeds {base}..{base + args.seeds - 1} "
          f"(rerun: python -m verification.seed_sweep --seeds {args.seeds} --base {base}"
          f"{' -k ' + repr(args.k) if args.k else ''} {' '.join(args.paths)})", flush=True)

    collector = _Collector()
    pytest_args = [*args.paths, "-q", "-p", "no:cacheprovider", "--seed-sweep", str(args.seeds),
                   "--seed-base", str(base), "-m", "stochastic and not slow", "--no-header",
                   "-rN", "--tb=no"]
    if args.k:
        pytest_args += ["-k", args.k]
    t0 = time.perf_counter()
    code = pytest.main(pytest_args, plugins=[collector])
    elapsed = time.perf_counter() - t0
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        print(f"pytest exited with {code!r}", file=sys.stderr)
        return int(code)
    return 0 if report(collector, base, args.seeds, elapsed) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
