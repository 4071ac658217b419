"""tools/mutation_sample.py: the mutation score estimated from a random sample of mutants.

The README's score of ebmref/ rests on it, so the estimator is checked like any other
statistic here: exact when the sample is the whole stratum, and its 95 % interval covers the
true score of a synthetic population at its nominal rate.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import mutation_sample


def module_of(mutant: str) -> str:
    return mutant.split(":")[0]


def _population(seed: int) -> dict[str, str]:
    """Three modules of 400–1,200 mutants with different undetected rates (2–15 %)."""
    rng = random.Random(seed)
    kinds = {}
    for module, n, bad, equivalent in (("a", 400, 0.02, 0.01), ("b", 1200, 0.15, 0.0),
                                       ("c", 800, 0.06, 0.05)):
        for i in range(n):
            u = rng.random()
            kinds[f"{module}:{i}"] = ("survived" if u < bad else "equivalent"
                                      if u < bad + equivalent else "killed")
    return kinds


def _true_score(kinds: dict[str, str]) -> float:
    excluded = sum(k == "equivalent" for k in kinds.values())
    return 100 * sum(k == "killed" for k in kinds.values()) / (len(kinds) - excluded)


def _run_sample(truth: dict[str, str], fraction: float, seed: int):
    """Check the first half of each module fully, then sample the rest as tools/ does."""
    seen = {m: (k if int(m.split(":")[1]) % 2 == 0 else "not checked")
            for m, k in truth.items()}
    ids = mutation_sample.draw(seen, fraction, seed, module_of)
    for m in ids:
        seen[m] = truth[m]
    return mutation_sample.estimate(seen, set(ids), module_of)


def test_a_full_sample_is_the_census():
    truth = _population(0)
    est = _run_sample(truth, 1.0, seed=1)
    assert est.score == pytest.approx(_true_score(truth), abs=1e-9)
    assert est.low == est.high == est.score and est.outside == 0
    assert est.sampled == est.population == len(truth) // 2


def test_draw_takes_the_stated_fraction_of_every_module():
    seen = dict.fromkeys([f"a:{i}" for i in range(10)] + [f"b:{i}" for i in range(3)],
                         "not checked")
    ids = mutation_sample.draw(seen, 0.25, 0, module_of)
    assert [module_of(m) for m in ids].count("a") == 3  # ⌈2.5⌉
    assert [module_of(m) for m in ids].count("b") == 1
    with pytest.raises(ValueError, match=r"^fraction: must lie in \(0, 1\], got 0$"):
        mutation_sample.draw(seen, 0, 0, module_of)


def test_interval_covers_the_true_score_at_its_nominal_rate():
    """200 populations, a 20 % sample of each: a correct 95 % interval misses in Binomial(200,
    0.05) cases at most (Clopper–Pearson is conservative); ≥ 21 misses has probability 1.7e-3
    under exact coverage (the false-failure rate). An interval 10 times too narrow, as a
    normal approximation is when few sampled mutants survive, misses in most cases (the
    broken twin below)."""
    misses = []
    for broken in (False, True):
        missed = 0
        for seed in range(200):
            truth = _population(seed)
            est = _run_sample(truth, 0.2, seed)
            half = (est.high - est.score) / (10 if broken else 1)
            missed += abs(est.score - _true_score(truth)) > half
        misses.append(missed)
    assert stats.binom.sf(20, 200, 0.05) < 2e-3
    assert misses[0] <= 20, misses
    assert misses[1] > 20, misses


def test_no_sampled_survivor_still_leaves_an_interval():
    """Zero undetected among n sampled mutants is not certainty: the upper bound on the
    stratum's undetected count is the Clopper–Pearson 1 − 0.025^(1/n) (≈ 3.7/n), with the
    finite-population correction; a normal approximation would give a point."""
    kinds = {f"a:{i}": "killed" for i in range(200)}
    kinds |= {f"a:{i}": "not checked" for i in range(200, 1000)}
    ids = mutation_sample.draw(kinds, 0.2, 0, module_of)
    for m in ids:
        kinds[m] = "killed"
    est = mutation_sample.estimate(kinds, set(ids), module_of)
    p_high = 1 - 0.025 ** (1 / 160)
    assert est.score == 100.0 and est.high == 100.0
    assert est.low == pytest.approx(100 * (1 - 800 * p_high * (1 - 160 / 800) ** 0.5 / 1000))
