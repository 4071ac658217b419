"""The tolerance t-test of check_kl_loss/check_entropy (losses module docstring) against
scipy's one-sample t-test: outside the tolerance band p is the two-sided Student p-value of
the mean against the nearer edge target ± tol (s with ddof 1, B − 1 degrees of freedom);
inside it p = 1; equal estimates are decided exactly at the band's edge; one estimate (no
variance) gives p = 1, never a value above 1. detectable_excess finds its root also when it
lies below sd (many batches), as check_entropy's B = 100 design needs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ebmref.conformance.losses import ENTROPY_REPS, detectable_excess, tolerance_pvalue


@pytest.mark.parametrize("shift, n", [(0.7, 5), (-0.9, 8), (0.45, 3), (2.0, 40)])
def test_pvalue_outside_the_band_is_scipys_t_test_at_the_edge(shift, n):
    """|mean − target| > tol: p = ttest_1samp(est, target ± tol).pvalue (two-sided)."""
    target, tol = 0.2, 0.25
    est = target + shift + np.random.default_rng(n).normal(scale=0.3, size=n)
    edge = target + math.copysign(tol, est.mean() - target)
    expected = stats.ttest_1samp(est, edge).pvalue
    assert 0.0 < expected < 0.9
    assert tolerance_pvalue(est, target, tol) == pytest.approx(expected, rel=1e-10)


def test_pvalue_inside_the_band_is_one():
    """A mean within tol of the target is no evidence at all: p = 1."""
    est = np.array([0.1, 0.3, 0.25, 0.15])
    assert tolerance_pvalue(est, 0.2, 0.05) == 1.0
    assert tolerance_pvalue(est, 0.2, 0.0) == 1.0  # mean exactly on the target


def test_equal_estimates_are_decided_exactly_at_the_edge():
    """s = 0: p = 1 when |mean − target| ≤ tol (the edge included, exactly representable
    numbers here), else 0."""
    est = np.full(5, 0.75)
    assert tolerance_pvalue(est, 0.5, 0.25) == 1.0  # gap exactly 0
    assert tolerance_pvalue(est, 0.5, 0.5) == 1.0
    assert tolerance_pvalue(est, 0.5, 0.125) == 0.0
    assert tolerance_pvalue(np.full(3, -1.0), 1.0, 1.5) == 0.0


def test_non_finite_estimates_give_nan_and_one_estimate_gives_one():
    """A NaN or inf estimate makes p NaN (the row fails); a single estimate has no variance
    estimate and gives p = 1, a valid p-value."""
    assert math.isnan(tolerance_pvalue(np.array([0.1, np.nan, 0.2]), 0.0, 0.1))
    assert math.isnan(tolerance_pvalue(np.array([0.1, np.inf]), 0.0, 0.1))
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        assert tolerance_pvalue(np.array([3.0]), 0.0, 0.1) == 1.0


@pytest.mark.parametrize("sd, reps, alpha_per", [(1.0, ENTROPY_REPS, 1e-6 / 4), (0.2, 400, 1e-3)])
def test_detectable_excess_below_sd_with_many_batches(sd, reps, alpha_per):
    """With B = 100 or more batches the detectable excess is below sd; it is the root of the
    noncentral-t power equation P = 1 − 1e-3 (scipy's brentq on a bracket from 0)."""
    crit = stats.t.isf(alpha_per / 2, reps - 1)
    power = lambda d: stats.nct.sf(crit, reps - 1, d * math.sqrt(reps) / sd)
    delta = detectable_excess(sd, reps, alpha_per)
    assert delta < sd
    assert power(delta) == pytest.approx(0.999, abs=1e-9)
