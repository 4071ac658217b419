"""How ebmref/verdict.py's ``compare`` reads a design, checked field by field: which test the
rule picks at the boundaries of the module docstring (≤ 10 values per arm, ≤ 32 pooled values,
≤ 200 000 relabellings), the record's numbers against independent computations (scipy's exact
permutation test and Welch interval, the pooled sd by hand, the MDE against the noncentral t's
power), the reasons in ``missing``, the defaults, the zero-variance t test, ``decide`` at its
boundaries, and every argument error word for word."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from ebmref.verdict import compare, decide, family, minimum_detectable_effect

BASE = np.array([1.0, 1.1, 0.9, 1.2, 0.8, 1.05, 0.95, 1.15, 0.85, 1.0])
A6 = np.array([2.1, 1.4, 3.3, 2.8, 1.9, 2.6])
B9 = np.array([1.2, 2.0, 0.7, 1.8, 1.1, 2.4, 0.9, 1.5, 1.3])
NO_MARGIN = {"margin": "no equivalence margin stated", "p_equivalence": "no margin",
             "p_equivalence_adjusted": "no margin"}


def _ramp(n, shift=0.0):
    return np.linspace(0.0, 1.0, n) ** 2 + shift


def _power(delta, se, df, level):
    """Probability that the noncentral t exceeds the two-sided critical value."""
    return stats.nct.sf(stats.t.isf(level / 2, df), df, delta / se)


# --------------------------------------------------------------------------- choice of test


@pytest.mark.parametrize("n_a, n_b, paired, statistic, test, name", [
    (10, 10, False, "mean", "auto", f"exact permutation ({math.comb(20, 10)} relabellings)"),
    (11, 2, False, "mean", "auto", "Welch t"),
    (11, 1, False, "mean", "auto", "exact permutation (12 relabellings)"),
    (3, 3, False, "mean", "welch", "Welch t"),
    (10, 10, True, "mean", "auto", "exact permutation (1024 sign patterns)"),
    (11, 11, True, "mean", "auto", "paired t (df 10)"),
    (16, 16, False, "mean", "permutation", f"exact permutation ({math.comb(32, 16)} relabellings)"),
    (32, 32, True, "mean", "permutation", f"exact permutation ({2**32} sign patterns)"),
    (17, 17, True, "median", "auto", f"exact permutation ({2**17} sign patterns)"),
    (10, 10, False, "median", "auto", f"exact permutation ({math.comb(20, 10)} relabellings)"),
])
def test_the_test_follows_the_design(n_a, n_b, paired, statistic, test, name):
    """Exact when every arm has ≤ 10 values (or a t test is impossible), Welch / paired t
    otherwise; permutations are exact up to 32 pooled values (means) or 200 000 relabellings
    (medians). Exact tests report K and p_min = 2/K; t tests report neither."""
    a, b = _ramp(n_a, 0.5), _ramp(n_b)[::-1].copy()
    c = compare(a, b, direction="greater", paired=paired, statistic=statistic, test=test,
                n_boot=100)
    assert c.test.startswith(name)
    if name.startswith("exact"):
        k = int(name.split("(")[1].split()[0])
        assert c.n_relabellings == k and c.p_min == pytest.approx(min(1.0, 2 / k))
        assert "n_relabellings" not in c.missing
    else:
        assert c.n_relabellings is None and c.p_min == 0.0
        assert c.missing["n_relabellings"] == "t test"
        df = n_a - 1 if paired else stats.ttest_ind(a, b, equal_var=False).df
        assert c.test == f"{'paired' if paired else 'Welch'} t (df {df:.3g})"


def test_monte_carlo_defaults_and_seed_zero():
    """Past the exact limits: Monte Carlo with the default n_perm = 9999 (K = 10 000,
    p_min = 2/10 000), seed 0 by default (the same p as seed=0; scipy's permutation test with
    default_rng(0)), the default n_boot = 9999 for the median's bootstrap; label and units
    default to ""."""
    a, b = _ramp(11, 0.2), _ramp(10)
    c = compare(a, b, direction="greater", statistic="median")
    assert c.test == "Monte Carlo permutation (9999 random relabellings)"
    assert c.n_relabellings == 10_000 and c.p_min == pytest.approx(2e-4)
    assert c.ci_method == "BCa bootstrap (9999 resamples)"
    assert c.label == "" and c.units == "" and not c.paired
    assert c == compare(a, b, direction="greater", statistic="median", seed=0)

    def diff(x, y, axis):
        return np.median(x, axis=axis) - np.median(y, axis=axis)
    ref = stats.permutation_test((a, b), diff, vectorized=True, n_resamples=9999,
                                 alternative="greater", rng=np.random.default_rng(0)).pvalue
    assert c.p_predicted == pytest.approx(ref, rel=1e-12)
    mc = compare(_ramp(17, 0.1), _ramp(16), direction="greater", test="permutation")
    assert mc.test == "Monte Carlo permutation (9999 random relabellings)"
    mc32 = compare(_ramp(33, 0.1), _ramp(33), direction="greater", test="permutation",
                   paired=True, n_perm=100)
    assert mc32.test == "Monte Carlo permutation (100 random sign patterns)"
    assert mc32.n_relabellings == 101 and mc32.p_min == pytest.approx(2 / 101)
    # A Monte Carlo test is not exact: its MDE is at α/m itself, not at an attainable level
    # 2⌊α·K/2⌋/K (which would be 4/101 here).
    assert mc32.mde == pytest.approx(minimum_detectable_effect(mc32.sd, 33, alpha=0.05,
                                                               paired=True), rel=1e-12)
    assert "two-sided level 0.05 (α/m = 0.05/1)" in mc32.mde_basis


# --------------------------------------------------------------------------- the record


def test_record_of_an_unpaired_exact_comparison_field_by_field():
    """6 + 9 values: effect, exact p (scipy), p_min, pooled sd and df by hand, Welch interval,
    MDE at the largest attainable level ≤ α with 80 % power (noncentral t), its basis, the
    reasons for the missing numbers; label, units, α pass through."""
    c = compare(A6, B9, direction="greater", alpha=0.1, units="nats", label="C1")
    k = math.comb(15, 6)

    def diff(x, y, axis):
        return np.mean(x, axis=axis) - np.mean(y, axis=axis)
    p_g, p_l = (stats.permutation_test((A6, B9), diff, vectorized=True, n_resamples=np.inf,
                                       alternative=alt).pvalue for alt in ("greater", "less"))
    assert (c.p_predicted, c.p_opposite) == pytest.approx((p_g, p_l), rel=1e-12)
    assert c.p_two_sided == c.p_adjusted == pytest.approx(2 * min(p_g, p_l), rel=1e-12)
    assert c.effect == pytest.approx(A6.mean() - B9.mean(), rel=1e-12)
    assert (c.n_a, c.n_b, c.m, c.alpha, c.label, c.units) == (6, 9, 1, 0.1, "C1", "nats")
    assert c.direction == "greater" and c.statistic == "mean" and c.verdict == "verified"
    assert c.n_relabellings == k and c.p_min == pytest.approx(2 / k)
    ss = 5 * A6.var(ddof=1) + 8 * B9.var(ddof=1)
    assert c.sd == pytest.approx(math.sqrt(ss / 13), rel=1e-12) and c.df == 13.0
    welch = stats.ttest_ind(A6, B9, equal_var=False)
    ci = welch.confidence_interval(0.95)
    assert c.ci == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert c.ci_method == f"Welch t (df {welch.df:.3g})"
    level = 2 * math.floor(0.1 * k / 2) / k
    se = c.sd * math.sqrt(1 / 6 + 1 / 9)
    assert _power(c.mde, se, 13, level) == pytest.approx(0.8, abs=1e-8)
    assert c.mde_basis == (f"80 % power, noncentral t, pooled sd {c.sd:.3g}, df 13, two-sided "
                           f"level {level:.3g} (α/m = 0.1/1)")
    assert dict(c.missing) == NO_MARGIN


def test_record_of_a_paired_exact_comparison_with_a_margin():
    """Paired: sd of the differences, df = n − 1, MDE from the paired noncentral t at the
    largest attainable level 2⌊α·2ⁿ/2⌋/2ⁿ; with a margin nothing is missing."""
    b = A6[::-1].copy()
    c = compare(A6, b, direction="less", paired=True, margin=0.5)
    d = A6 - b
    assert c.sd == pytest.approx(d.std(ddof=1), rel=1e-12) and c.df == 5.0
    level = 2 * math.floor(0.05 * 64 / 2) / 64
    se = c.sd / math.sqrt(6)
    assert _power(c.mde, se, 5, level) == pytest.approx(0.8, abs=1e-8)
    assert c.mde_basis.startswith(f"80 % power, noncentral t, sd of differences {c.sd:.3g}, "
                                  f"df 5, two-sided level {level:.3g}")
    assert dict(c.missing) == {}


def test_paired_median_effect_is_the_median_of_the_differences():
    """Paired medians: the effect is median(a − b), not median(a) − median(b)."""
    a, b = np.array([1.0, 5.0, 2.0, 9.0, 3.0]), np.array([0.0, 1.0, 4.0, 2.0, 8.0])
    c = compare(a, b, direction="greater", paired=True, statistic="median", n_boot=100)
    assert c.effect == 1.0 and np.median(a) - np.median(b) == 1.0 and np.median(a - b) == 1.0
    a2 = np.array([0.0, 10.0, 20.0, 30.0, 40.0])
    b2 = np.array([5.0, 0.0, 25.0, 15.0, 35.0])  # differences −5, 10, −5, 15, 5
    c2 = compare(a2, b2, direction="greater", paired=True, statistic="median", n_boot=100)
    assert c2.effect == 5.0 and np.median(a2) - np.median(b2) == 5.0
    a3, b3 = np.array([0.0, 10.0, 20.0]), np.array([30.0, 5.0, 12.0])  # −30, 5, 8
    c3 = compare(a3, b3, direction="greater", paired=True, statistic="median", n_boot=100)
    assert c3.effect == 5.0 and np.median(a3) - np.median(b3) == -2.0


def test_smallest_designs_sd_df_interval_and_reasons():
    """1 + 2 values: pooled sd from one degree of freedom; 1 + 1 (and 1 pair): no sd, df,
    interval or MDE, each with its reason, and no numpy warning on the way; 2 pairs: the sd of
    the two differences, df 1; 2 + 2: a Welch interval (scipy)."""
    c = compare([1.0], [2.0, 4.0], direction="less")
    assert c.sd == pytest.approx(math.sqrt(2.0)) and c.df == 1.0
    assert c.missing["ci"] == "t interval needs ≥ 2 values per arm" and c.ci is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no variance of a single value is ever attempted
        one = compare([1.0], [2.0], direction="less")
        pair = compare([1.0], [2.0], direction="less", paired=True)
    assert one.sd is None and one.df is None and one.mde is None and one.ci_method == ""
    assert one.mde_basis == ""
    assert pair.sd is None and pair.test == "exact permutation (2 sign patterns)"
    assert dict(one.missing) == {"ci": "t interval needs ≥ 2 values per arm",
                                 "sd": "n too small for a variance estimate",
                                 "df": "n too small for a variance estimate",
                                 "mde": "no variance estimate (n too small)", **NO_MARGIN}
    p2 = compare([1.0, 4.0], [0.5, 1.5], direction="greater", paired=True)
    assert p2.sd == pytest.approx(2.0 / math.sqrt(2)) and p2.df == 1.0
    ci = stats.ttest_rel([1.0, 4.0], [0.5, 1.5]).confidence_interval(0.95)
    assert p2.ci == pytest.approx((ci.low, ci.high)) and p2.ci_method == "paired t (df 1)"
    w = compare([1.0, 2.0], [3.0, 5.0], direction="less", test="welch")
    ci = stats.ttest_ind([1.0, 2.0], [3.0, 5.0], equal_var=False).confidence_interval(0.95)
    assert w.ci == pytest.approx((ci.low, ci.high)) and w.test.startswith("Welch t")


def test_mde_reasons_when_the_test_cannot_reach_the_level():
    """3 + 3 (K = 20): no p ≤ 0.05 is attainable, so no MDE; 4 + 4 (K = 70) has one at
    m = 1 but not at α/m = 0.025 inside a family of two (and again when re-adjusted alone);
    medians have no MDE formula."""
    c = compare(_ramp(3, 1.0), _ramp(3), direction="greater")
    assert c.mde is None and c.missing["mde"] == "the test cannot reach p ≤ α/m = 0.05"
    assert c.mde_basis == ""
    four = compare(_ramp(4, 0.01), _ramp(4), direction="greater")
    assert four.mde is not None and "mde" not in four.missing
    fam = family({"x": four, "y": four})
    assert fam["x"].mde is None and fam["x"].mde_basis == ""
    assert dict(fam["x"].missing) == {"mde": "the test cannot reach p ≤ α/m = 0.025",
                                      **NO_MARGIN}
    # Re-adjusting a subset starts again from the raw p-values: alone again, the comparison
    # gets its MDE back, and the stale reason is gone.
    alone = family({"x": fam["x"]})["x"]
    assert alone.m == 1 and alone.p_adjusted == four.p_two_sided
    assert alone.mde == four.mde and dict(alone.missing) == NO_MARGIN
    med = compare(_ramp(4, 0.01), _ramp(4), direction="greater", statistic="median",
                  n_boot=100)
    assert med.missing["mde"] == "no MDE formula for medians (report the CI)"
    assert med.mde is None and med.mde_basis == ""


# --------------------------------------------------------------------------- t tests


def test_zero_variance_t_tests_are_certain():
    """Constant arms: p = 0 on the side of the effect and 1 on the other (both 1 for no
    effect), df = n_a + n_b − 2 in the name; also for an effect below 1 and paired."""
    up = compare([1.5] * 12, [1.0] * 12, direction="greater")
    assert (up.p_predicted, up.p_opposite, up.verdict) == (0.0, 1.0, "verified")
    assert up.test == "Welch t (df 22)" and up.ci == (0.5, 0.5)
    down = compare([1.0] * 12, [1.5] * 11, direction="greater")
    assert (down.p_predicted, down.p_opposite, down.verdict) == (1.0, 0.0, "refuted")
    assert down.test == "Welch t (df 21)"
    tie = compare([1.0] * 12, [1.0] * 12, direction="less")
    assert (tie.p_predicted, tie.p_opposite, tie.p_two_sided) == (1.0, 1.0, 1.0)
    assert tie.verdict == "not reproduced" and tie.note == ""  # a t test is never underpowered
    x = np.arange(12.0)
    pt = compare(x + 0.25, x, direction="greater", paired=True)
    assert (pt.p_predicted, pt.p_opposite) == (0.0, 1.0) and pt.test == "paired t (df 11)"


# --------------------------------------------------------------------------- decide


@pytest.mark.parametrize("kwargs, expected", [
    ({"p_adjusted": 0.05, "p_predicted": 0.02, "p_opposite": 0.98}, ("verified", "")),
    ({"p_adjusted": 0.05, "p_predicted": 0.98, "p_opposite": 0.02},
     ("refuted", "opposite effect significant")),
    ({"p_adjusted": 0.0, "p_predicted": 0.5, "p_opposite": 0.5}, ("not reproduced", "")),
    ({"p_adjusted": 0.01, "p_predicted": 0.005, "p_opposite": 0.995, "margin": 0.1,
      "p_equivalence_adjusted": 0.05},
     ("verified", "significant, but |Δ| < 0.1 by TOST: smaller than the margin")),
    ({"p_adjusted": 0.01, "p_predicted": 0.995, "p_opposite": 0.005, "margin": 0.1,
      "p_equivalence_adjusted": 0.04},
     ("refuted", "opposite effect significant; |Δ| < 0.1 by TOST")),
    ({"p_adjusted": 0.01, "p_predicted": 0.005, "p_opposite": 0.995, "margin": 0.1,
      "p_equivalence_adjusted": 0.051}, ("verified", "")),
    ({"p_adjusted": 0.3, "p_predicted": 0.15, "p_opposite": 0.85, "margin": 0.25,
      "p_equivalence_adjusted": 0.05}, ("refuted", "equivalence: |Δ| < 0.25 by TOST")),
    ({"p_adjusted": 0.3, "p_predicted": 0.15, "p_opposite": 0.85, "margin": 0.25,
      "p_equivalence_adjusted": 0.06}, ("not reproduced", "")),
    ({"p_adjusted": 0.051, "p_predicted": 0.02, "p_opposite": 0.98}, ("not reproduced", "")),
    ({"p_adjusted": 1.0, "p_predicted": 1.0, "p_opposite": 1.0, "p_min": 0.05},
     ("not reproduced", "")),
    ({"p_adjusted": 1.0, "p_predicted": 1.0, "p_opposite": 1.0, "p_min": 0.0625},
     ("not reproduced", "underpowered: minimum attainable p = 0.0625 > α = 0.05")),
])
def test_decide_at_its_boundaries(kwargs, expected):
    """p ≤ α is significant (equality included), for the two-sided and the TOST p; the sign
    decides verified / refuted and a tie of the one-sided p's decides nothing; underpowered
    only when p_min > α strictly (p_min defaults to 0); the notes word for word."""
    assert decide(alpha=0.05, **kwargs) == expected


# --------------------------------------------------------------------------- the MDE


@pytest.mark.parametrize("sd, n_a, n_b, alpha, power, paired", [
    (2.0, 4, 7, 0.01, 0.9, False),
    (0.5, 1, 2, 0.05, 0.8, False),
    (1.0, 6, None, 0.05, 0.8, True),
    (1.5, 2, None, 0.2, 0.5, True),
    (1.0, 9, 3, 0.1, 0.8, False),
])
def test_mde_has_the_stated_power_under_the_noncentral_t(sd, n_a, n_b, alpha, power, paired):
    """δ = MDE gives P(T_{df, δ/se} > t_{1−α/2, df}) = power; unpaired se = sd·√(1/n_a +
    1/n_b), df = n_a + n_b − 2; paired se = sd/√n_a, df = n_a − 1."""
    mde = minimum_detectable_effect(sd, n_a, n_b, alpha=alpha, power=power, paired=paired)
    if paired:
        se, df = sd / math.sqrt(n_a), n_a - 1
    else:
        se, df = sd * math.sqrt(1 / n_a + 1 / n_b), n_a + n_b - 2
    assert _power(mde, se, df, alpha) == pytest.approx(power, abs=1e-8)


def test_mde_defaults_and_zero_sd():
    """Defaults: unpaired, n_b = n_a, α = 0.05, power 0.8; sd = 0 gives 0; an int sd works."""
    assert minimum_detectable_effect(1.0, 5) == minimum_detectable_effect(
        1.0, 5, 5, alpha=0.05, power=0.8, paired=False)
    se = math.sqrt(2 / 5)
    assert _power(minimum_detectable_effect(1, 5), se, 8, 0.05) == pytest.approx(0.8, abs=1e-8)
    assert minimum_detectable_effect(0.0, 5) == 0.0
    assert minimum_detectable_effect(1.0, 5, 1) > 0


@pytest.mark.parametrize("args, kwargs, message", [
    ((-1.0, 10), {}, "sd: must be a finite number ≥ 0, got -1.0"),
    ((float("inf"), 10), {}, "sd: must be a finite number ≥ 0, got inf"),
    (("1", 10), {}, "sd: must be a finite number ≥ 0, got '1'"),
    ((1.0, 0), {}, "n_a: must be an integer in [1, ∞], got 0"),
    ((1.0, 1), {"paired": True}, "n_a: must be an integer in [2, ∞], got 1"),
    ((1.0, 5, 0), {}, "n_b: must be an integer in [1, ∞], got 0"),
    ((1.0, 1, 1), {}, "n_a, n_b: need n_a + n_b ≥ 3 for a pooled sd, got 1 + 1"),
    ((1.0, 5), {"alpha": 1.0}, "alpha: must lie in (0, 1), got 1.0"),
    ((1.0, 5), {"power": 0.0}, "alpha: must lie in (0, 1), got 0.0"),
])
def test_mde_argument_errors_word_for_word(args, kwargs, message):
    """Each bad argument raises ValueError with its full message."""
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        minimum_detectable_effect(*args, **kwargs)


# --------------------------------------------------------------------------- compare's arguments


@pytest.mark.parametrize("kwargs, message", [
    ({"direction": "up"}, "direction: must be one of ('greater', 'less'), got 'up'"),
    ({"alpha": 1.0}, "alpha: must lie in (0, 1), got 1.0"),
    ({"alpha": 0}, "alpha: must lie in (0, 1), got 0"),
    ({"alpha": "0.05"}, "alpha: must lie in (0, 1), got '0.05'"),
    ({"margin": 0.0}, "margin: must be None or a finite number > 0, got 0.0"),
    ({"margin": float("inf")}, "margin: must be None or a finite number > 0, got inf"),
    ({"margin": "0.1"}, "margin: must be None or a finite number > 0, got '0.1'"),
    ({"statistic": "mode"}, "statistic: must be one of ('mean', 'median'), got 'mode'"),
    ({"test": "u"}, "test: must be one of ('auto', 'welch', 'permutation'), got 'u'"),
    ({"ci": "normal"}, "ci: must be one of ('auto', 't', 'bootstrap'), got 'normal'"),
    ({"paired": True, "b": [1.0, 2.0]},
     "b: paired=True needs one value per seed in each arm, got len(a) = 3, len(b) = 2"),
    ({"statistic": "median", "test": "welch"},
     "test: 'welch' compares means; statistic='median' needs test='permutation' or 'auto'"),
    ({"statistic": "median", "ci": "t"},
     "ci: the t interval is for means; use ci='bootstrap' or 'auto'"),
    ({"test": "welch", "a": [1.0]}, "a: Welch's t needs ≥ 2 values per arm, got 1"),
    ({"test": "welch", "b": [1.0]}, "b: Welch's t needs ≥ 2 values per arm, got 1"),
    ({"n_boot": 99}, "n_boot: must be an integer in [100, ∞], got 99"),
    ({"n_perm": 99}, "n_perm: must be an integer in [100, ∞], got 99"),
    ({"a": "abc"}, "a: expected a 1-D sequence of numbers, got 'abc'"),
    ({"b": [[1.0, 2.0]]}, ("b: expected a non-empty 1-D sequence of per-seed values, got "
                           "shape (1, 2)")),
    ({"a": 3.0}, "a: expected a non-empty 1-D sequence of per-seed values, got shape ()"),
    ({"b": []}, "b: expected a non-empty 1-D sequence of per-seed values, got shape (0,)"),
    ({"a": [1.0, float("nan"), float("inf")]},
     ("a: 2 non-finite value(s) (NaN/inf) at index [1, 2]; a diverged seed is a result: "
      "report it (not_measured, or a finite stand-in stated in the config), do not drop it")),
])
def test_compare_argument_errors_word_for_word(kwargs, message):
    """Each bad argument raises ValueError with its full message."""
    kwargs = {"a": [1.0, 2.0, 3.0], "b": [2.0, 3.0, 4.0], "direction": "greater", **kwargs}
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        compare(**kwargs)


def test_compare_accepts_the_edges_of_its_ranges():
    """α just inside (0, 1), an int margin, n_boot = n_perm = 100, Welch with 2 + 2 values,
    ci="t" for means (the Welch interval, as by default), one value per arm: all accepted."""
    a, b = [1.0, 2.0, 3.0], [2.0, 3.0, 4.5]
    assert compare(a, b, direction="less", alpha=0.999).alpha == 0.999
    assert compare(a, b, direction="less", alpha=1e-9).alpha == 1e-9
    assert compare(a, b, direction="less", margin=1).margin == 1
    assert compare(a, b, direction="less", n_boot=100, n_perm=100, ci="bootstrap").ci_method \
        == "BCa bootstrap (100 resamples)"
    assert compare(a[:2], b[:2], direction="less", test="welch").test.startswith("Welch t")
    t = compare(a, b, direction="less", ci="t")
    assert t.ci == compare(a, b, direction="less").ci and t.ci_method.startswith("Welch t (df ")
    assert compare([1.0], [2.0], direction="less").n_a == 1


def test_values_are_read_as_float64():
    """Per-seed values may be a torch tensor that requires grad, integers, or unsigned
    integers (read as floats: a − b does not wrap around), with the same result as floats."""
    a, b = np.array([3.0, 1.0, 4.0, 1.0, 5.0]), np.array([2.0, 7.0, 1.0, 8.0, 2.0])
    ref = compare(a, b, direction="less", paired=True)
    t = compare(torch.tensor(a, requires_grad=True), torch.tensor(b), direction="less",
                paired=True)
    u = compare(a.astype(np.uint8), b.astype(np.uint8), direction="less", paired=True)
    i = compare([3, 1, 4, 1, 5], [2, 7, 1, 8, 2], direction="less", paired=True)
    for c in (t, u, i):
        assert c == ref
    assert ref.effect == pytest.approx(-1.2)
