"""A random sample of the mutants mutmut has not checked yet, and the mutation score estimated
from it (tools/mutation.sh with SAMPLE=f; tools/mutation_score.py prints the estimate).

Running every mutant of ebmref/ takes hours on two cores. Sampling mutants at random is the
usual way out (Wong & Mathur 1995; Zhang et al., ICSE 2013): draw a fraction f of the
unchecked mutants of each module, run those, and estimate the score of the whole population
with a confidence interval.

Strata: each module's unchecked mutants at the time of the draw form one stratum U_m, of which
the sample S_m ⊂ U_m (⌈f·|U_m|⌉ ids, drawn uniformly without replacement with a fixed seed)
is run; everything else that mutmut checked is a census (U_m is counted when the score is
computed: S_m plus the module's mutants still unchecked, so mutants checked later move from
the stratum to the census). With u the undetected mutants
(survived or without tests; equivalent and help-text mutants are left out as in the census):

    Û = u_census + Σ_m |U_m| / |S_m| · u(S_m)
    score = 1 − Û / (mutants − excluded)

(the stratified estimator; the excluded count in the strata is estimated the same way and
treated as known). The draw is proportional, so the sample is self-weighting up to rounding:
the 95 % interval of Û takes the Clopper–Pearson interval [p₋, p₊] of the pooled undetected
fraction p = u/n (n = Σ|S_m|, N = Σ|U_m|), which stays valid when no sampled mutant survives
(a normal approximation would collapse to a point there), with the finite-population
correction: Û − N (p − p₋) √(1 − n/N) … Û + N (p₊ − p) √(1 − n/N).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from scipy import stats

DETECTED = ("killed", "timeout")
EXCLUDED = ("equivalent", "help text")
NOT_RUN = "not checked"


def draw(kinds: dict[str, str], fraction: float, seed: int, module_of) -> list[str]:
    """⌈fraction · n⌉ ids drawn at random from each module's n unchecked mutants."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction: must lie in (0, 1], got {fraction!r}")
    pool: dict[str, list[str]] = defaultdict(list)
    for mutant, kind in sorted(kinds.items()):
        if kind == NOT_RUN:
            pool[module_of(mutant)].append(mutant)
    rng = random.Random(seed)
    return sorted(m for ids in pool.values()
                  for m in rng.sample(ids, math.ceil(fraction * len(ids))))


def read_sample(path: Path) -> set[str]:
    """The ids of a sample (one per line), empty when there is none."""
    return set(path.read_text().split()) if path.exists() else set()


@dataclass(frozen=True)
class Estimate:
    score: float  # %
    low: float
    high: float
    undetected: float  # Û
    sampled: int
    population: int  # Σ |U_m|
    outside: int  # unchecked mutants of modules without a sample (not estimated)


def estimate(kinds: dict[str, str], sample: set[str], module_of) -> Estimate:
    """The stratified estimate of the score and its interval (see the module docstring)."""
    census = {m: k for m, k in kinds.items() if m not in sample}
    undetected = sum(k not in DETECTED + EXCLUDED + (NOT_RUN,) for k in census.values())
    excluded = sum(k in EXCLUDED for k in census.values())
    by_module: dict[str, list[str]] = defaultdict(list)
    for m in sample:
        if kinds.get(m, NOT_RUN) != NOT_RUN:
            by_module[module_of(m)].append(kinds[m])
    unchecked: dict[str, int] = defaultdict(int)
    for m, k in census.items():
        unchecked[module_of(m)] += k == NOT_RUN
    u_all = n_all = big_n_all = 0
    for module, found in by_module.items():
        n, u = len(found), sum(k not in DETECTED + EXCLUDED for k in found)
        big_n = n + unchecked[module]
        undetected += big_n / n * u
        excluded += big_n / n * sum(k in EXCLUDED for k in found)
        u_all, n_all, big_n_all = u_all + u, n_all + n, big_n_all + big_n
    low, high = undetected, undetected
    if n_all:
        p = u_all / n_all
        p_low = stats.beta.ppf(0.025, u_all, n_all - u_all + 1) if u_all else 0.0
        p_high = stats.beta.ppf(0.975, u_all + 1, n_all - u_all) if u_all < n_all else 1.0
        fpc = math.sqrt(1 - n_all / big_n_all)
        low -= big_n_all * (p - p_low) * fpc
        high += big_n_all * (p_high - p) * fpc
    denominator = len(kinds) - excluded
    outside = sum(n for module, n in unchecked.items() if module not in by_module)
    return Estimate(100 * (1 - undetected / denominator), 100 * (1 - high / denominator),
                    100 * (1 - low / denominator), undetected, n_all, big_n_all, outside)
