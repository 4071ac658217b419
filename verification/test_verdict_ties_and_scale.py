"""The exact permutation tests of ebmref/verdict.py count ties "as at least as extreme" at
every scale of the data: per-seed values that are integers times a scale (1e-9, 0.1, 1e8/3,
none of them exact in binary floating point except the first's products) tie in exact
arithmetic but not always in floating point; the p-values must equal a count over all
relabellings (sign flips when paired) done in integer arithmetic, for means and medians.
The tolerance is relative (1e-12 of the data's scale), so a test at 1e-9 must neither merge
distinct sums nor, at 1e8, split tied ones."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from ebmref.verdict import compare

# Small integers with many tied subset sums (and tied medians).
INT_A = np.array([3, 1, 4, 1, 5, 2])
INT_B = np.array([2, 6, 1, 3, 2, 5, 4])
SCALES = (1e-9, 0.1, 1e8 / 3)


def _independent_counts(stat):
    """(#{f(g) ≥ f_obs}, #{f(g) ≤ f_obs}, K) over all C(13, 6) relabellings, in integers
    (medians doubled so that they stay integers)."""
    x = np.concatenate([INT_A, INT_B])
    idx = range(x.size)

    def f(sub):
        rest = np.delete(x, sub)
        if stat == "mean":  # Δ increases with the sum of the "a" arm
            return int(x[list(sub)].sum())
        return int(2 * np.median(x[list(sub)])) - int(2 * np.median(rest))
    obs = f(tuple(range(INT_A.size)))
    vals = [f(s) for s in itertools.combinations(idx, INT_A.size)]
    return sum(v >= obs for v in vals), sum(v <= obs for v in vals), len(vals)


def _independent_sign_flips(stat):
    """The same over all 2ⁿ sign patterns of the paired differences INT_A − INT_B[:6]."""
    d = INT_A - INT_B[:INT_A.size]
    fn = (lambda v: int(v.sum())) if stat == "mean" else (lambda v: int(2 * np.median(v)))
    obs = fn(d)
    vals = [fn(d * np.array(s)) for s in itertools.product((1, -1), repeat=d.size)]
    return sum(v >= obs for v in vals), sum(v <= obs for v in vals), len(vals)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("stat", ["mean", "median"])
@pytest.mark.parametrize("paired", [False, True])
def test_exact_p_values_count_ties_at_every_scale(scale, stat, paired):
    """p_greater = #{Δ(g) ≥ Δ_obs}/K and p_less = #{Δ(g) ≤ Δ_obs}/K, ties included, equal
    to the integer count, whatever the scale of the values; K and p_min = 2/K reported."""
    a = INT_A * scale
    b = (INT_B[:INT_A.size] if paired else INT_B) * scale
    ge, le, k = (_independent_sign_flips if paired else _independent_counts)(stat)
    assert ge + le > k  # the design has ties: they count on both sides
    c = compare(a, b, direction="greater", paired=paired, statistic=stat, n_boot=100)
    assert c.n_relabellings == k
    assert c.p_predicted == pytest.approx(ge / k, rel=1e-12)
    assert c.p_opposite == pytest.approx(le / k, rel=1e-12)
    assert c.p_two_sided == pytest.approx(min(1.0, 2 * min(ge, le) / k), rel=1e-12)
    assert c.p_min == pytest.approx(2 / k, rel=1e-12)


@pytest.mark.parametrize("scale", SCALES)
def test_distinct_sums_one_ulp_apart_in_units_are_not_merged(scale):
    """Two arms whose subset sums differ by one unit of the scale: the observed sum is the
    largest, so p_greater is exactly 1/K (only itself), at every scale."""
    a, b = np.array([10, 11, 12]) * scale, np.array([1, 2, 3]) * scale
    c = compare(a, b, direction="greater")
    assert c.n_relabellings == math.comb(6, 3)
    assert c.p_predicted == pytest.approx(1 / 20, rel=1e-12)
    assert c.p_opposite == 1.0
