"""The pre-registered decision rule (ebmref/verdict.py) on fixed inputs, its
tests against scipy, and one calibrated simulation of its error rate and its MDE."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from ebmref.verdict import (
    Comparison,
    compare,
    decide,
    family,
    holm,
    minimum_detectable_effect,
    not_measured,
    qualified,
)
from verification.stats import assert_pvalues

BASE = np.array([1.0, 1.1, 0.9, 1.2, 0.8, 1.05, 0.95, 1.15, 0.85, 1.0])
K10 = math.comb(20, 10)  # 184 756 relabellings of 10 + 10
JITTER = np.array([0.1, -0.1, 0.05, -0.05, 0.0, 0.2, -0.2, 0.15, -0.15, 0.0])


def _attainable(alpha: float, k: int) -> float:
    return 2 * math.floor(alpha * k / 2) / k


def _strict_json(c: Comparison) -> dict:
    d = json.loads(json.dumps(c.to_dict(), allow_nan=False))
    numeric = ("effect", "ci", "p_two_sided", "p_predicted", "p_opposite", "p_adjusted",
               "margin", "p_equivalence", "p_equivalence_adjusted", "p_min", "n_relabellings",
               "sd", "df", "mde")
    for k in numeric:
        if d[k] is None:
            assert d["missing"].get(k) or d["missing"].get("all"), f"{k} is None without a reason"
    return d


# --------------------------------------------------------------------------- the five cases


def test_clear_effect_is_verified_with_exact_p_and_line():
    c = compare(BASE + 1, BASE, direction="greater", units="nats")
    assert c.verdict == "verified" and c.note == ""
    assert c.test == f"exact permutation ({K10} relabellings)"
    assert c.p_predicted == pytest.approx(1 / K10, rel=1e-12)  # only the observed labelling
    assert c.p_two_sided == c.p_adjusted == pytest.approx(2 / K10, rel=1e-12)
    assert c.effect == pytest.approx(1.0) and c.ci[0] < 1 < c.ci[1]
    assert c.line() == ("verified: Δ = 1 [0.879, 1.12] nats, n = 10 + 10, p_Holm = 1.1e-05 "
                        "(m = 1), α = 0.05")
    _strict_json(c)


def test_tie_is_not_reproduced_with_its_mde():
    c = compare(BASE, BASE.copy(), direction="less", units="nats")
    assert c.verdict == "not reproduced" and c.note == ""
    assert c.effect == 0.0 and c.p_two_sided == 1.0  # identical arms: symmetric null law
    assert c.p_predicted == pytest.approx(c.p_opposite) and c.p_predicted > 0.5
    sd = float(np.sqrt(2 * 9 * BASE.var(ddof=1) / 18))
    assert c.sd == pytest.approx(sd, rel=1e-12)
    mde = minimum_detectable_effect(sd, 10, 10, alpha=_attainable(0.05, K10))
    assert c.mde == pytest.approx(mde, rel=1e-9) and 0 < c.mde < 1
    assert c.line().endswith(f"MDE = {c.mde:.3g} nats") and "pooled sd" in c.mde_basis


def test_opposite_effect_is_refuted():
    c = compare(BASE + 1, BASE, direction="less")
    assert c.verdict == "refuted" and c.note == "opposite effect significant"
    assert c.p_opposite == pytest.approx(1 / K10) and c.p_predicted == 1.0


def test_equivalence_inside_margin_is_refuted_by_tost():
    c = compare(BASE + 0.01, BASE, direction="greater", margin=0.2)
    assert c.verdict == "refuted" and c.note.startswith("equivalence: |Δ| < 0.2")
    assert c.p_two_sided > 0.5 and c.p_equivalence == c.p_equivalence_adjusted < 0.01
    # TOST = the larger of the two one-sided shifted tests.
    up = compare(BASE + 0.01 + 0.2, BASE, direction="greater").p_predicted
    down = compare(BASE + 0.01 - 0.2, BASE, direction="less").p_predicted
    assert c.p_equivalence == max(up, down)
    _strict_json(c)


def test_equivalence_not_established_when_the_ci_is_wide():
    wide = 20 * (BASE - 1)  # sd ≈ 2.6: the CI spans far beyond ±0.2
    c = compare(wide + 0.01, wide, direction="greater", margin=0.2)
    assert c.verdict == "not reproduced" and c.p_equivalence > 0.05
    assert c.ci[0] < -0.2 and c.ci[1] > 0.2 and c.mde > 1


def test_significant_effect_inside_the_margin_is_verified_with_a_note():
    c = compare(BASE + 0.3, BASE, direction="greater", margin=1.0)
    assert c.verdict == "verified" and "smaller than the margin" in c.note


# --------------------------------------------------------------------------- small n, pairing


@pytest.mark.parametrize("a, b, paired, p_min", [
    ([1.0, 2.0], [3.0, 4.0], False, 1 / 3),              # C(4, 2) = 6 relabellings
    ([1.0], [3.0], False, 1.0),
    ([1.0, 2.0, 3.0, 4.0], [9.0, 9.5, 9.2, 9.9], True, 2 / 16),  # 2⁴ sign flips
])
def test_n_too_small_is_underpowered(a, b, paired, p_min):
    c = compare(a, b, direction="less", paired=paired)
    assert c.p_min == pytest.approx(p_min) and c.p_two_sided == pytest.approx(p_min)
    assert c.verdict == "not reproduced"
    assert c.note == f"underpowered: minimum attainable p = {p_min:.3g} > α = 0.05"
    assert c.mde is None and c.missing["mde"]
    _strict_json(c)


def test_paired_design_detects_what_the_unpaired_one_cannot():
    seeds = 10.0 * np.arange(10)  # between-seed spread ≫ the within-seed effect
    a, b = seeds + 1 + JITTER, seeds
    p = compare(a, b, direction="greater", paired=True)
    u = compare(a, b, direction="greater")
    assert p.test == "exact permutation (1024 sign patterns)"
    assert p.verdict == "verified" and p.p_two_sided == pytest.approx(2 / 1024)
    assert p.sd == pytest.approx(float(JITTER.std(ddof=1)))
    assert u.verdict == "not reproduced" and u.p_two_sided > 0.5 and u.mde > 10 * p.mde
    assert p.line().split(", n = ")[1].startswith("10 pairs")


def test_welch_path_and_zero_variance():
    c = compare(np.r_[BASE, BASE] + 1, np.r_[BASE, BASE], direction="greater")
    assert c.test.startswith("Welch t") and c.n_relabellings is None and c.p_min == 0.0
    assert c.verdict == "verified"
    same = compare([1.0] * 12, [1.0] * 12, direction="greater")
    assert same.verdict == "not reproduced" and same.p_two_sided == 1.0 and same.ci == (0.0, 0.0)
    shift = compare([2.0] * 12, [1.0] * 12, direction="greater")
    assert shift.verdict == "verified" and shift.p_two_sided == 0.0 and shift.mde == 0.0
    _strict_json(same)


def test_medians_and_bootstrap_intervals():
    fid_a = [30.1, 29.5, 31.2, 28.9, 30.5, 29.9, 55.0, 30.3]  # one outlying seed
    fid_b = [25.0, 26.1, 24.3, 25.7, 24.9, 25.5, 26.0, 24.6]
    c = compare(fid_a, fid_b, direction="greater", statistic="median")
    assert c.verdict == "verified" and c.effect == pytest.approx(30.2 - 25.25)
    assert c.ci_method.startswith("BCa bootstrap") and c.ci[0] < c.effect < c.ci[1]
    assert c.mde is None and "median" in c.missing["mde"]
    r = compare(fid_a, fid_b, direction="greater", ci="bootstrap")
    assert r.ci_method.startswith("BCa") and r.test.startswith("exact permutation")
    assert compare(fid_a, fid_b, direction="greater", ci="bootstrap").ci == r.ci  # seeded
    big = compare(np.r_[fid_a, fid_a[:4]], np.r_[fid_b, fid_b[:4]], direction="greater",
                  statistic="median", n_perm=999)  # C(24, 12) relabellings: Monte Carlo
    assert big.test == "Monte Carlo permutation (999 random relabellings)"
    assert big.p_min == pytest.approx(2 / 1000) and big.p_predicted == pytest.approx(1 / 1000)
    assert big.verdict == "verified"
    _strict_json(c)


# --------------------------------------------------------------------------- against scipy


def test_exact_permutation_matches_scipy():
    x = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 2.0, 2.0])  # ties included
    y = np.array([2.0, 7.0, 1.0, 8.0, 2.0, 8.0])
    for paired, (a, b) in ((False, (x, y)), (True, (x[:6], y))):
        for stat, f in (("mean", np.mean), ("median", np.median)):
            def s(u, v, axis, f=f, paired=paired):
                return f(u - v, axis=axis) if paired else f(u, axis=axis) - f(v, axis=axis)
            ref = [stats.permutation_test(
                (a, b), s, vectorized=True, n_resamples=np.inf, alternative=alt,
                permutation_type="samples" if paired else "independent").pvalue
                for alt in ("greater", "less")]
            c = compare(a, b, direction="greater", paired=paired, statistic=stat)
            assert (c.p_predicted, c.p_opposite) == pytest.approx(ref, rel=1e-12), (paired, stat)


def test_t_tests_and_interval_match_scipy():
    a, b = np.r_[BASE, BASE * 1.3] + 0.2, np.r_[BASE, BASE][::-1] ** 2
    for paired in (False, True):
        c = compare(a, b, direction="greater", paired=paired)
        t = (stats.ttest_rel(a, b, alternative="greater") if paired
             else stats.ttest_ind(a, b, equal_var=False, alternative="greater"))
        two = (stats.ttest_rel(a, b) if paired else stats.ttest_ind(a, b, equal_var=False))
        assert c.p_predicted == pytest.approx(t.pvalue, rel=1e-10)
        assert c.p_two_sided == pytest.approx(two.pvalue, rel=1e-10)
        ci = two.confidence_interval(0.95)
        assert c.ci == pytest.approx((ci.low, ci.high), rel=1e-10)


# --------------------------------------------------------------------------- multiplicity


def test_holm_hand_computed():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → running max 0.06.
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # at most 2 nulls true: multipliers min(4, 2), min(3, 2), 2, 1.
    assert holm(p, max_true=2) == pytest.approx([0.02, 0.06, 0.06, 0.01])
    assert holm([0.9]) == [0.9] and holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])


def test_family_adjusts_and_redecides():
    ones = np.ones(10)
    a6 = compare(ones[:6] + 0.1 + JITTER[:6] ** 2, ones[:6], direction="greater", paired=True)
    tie = compare(BASE, BASE, direction="greater", paired=True)
    c10 = compare(ones + 1 + JITTER, ones, direction="greater", paired=True)
    assert a6.verdict == "verified" and a6.p_two_sided == pytest.approx(2 / 64)  # alone
    fam = family({"A": a6, "B": tie, "C": c10, "D": not_measured("no GPU at this scale")})
    assert [fam[k].m for k in "ABC"] == [3, 3, 3]  # D does not count
    # 0.00195·3 = 0.0059, 0.03125·2 = 0.0625, 1·1 = 1.
    assert [fam[k].p_adjusted for k in "ABC"] == pytest.approx([0.0625, 1.0, 6 / 1024])
    assert [fam[k].verdict for k in "ABCD"] == ["not reproduced", "not reproduced", "verified",
                                                "not measured"]
    assert fam["A"].label == "A" and "(m = 3)" in fam["A"].line()
    assert fam["B"].mde_basis.endswith("(α/m = 0.05/3)")


def test_family_with_a_margin_caps_holm_at_m():
    ones = np.ones(10)
    a6 = compare(ones[:6] + 0.1 + JITTER[:6] ** 2, ones[:6], direction="greater", paired=True)
    tie = compare(BASE, BASE, direction="greater", paired=True, margin=0.5)
    c10 = compare(ones + 1 + JITTER, ones, direction="greater", paired=True)
    assert tie.p_equivalence == pytest.approx(1 / 1024)
    fam = family({"A": a6, "B": tie, "C": c10})
    # four p-values, at most 3 true nulls: 1/1024·3, 2/1024·3, 1/32·2, 1·1.
    assert fam["B"].p_equivalence_adjusted == pytest.approx(3 / 1024)
    assert fam["C"].p_adjusted == pytest.approx(6 / 1024)
    assert fam["A"].p_adjusted == pytest.approx(1 / 16)
    assert [fam[k].verdict for k in "ABC"] == ["not reproduced", "refuted", "verified"]


# --------------------------------------------------------------------------- other verdicts


def test_qualified_combinator():
    ver = compare(BASE + 1, BASE, direction="greater")
    ref = compare(BASE + 1, BASE, direction="less")
    nr = compare(BASE, BASE, direction="greater")
    gone = not_measured("needs 50 seeds of MNIST")
    q = qualified(ver, ref, condition="chains start at data")
    assert q.verdict == "qualified" and q.effect == ver.effect and len(q.parts) == 2
    assert q.line().startswith("qualified (when chains start at data: verified: Δ = 1")
    assert qualified(ver, ver, condition="c").verdict == "verified"
    assert qualified(ver, nr, condition="c").verdict == "verified"
    assert qualified(ver, nr, condition="c", interaction=ver).verdict == "qualified"
    assert qualified(nr, ref, condition="c").verdict == "not reproduced"
    assert qualified(ref, ver, condition="c").verdict == "refuted"
    assert qualified(ver, gone, condition="c").verdict == "not measured"
    _strict_json(q)
    _strict_json(qualified(ver, gone, condition="c"))


def test_not_measured_and_decide():
    c = not_measured("MNIST at 10 seeds needs 40 GPU-hours", label="C30")
    assert c.line() == "not measured: MNIST at 10 seeds needs 40 GPU-hours"
    assert _strict_json(c)["effect"] is None
    assert decide(p_adjusted=0.01, p_predicted=0.005, p_opposite=0.995,
                  alpha=0.05) == ("verified", "")
    assert decide(p_adjusted=0.2, p_predicted=0.9, p_opposite=0.1, alpha=0.05,
                  p_equivalence_adjusted=0.04, margin=0.1)[0] == "refuted"


# --------------------------------------------------------------------------- argument errors


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_values_are_rejected_naming_the_argument(bad):
    with pytest.raises(ValueError, match=r"^a: 1 non-finite value\(s\) \(NaN/inf\) at index \[2\]"):
        compare([1.0, 2.0, bad], [1.0, 2.0], direction="greater")
    with pytest.raises(ValueError, match=r"^b: "):
        compare([1.0, 2.0], torch.tensor([bad, 1.0]), direction="greater")


@pytest.mark.parametrize("kwargs, name", [
    ({"direction": "up"}, "direction"),
    ({"direction": "greater", "alpha": 0.0}, "alpha"),
    ({"direction": "greater", "alpha": float("nan")}, "alpha"),
    ({"direction": "greater", "margin": -1.0}, "margin"),
    ({"direction": "greater", "statistic": "mode"}, "statistic"),
    ({"direction": "greater", "test": "mannwhitney"}, "test"),
    ({"direction": "greater", "ci": "normal"}, "ci"),
    ({"direction": "greater", "statistic": "median", "test": "welch"}, "test"),
    ({"direction": "greater", "statistic": "median", "ci": "t"}, "ci"),
    ({"direction": "greater", "n_boot": 10}, "n_boot"),
    ({"direction": "greater", "paired": True, "b": [1.0, 2.0]}, "b"),
    ({"direction": "greater", "a": [1.0], "test": "welch"}, "a"),
    ({"direction": "greater", "a": [[1.0, 2.0]]}, "a"),
    ({"direction": "greater", "b": []}, "b"),
])
def test_argument_errors_name_the_argument(kwargs, name):
    kwargs = dict({"a": [1.0, 2.0, 3.0], "b": [2.0, 3.0, 4.0]}, **kwargs)
    with pytest.raises(ValueError, match=f"^{name}: "):
        compare(**kwargs)


def test_other_argument_errors():
    c = compare(BASE, BASE, direction="greater")
    for call, name in [
        (lambda: holm([0.5, 1.2]), "pvalues"),
        (lambda: holm([]), "pvalues"),
        (lambda: holm([0.5], max_true=0), "max_true"),
        (lambda: family({}), "comparisons"),
        (lambda: family({"x": c, "y": compare(BASE, BASE, direction="less", alpha=0.01)}),
         "comparisons"),
        (lambda: not_measured(" "), "reason"),
        (lambda: qualified(c, c, condition=""), "condition"),
        (lambda: minimum_detectable_effect(-1.0, 10), "sd"),
        (lambda: minimum_detectable_effect(1.0, 1, 1), "n_a, n_b"),
    ]:
        with pytest.raises(ValueError, match=f"^{name}: "):
            call()


# --------------------------------------------------------------------------- calibration


def _binomial_powers(n: int, level: float) -> tuple[float, float, float]:
    """Power of the three one-sided binomial tests below, each at ``level``: "rate ≤ 0.05"
    at a rate of 0.10, "rate ≥ 0.77" at 0.68, "rate ≤ 0.83" at 0.92."""
    def upper(p0: float, p1: float) -> float:  # reject when k ≥ c
        c = int(stats.binom.isf(level, n, p0))
        while stats.binom.sf(c - 1, n, p0) > level:
            c += 1
        return float(stats.binom.sf(c - 1, n, p1))
    c = int(stats.binom.ppf(level, n, 0.77))  # reject when k ≤ c
    while stats.binom.cdf(c, n, 0.77) > level:
        c -= 1
    return upper(0.05, 0.10), float(stats.binom.cdf(c, n, 0.68)), upper(0.83, 0.92)


@pytest.mark.stochastic(alpha=1e-6)
def test_calibration_null_rate_and_mde(rng):
    """Under the null (two arms from one normal law) the rule's false-"verified" rate and its
    rate of any directional claim (verified or refuted) are ≤ α = 0.05 — one-sided binomial
    tests; at a true effect equal to the design's MDE it verifies with probability 0.80 —
    binomial tests of the band 0.77–0.83 (Welch's df is a little below the pooled df behind
    the MDE; the exact permutation test's Pitman efficiency is 1); the reported (plug-in)
    MDE averages c4(df) × the design MDE (it is proportional to the pooled sd) — a z test.
    Both paths: exact permutation (10 + 10) and Welch (15 + 15); the 10 p-values share
    α = 1e-6 (Bonferroni), each with power ≥ 1 − 1e-3 against a doubled false rate, a verify
    rate of 0.68 or 0.92, or a 5 % error in the reported MDE."""
    reps, alpha, total, beta = 2000, 0.05, 1e-6, 1e-3
    level = total / 10
    assert min(_binomial_powers(reps, level)) >= 1 - beta
    pvals = {}
    for n, k in ((10, K10), (15, None)):
        x = torch.randn((2, reps, 2, n), generator=rng, dtype=torch.float64).numpy()
        design = minimum_detectable_effect(1.0, n, n, alpha=_attainable(alpha, k) if k else alpha)
        null = [compare(a, b, direction="greater") for a, b in x[0]]
        hits = sum(compare(a + design, b, direction="greater").verdict == "verified"
                   for a, b in x[1])
        ver = sum(c.verdict == "verified" for c in null)
        claims = ver + sum(c.verdict == "refuted" for c in null)
        df = 2 * n - 2
        c4 = math.sqrt(2 / df) * math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2))
        se = math.sqrt((1 - c4**2) / reps)  # sd of the mean of s_p/σ over reps
        assert 0.05 * c4 / se >= stats.norm.isf(level / 2) + stats.norm.isf(beta)
        ratio = np.array([c.mde for c in null]) / design  # = s_p/σ exactly
        pvals.update({
            f"n{n}: false verified ≤ α": stats.binom.sf(ver - 1, reps, alpha),
            f"n{n}: any claim ≤ α": stats.binom.sf(claims - 1, reps, alpha),
            f"n{n}: verify rate at MDE ≥ 0.77": stats.binom.cdf(hits, reps, 0.77),
            f"n{n}: verify rate at MDE ≤ 0.83": stats.binom.sf(hits - 1, reps, 0.83),
            f"n{n}: reported MDE": 2 * stats.norm.sf(abs(ratio.mean() - c4) / se)})
    assert_pvalues(pvals, alpha=total)
