"""The equivalence (TOST) p-value of ebmref/verdict.py's ``compare`` for every kind of test:
p_TOST = max(p[Δ > −δ], p[Δ < +δ]), each one-sided test run on arm a shifted by +δ and −δ
with the same test as the difference test (Welch, paired t, exact permutation of means or
medians, seeded Monte Carlo), checked against scipy; with TOST significant and no difference
the verdict is "refuted" with its note word for word."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from ebmref.verdict import compare

A = np.array([1.02, 0.97, 1.05, 0.99, 1.01, 0.96, 1.04, 1.0])
B = np.array([1.0, 1.03, 0.98, 1.01, 0.97, 1.02, 0.99, 1.04])


def _perm(a, b, f, paired, alt, n_resamples=np.inf, seed=None):
    """scipy's permutation test of f(a) − f(b) (or f of the paired differences)."""
    def stat(x, y, axis):
        return f(x - y, axis=axis) if paired else f(x, axis=axis) - f(y, axis=axis)
    rng = None if seed is None else np.random.default_rng(seed)
    return stats.permutation_test((a, b), stat, vectorized=True, n_resamples=n_resamples,
                                  alternative=alt, rng=rng,
                                  permutation_type="samples" if paired else "independent"
                                  ).pvalue


def _reference(a, b, delta, kind, paired):
    """(p[Δ > −δ], p[Δ < +δ]) from scipy, for the test ``kind`` the design gets."""
    if kind == "t":
        t = stats.ttest_rel if paired else (lambda x, y, **kw: stats.ttest_ind(
            x, y, equal_var=False, **kw))
        return (t(a + delta, b, alternative="greater").pvalue,
                t(a - delta, b, alternative="less").pvalue)
    f = np.median if kind == "median" else np.mean
    extra = {"n_resamples": 200, "seed": 0} if kind == "mc" else {}
    return (_perm(a + delta, b, f, paired, "greater", **extra),
            _perm(a - delta, b, f, paired, "less", **extra))


@pytest.mark.parametrize("kind, paired, reps", [
    ("t", False, 2), ("t", True, 2), ("mean", False, 1), ("mean", True, 1),
    ("median", False, 1), ("median", True, 1), ("mc", False, 3)])
def test_tost_p_is_the_larger_of_the_two_shifted_one_sided_tests(kind, paired, reps):
    """p_equivalence = max of the two shifted one-sided p-values of the design's own test;
    alone (m = 1) it is also the adjusted one, and the margin is reported."""
    a, b = np.tile(A, reps), np.tile(B, reps)
    if kind == "mc":  # 24 + 25 values: a mean's exact limit (32 pooled) is passed
        b = np.append(b, 1.0)
    delta = 0.01
    kw = {"statistic": "median"} if kind == "median" else {}
    test = "permutation" if kind == "mc" else "auto"
    c = compare(a, b, direction="greater", paired=paired, margin=delta, test=test, n_perm=200,
                n_boot=100, **kw)
    expected = {"t": "paired t" if paired else "Welch t", "mc": "Monte Carlo"}.get(
        kind, "exact permutation")
    assert c.test.startswith(expected)
    lo, hi = _reference(a, b, delta, kind, paired)
    assert c.p_equivalence == pytest.approx(max(lo, hi), rel=1e-10)
    assert c.p_equivalence_adjusted == c.p_equivalence and c.margin == delta
    assert not {"margin", "p_equivalence", "p_equivalence_adjusted"} & set(c.missing)


def test_tost_refutes_a_welch_comparison_inside_the_margin():
    """No significant difference but equivalence inside ±δ: refuted, with the note
    "equivalence: |Δ| < δ by TOST" and the TOST p in the line."""
    a, b = np.tile(A, 2), np.tile(B, 2)
    c = compare(a, b, direction="greater", margin=0.05)
    assert c.p_adjusted > 0.05 and c.p_equivalence <= 0.05
    assert (c.verdict, c.note) == ("refuted", "equivalence: |Δ| < 0.05 by TOST")
    assert c.line().startswith("refuted (equivalence: |Δ| < 0.05 by TOST): Δ = ")
    assert c.line().endswith(", TOST ±0.05: p_Holm = " + f"{c.p_equivalence:.2g}")
