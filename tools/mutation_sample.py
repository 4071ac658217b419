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
    Var Û = Σ_m |U_m|² (1 − |S_m|/|U_m|) s_m² / |S_m|,   s_m² = p_m (1 − p_m) |S_m| / (|S_m| − 1)

with p_m the undetected fraction of S_m: the stratified estimator with the finite-population
correction; the 95 % interval is score ± 1.96 √Var Û / (mutants − excluded) (normal
approximation; the excluded count in the strata is estimated the same way and treated as
known).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

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
    """The stratified estimate of the score (see the module docstring)."""
    census = {m: k for m, k in kinds.items() if m not in sample}
    undetected = sum(k not in DETECTED + EXCLUDED + (NOT_RUN,) for k in census.values())
    excluded = sum(k in EXCLUDED for k in census.values())
    variance, sampled = 0.0, 0
    by_module: dict[str, list[str]] = defaultdict(list)
    for m in sample:
        if kinds.get(m, NOT_RUN) != NOT_RUN:
            by_module[module_of(m)].append(kinds[m])
    unchecked: dict[str, int] = defaultdict(int)
    for m, k in census.items():
        unchecked[module_of(m)] += k == NOT_RUN
    for module, found in by_module.items():
        n = len(found)
        big_n = n + unchecked[module]
        u = sum(k not in DETECTED + EXCLUDED for k in found)
        undetected += big_n / n * u
        excluded += big_n / n * sum(k in EXCLUDED for k in found)
        p = u / n
        s2 = p * (1 - p) * n / (n - 1) if n > 1 else 0.0
        variance += big_n**2 * (1 - n / big_n) * s2 / n
        sampled += n
    denominator = len(kinds) - excluded
    half = 1.96 * math.sqrt(variance) / denominator
    score = 1 - undetected / denominator
    outside = sum(n for module, n in unchecked.items() if module not in by_module)
    return Estimate(100 * score, 100 * (score - half), 100 * (score + half), undetected,
                    sampled, sampled + sum(unchecked[m] for m in by_module), outside)
