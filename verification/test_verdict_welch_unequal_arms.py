"""ebmref/verdict.py's t path with arms of unequal size and spread, both directions: the
one-sided p-values, the Welch–Satterthwaite df in the test's name and the interval against
scipy.stats.ttest_ind(equal_var=False) / ttest_rel, the pooled sd and its df by hand, and the
MDE at level α/m (no attainable-level rounding for a t test) with its basis word for word."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ebmref.verdict import compare, family

# 12 values with a small spread against 4 with a large one (unequal n and variance).
A12 = 1.0 + 0.05 * np.array([3, -1, 4, -1, 5, -9, 2, 6, -5, 3, 5, -8], dtype=float)
B4 = np.array([0.2, 1.9, 0.4, 1.6])


def _welch_df(a, b):
    """Welch–Satterthwaite degrees of freedom, written out."""
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    return (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))


@pytest.mark.parametrize("a, b", [(A12, B4), (B4, A12)])
@pytest.mark.parametrize("direction", ["greater", "less"])
def test_welch_p_values_df_and_interval_against_scipy(a, b, direction):
    """p_predicted / p_opposite are scipy's one-sided Welch p in / against the direction; the
    test and interval are named with the Welch df; the interval is scipy's 95 % one."""
    c = compare(a, b, direction=direction)
    other = "less" if direction == "greater" else "greater"
    pred = stats.ttest_ind(a, b, equal_var=False, alternative=direction)
    opp = stats.ttest_ind(a, b, equal_var=False, alternative=other)
    assert c.p_predicted == pytest.approx(pred.pvalue, rel=1e-10)
    assert c.p_opposite == pytest.approx(opp.pvalue, rel=1e-10)
    assert c.p_two_sided == pytest.approx(2 * min(pred.pvalue, opp.pvalue), rel=1e-10)
    df = _welch_df(a, b)
    assert pred.df == pytest.approx(df, rel=1e-12)
    assert c.test == f"Welch t (df {df:.3g})" and c.ci_method == c.test
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert c.ci == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert c.effect == pytest.approx(a.mean() - b.mean(), rel=1e-12)
    assert (c.n_a, c.n_b, c.n_relabellings, c.p_min) == (len(a), len(b), None, 0.0)


def test_pooled_sd_and_mde_of_a_welch_comparison():
    """sd = √(Σ(a − ā)² + Σ(b − b̄)²)/(n_a + n_b − 2)), df = n_a + n_b − 2; the MDE has 80 %
    power under the noncentral t at the two-sided level α/m itself, and its basis says so."""
    c = compare(A12, B4, direction="greater", alpha=0.1)
    ss = ((A12 - A12.mean()) ** 2).sum() + ((B4 - B4.mean()) ** 2).sum()
    assert c.sd == pytest.approx(math.sqrt(ss / 14), rel=1e-12) and c.df == 14.0
    se = c.sd * math.sqrt(1 / 12 + 1 / 4)
    power = stats.nct.sf(stats.t.isf(0.1 / 2, 14), 14, c.mde / se)
    assert power == pytest.approx(0.8, abs=1e-8)
    assert c.mde_basis == (f"80 % power, noncentral t, pooled sd {c.sd:.3g}, df 14, two-sided "
                           f"level 0.1 (α/m = 0.1/1)")
    fam = family({"x": c, "y": compare(B4, A12, direction="greater", alpha=0.1)})["x"]
    power = stats.nct.sf(stats.t.isf(0.05 / 2, 14), 14, fam.mde / se)
    assert power == pytest.approx(0.8, abs=1e-8) and fam.mde > c.mde
    assert fam.mde_basis.endswith("two-sided level 0.05 (α/m = 0.1/2)")


@pytest.mark.parametrize("direction", ["greater", "less"])
def test_paired_t_against_scipy(direction):
    """Paired t on 12 pairs: scipy's ttest_rel p-values, df n − 1 in the name, its interval,
    the sd of the differences and the MDE basis naming it."""
    a, b = A12, A12[::-1] * 1.1 + 0.01
    c = compare(a, b, direction=direction, paired=True)
    other = "less" if direction == "greater" else "greater"
    assert c.p_predicted == pytest.approx(
        stats.ttest_rel(a, b, alternative=direction).pvalue, rel=1e-10)
    assert c.p_opposite == pytest.approx(stats.ttest_rel(a, b, alternative=other).pvalue,
                                         rel=1e-10)
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert c.ci == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert c.test == c.ci_method == "paired t (df 11)"
    assert c.sd == pytest.approx(np.std(a - b, ddof=1), rel=1e-12) and c.df == 11.0
    assert c.mde_basis.startswith(f"80 % power, noncentral t, sd of differences {c.sd:.3g}, "
                                  f"df 11, two-sided level 0.05 (α/m = 0.05/1)")
    se = c.sd / math.sqrt(12)
    power = stats.nct.sf(stats.t.isf(0.05 / 2, 11), 11, c.mde / se)
    assert power == pytest.approx(0.8, abs=1e-8)
