"""Suite-wide pytest configuration: markers, the seeded ``rng`` fixture and the seed sweep.

* ``@pytest.mark.stochastic`` marks a calibrated stochastic test (rules in the docstring of
  verification/stats.py); an optional ``alpha=`` keyword states its total false-failure rate
  (default ``verification.stats.ALPHA``).
* ``rng``: a ``torch.Generator`` seeded from a stable hash of the test's node id, so every run
  of the suite sees the same numbers. With ``EBMREF_SEED=s`` in the environment the seed is
  derived from (test, s) instead: fresh, still reproducible seeds (this is how one seed of a
  sweep is rerun).
* ``--seed-sweep N`` (or ``EBMREF_SEED_SWEEP=N``): collect only the stochastic tests and run
  each one N times in the same process, with the sweep seeds B, B + 1, …, B + N − 1
  (parametrised ``[seed<k>]``). The base B is ``--seed-base`` (or ``EBMREF_SEED_BASE``) when
  given, else drawn from the clock (microseconds, so two sweeps never share seeds); it is
  printed in the report header, and a rerun with the same base reproduces the sweep.
  ``python -m verification.seed_sweep`` drives this and tabulates the failures per test.
* torch runs single-threaded in the suite (``EBMREF_TEST_THREADS`` overrides): the tests are
  many small vectorised ops, and on a shared 2-core machine two OpenMP threads spinning
  against other processes made them ~15× slower than one thread.
"""

from __future__ import annotations

import os
import re
import threading
import time

import pytest
import torch
import tqdm

from verification.stats import seed_for

# tqdm's default write lock is a multiprocessing semaphore, shared by every process forked from
# this one: a process killed while holding it (tools/mutation.sh forks one per mutant and kills
# those past their time limit) leaves every later progress bar waiting for ever. A test process
# only writes its own bars, so a thread lock is enough.
tqdm.tqdm.set_lock(threading.RLock())

SEED_ENV = "EBMREF_SEED"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--seed-sweep", type=int, metavar="N",
                     default=int(os.environ.get("EBMREF_SEED_SWEEP", "0") or 0),
                     help="run only the stochastic tests, each with N fresh seeds "
                          "(default: $EBMREF_SEED_SWEEP or 0 = off)")
    env_base = os.environ.get("EBMREF_SEED_BASE", "")
    parser.addoption("--seed-base", type=int, metavar="B",
                     default=int(env_base) if env_base else None,
                     help="first sweep seed (seeds B..B+N-1; default: $EBMREF_SEED_BASE, else "
                          "drawn from the clock and printed)")


def clock_seed_base() -> int:
    """A fresh sweep base from the clock: microseconds modulo 10¹², so sweeps started a second
    or more apart use disjoint seed ranges for any N < 10⁶."""
    return time.time_ns() // 1000 % 10**12


def sweep_seeds(config: pytest.Config) -> range:
    """The sweep seeds B..B+N−1 of this session (empty when the sweep is off)."""
    n = config.getoption("--seed-sweep")
    if n <= 0:
        return range(0)
    if config.getoption("--seed-base") is None:
        config.option.seed_base = clock_seed_base()
    base = config.getoption("--seed-base")
    return range(base, base + n)


def pytest_configure(config: pytest.Config) -> None:
    torch.set_num_threads(int(os.environ.get("EBMREF_TEST_THREADS", "1")))
    config.addinivalue_line(
        "markers", "stochastic(alpha=1e-6): calibrated stochastic test with false-failure "
                   "rate alpha; rerun over fresh seeds with --seed-sweep N")
    config.addinivalue_line("markers", "slow: long-running tests, deselected by default")


def pytest_report_header(config: pytest.Config) -> str | None:
    seeds = sweep_seeds(config)
    if not seeds:
        return None
    return f"seed sweep: base {seeds.start}, seeds {seeds.start}..{seeds.stop - 1} ({len(seeds)})"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    seeds = sweep_seeds(metafunc.config)
    if seeds and "ebmref_sweep_seed" in metafunc.fixturenames \
            and metafunc.definition.get_closest_marker("stochastic") is not None:
        metafunc.parametrize("ebmref_sweep_seed", seeds, indirect=True,
                             ids=[f"seed{k}" for k in seeds])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--seed-sweep") <= 0:
        return
    keep = [it for it in items if it.get_closest_marker("stochastic") is not None]
    drop = [it for it in items if it.get_closest_marker("stochastic") is None]
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep


@pytest.fixture
def ebmref_sweep_seed(request: pytest.FixtureRequest) -> int | None:
    """The sweep seed of this run (parametrised by --seed-sweep), else ``EBMREF_SEED``."""
    if hasattr(request, "param"):
        return int(request.param)
    env = os.environ.get(SEED_ENV)
    return int(env) if env else None


def base_nodeid(nodeid: str) -> str:
    """The node id without the sweep's ``seed<k>`` parameter (other parameters kept)."""
    name = re.sub(r"(?<=[\[-])seed\d+(?=[\]-])", "", nodeid)
    return name.replace("[-", "[").replace("-]", "]").replace("--", "-").replace("[]", "")


@pytest.fixture
def rng(request: pytest.FixtureRequest, ebmref_sweep_seed: int | None) -> torch.Generator:
    """A torch.Generator seeded per test (stable across runs); fresh seeds in sweep mode."""
    name = base_nodeid(request.node.nodeid)
    key = name if ebmref_sweep_seed is None else f"{name}#sweep{ebmref_sweep_seed}"
    return torch.Generator().manual_seed(seed_for(key))
