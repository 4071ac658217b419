"""The resampling parts of ebmref/verdict.py against scipy.stats: the Monte Carlo permutation
p-values (means and medians, paired and independent: scipy.stats.permutation_test with the
statistic written out here and the documented seed), the bootstrap intervals
(scipy.stats.bootstrap, BCa, and the percentile fallback when BCa degenerates), the exact
median permutation test (scipy's full enumeration), and the boundary cases: arms of 1 or 2
values, all-zero arms (tie tolerance 0) and an interval that overflows."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from ebmref.verdict import compare


def _stat(f, paired):
    """The documented effect: f(a) − f(b), or f of the paired differences."""
    if paired:
        return lambda x, y, axis: f(x - y, axis=axis)
    return lambda x, y, axis: f(x, axis=axis) - f(y, axis=axis)


def _data(n_a, n_b, shift, seed):
    """Skewed per-seed values (exponential), so that means and medians disagree."""
    g = np.random.default_rng(seed)
    return g.standard_exponential(n_a) ** 2 + shift, g.standard_exponential(n_b) ** 2


# Monte Carlo designs: test="permutation" with > 32 pooled values (means), or more than 200 000
# relabellings (medians: C(21, 10) = 352 716; 2¹⁸ = 262 144 sign patterns).
MC_CASES = [
    ("mean", False, 17, 16, "relabellings"),
    ("mean", True, 33, 33, "sign patterns"),
    ("median", False, 11, 10, "relabellings"),
    ("median", True, 18, 18, "sign patterns"),
]


@pytest.mark.parametrize("statistic, paired, n_a, n_b, what", MC_CASES)
def test_monte_carlo_p_values_are_scipys_seeded_permutation_test(statistic, paired, n_a, n_b,
                                                                 what):
    """p_greater, p_less = scipy.stats.permutation_test of the documented statistic (sign flips
    of the pairs when paired, relabellings otherwise) with R = n_perm draws from
    default_rng(seed), so K = R + 1 and p_min = 2/K; the same seed gives the same p-values."""
    a, b = _data(n_a, n_b, 0.3, seed=n_a)
    f = np.mean if statistic == "mean" else np.median
    kw = {"direction": "greater", "paired": paired, "statistic": statistic,
          "test": "permutation", "n_perm": 199, "n_boot": 100, "seed": 5}
    c = compare(a, b, **kw)
    ref = [stats.permutation_test(
        (a, b), _stat(f, paired), vectorized=True, n_resamples=199, alternative=alt,
        permutation_type="samples" if paired else "independent",
        rng=np.random.default_rng(5)).pvalue for alt in ("greater", "less")]
    assert (c.p_predicted, c.p_opposite) == pytest.approx(ref, rel=1e-12)
    assert c.test == f"Monte Carlo permutation (199 random {what})"
    assert c.n_relabellings == 200 and c.p_min == pytest.approx(0.01)
    again = compare(a, b, **kw)
    assert (again.p_predicted, again.p_opposite) == (c.p_predicted, c.p_opposite)


def test_monte_carlo_mean_and_median_differ_where_the_data_say_so():
    """One outlying seed: the median difference is clearly positive, the mean difference is at
    the mercy of where the outlier lands. Median p_greater ≤ 0.02, mean p_greater > 0.3.
    False-failure rates (for a seed other than the fixed one): a relabelling that moves the
    outlier to arm b (probability 16/33) has a larger mean gap than the observed one, so
    k ~ Bin(199, ≥ 16/33) and P(k + 1 ≤ 60) < 5e-8; a relabelling reaches the observed median
    gap with probability q ≈ 6e-5 (2e6 random relabellings), and P(k ≥ 3) < 2e-6 at q = 1e-4."""
    a = np.r_[np.full(16, 2.0) + np.linspace(0, 0.1, 16), -1000.0]
    b = np.linspace(0.0, 0.1, 16)
    mean = compare(a, b, direction="greater", test="permutation", n_perm=199, seed=1)
    med = compare(a, b, direction="greater", test="permutation", statistic="median",
                  n_perm=199, n_boot=100, seed=1)
    assert mean.test.startswith("Monte Carlo") and med.test.startswith("Monte Carlo")
    assert med.p_predicted <= 0.02 and mean.p_predicted > 0.3


BOOT_CASES = [("mean", False), ("mean", True), ("median", False), ("median", True)]


@pytest.mark.parametrize("statistic, paired", BOOT_CASES)
def test_bootstrap_interval_is_scipys_seeded_bca(statistic, paired):
    """ci="bootstrap": the BCa interval of scipy.stats.bootstrap of the documented statistic
    (pairs resampled jointly when paired) at 95 %, with n_boot resamples from
    default_rng(seed)."""
    a, b = _data(8, 8, 0.5, seed=11)
    f = np.mean if statistic == "mean" else np.median
    c = compare(a, b, direction="greater", paired=paired, statistic=statistic, ci="bootstrap",
                n_boot=199, seed=9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = stats.bootstrap((a, b), _stat(f, paired), n_resamples=199, paired=paired,
                              vectorized=True, confidence_level=0.95, method="BCa",
                              rng=np.random.default_rng(9)).confidence_interval
    assert c.ci == pytest.approx((ref.low, ref.high), rel=1e-12)
    assert c.ci_method == "BCa bootstrap (199 resamples)"


def test_bootstrap_falls_back_to_the_percentile_interval():
    """When BCa degenerates (constant arms: no jackknife spread; a median whose bootstrap law
    is mostly one value) the percentile interval is reported."""
    zero = compare([0.0] * 5, [0.0] * 5, direction="greater", ci="bootstrap", n_boot=199)
    assert zero.ci == (0.0, 0.0) and zero.ci_method == "percentile bootstrap (199 resamples)"
    a, b = np.array([1.0, 1.0, 1.0, 1.0, 5.0]), np.zeros(5)
    c = compare(a, b, direction="greater", statistic="median", n_boot=199, seed=2)
    ref = stats.bootstrap((a, b), _stat(np.median, False), n_resamples=199, vectorized=True,
                          method="percentile", rng=np.random.default_rng(2)).confidence_interval
    assert c.ci == pytest.approx((ref.low, ref.high)) and c.ci_method.startswith("percentile")


def test_bootstrap_needs_two_values_per_arm_or_two_pairs():
    """Arms of 2 values (or 2 pairs) get an interval; an arm of 1 value (or 1 pair) gets none,
    with the reason in ``missing``."""
    for a, b, paired in (([1.0, 2.0], [3.0, 5.0], False), ([1.0, 2.0], [3.0, 5.0], True)):
        c = compare(a, b, direction="less", paired=paired, ci="bootstrap", n_boot=199)
        assert c.ci is not None and c.ci[0] <= c.effect <= c.ci[1], paired
        assert "ci" not in c.missing
    for a, b, paired in (([1.0], [3.0, 4.0, 5.0], False), ([1.0, 2.0, 3.0], [3.0], False),
                         ([1.0], [3.0], True)):
        c = compare(a, b, direction="less", paired=paired, statistic="median", n_boot=199)
        assert c.ci is None and c.ci_method == ""
        assert c.missing["ci"] == "bootstrap needs ≥ 2 values per arm"


def test_an_interval_with_an_infinite_end_is_not_reported():
    """Finite inputs whose bootstrap medians overflow (1e308 − (−1e308) = inf): BCa is NaN and
    the percentile interval has an infinite end, so no interval is reported, with the reason."""
    a = np.array([1e308, 0.0, 0.0])
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        c = compare(a, -a, direction="greater", statistic="median", n_boot=199)
    assert c.effect == 0.0 and c.ci is None
    assert c.missing["ci"] == "bootstrap interval undefined"


@pytest.mark.parametrize("paired", [False, True])
def test_exact_median_test_matches_scipys_enumeration(paired):
    """The exact permutation p of the median effect equals scipy's full enumeration."""
    a, b = _data(6, 6, 0.2, seed=3)
    ref = [stats.permutation_test(
        (a, b), _stat(np.median, paired), vectorized=True, n_resamples=np.inf,
        alternative=alt, permutation_type="samples" if paired else "independent").pvalue
        for alt in ("greater", "less")]
    c = compare(a, b, direction="less", paired=paired, statistic="median", n_boot=100)
    assert (c.p_opposite, c.p_predicted) == pytest.approx(ref, rel=1e-12)
    assert c.test.startswith("exact permutation")


@pytest.mark.parametrize("paired", [False, True])
def test_all_zero_arms_have_p_one_for_medians(paired):
    """All values 0 (the tie tolerance is 0): every relabelling ties the observed effect and
    counts as at least as extreme in both directions, so p = 1 and nothing is claimed."""
    c = compare([0.0] * 4, [0.0] * 4, direction="greater", paired=paired, statistic="median",
                n_boot=100)
    assert c.p_predicted == c.p_opposite == c.p_two_sided == 1.0
    assert c.verdict == "not reproduced"
