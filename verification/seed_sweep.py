"""Measure the real false-failure rate of the stochastic tests (TESTING.md rule 8).

    python -m verification.seed_sweep --seeds 100 [-k EXPR] [paths...]

Runs every ``@pytest.mark.stochastic`` test N times with fresh seeds in ONE pytest process
(``--seed-sweep N``, handled in verification/conftest.py) and prints, per test, the number of
failing seeds against the expected number α·N, where α is the test's stated rate
(``@pytest.mark.stochastic(alpha=...)``, default ``verification.stats.ALPHA``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

import pytest

from verification.conftest import base_nodeid
from verification.stats import ALPHA


class _Collector:
    def __init__(self) -> None:
        self.runs: dict[str, int] = defaultdict(int)
        self.failures: dict[str, int] = defaultdict(int)
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
                self.failures[base] += 1
                self.messages.setdefault(base, str(report.longrepr).splitlines()[-1][:160])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=100, help="number of fresh seeds N")
    ap.add_argument("-k", default=None, help="pytest -k expression to select tests")
    ap.add_argument("paths", nargs="*", default=["verification"])
    args = ap.parse_args(argv)

    collector = _Collector()
    pytest_args = [*args.paths, "-q", "-p", "no:cacheprovider", "--seed-sweep", str(args.seeds),
                   "-m", "stochastic and not slow", "--no-header", "-rN", "--tb=no"]
    if args.k:
        pytest_args += ["-k", args.k]
    t0 = time.perf_counter()
    code = pytest.main(pytest_args, plugins=[collector])
    elapsed = time.perf_counter() - t0
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        print(f"pytest exited with {code!r}", file=sys.stderr)
        return int(code)

    width = max([len(k) for k in collector.runs] + [4])
    print(f"\nseed sweep: {args.seeds} fresh seeds, {elapsed:.0f} s")
    print(f"{'test':<{width}}  failures/runs  expected (α·N)")
    total_fail = total_expected = 0.0
    for name in sorted(collector.runs):
        runs, fails = collector.runs[name], collector.failures[name]
        expected = collector.alpha.get(name, ALPHA) * runs
        total_fail += fails
        total_expected += expected
        print(f"{name:<{width}}  {fails:>5}/{runs:<6}  {expected:.1e}")
    print(f"{'total':<{width}}  {int(total_fail):>5}        {total_expected:.1e}")
    for name, msg in collector.messages.items():
        print(f"  first failure of {name}: {msg}")
    return 0 if total_fail == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
