"""Deterministic tests of the statistical helpers in verification/stats.py: each p-value and
power formula is checked on inputs whose answer is known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from verification.stats import (
    ALPHA,
    assert_pvalues,
    chi2_detectable_rel_error,
    chi2_power,
    chi2_variance_power,
    dkwm_epsilon,
    gaussian_scale_ks_distance,
    ks_min_detectable,
    ks_pvalue,
    normal_pvalues,
    projection_ks_pvalues,
    seed_for,
    whitened_gaussian_pvalues,
    z_test_power,
)

F64 = torch.float64


def test_assert_pvalues_bonferroni_threshold():
    assert_pvalues([ALPHA / 4 * 1.0001] * 4)
    with pytest.raises(AssertionError, match="below"):
        assert_pvalues([0.5, 0.5, 0.5, ALPHA / 4 * 0.999])
    with pytest.raises(AssertionError, match="b="):
        assert_pvalues({"a": 0.9, "b": float("nan")})  # NaN fails and is listed
    with pytest.raises(ValueError):
        assert_pvalues([])


def test_dkwm_and_ks_min_detectable():
    assert dkwm_epsilon(1000, 0.05) == pytest.approx(math.sqrt(math.log(40) / 2000))
    d = ks_min_detectable(10_000, 1e-6, 1e-3)
    assert d == pytest.approx(dkwm_epsilon(10_000, 1e-6) + dkwm_epsilon(10_000, 1e-3))
    # Two equal samples of size n behave like one of size n/2.
    assert ks_min_detectable(10_000, 1e-6, n2=10_000) == \
        pytest.approx(ks_min_detectable(5_000, 1e-6))
    with pytest.raises(ValueError):
        dkwm_epsilon(0, 0.1)


def test_chi2_power_size_and_monotonicity():
    assert chi2_power(1000, 2, 1.0, 1e-3) == pytest.approx(1e-3, rel=1e-9)  # size = level
    powers = [chi2_power(1000, 2, s, 1e-3) for s in (1.05, 1.1, 1.2)]
    assert powers == sorted(powers)
    r = chi2_detectable_rel_error(40_000, 2, ALPHA / 3)
    assert chi2_variance_power(40_000, 2, r * 1.01, ALPHA / 3)
    assert not chi2_variance_power(40_000, 2, r * 0.99, ALPHA / 3)


def test_whitened_pvalues_on_constructed_data():
    """Rows ±e_j·r with Σ‖z‖² at the χ² median and exact zero mean: p_chi2 = 1, p_mean = 1."""
    m, d = 1000, 2
    r2 = stats.chi2.median(m * d) / m
    x = torch.zeros(m, d, dtype=F64)
    x[: m // 2, 0] = math.sqrt(r2)
    x[m // 2:, 0] = -math.sqrt(r2)
    mean, cov = torch.zeros(d, dtype=F64), torch.eye(d, dtype=F64)
    p = whitened_gaussian_pvalues(x, mean, cov)
    assert p["chi2"] == pytest.approx(1.0, abs=1e-9) and p["mean"] == pytest.approx(1.0)
    assert p["ks"] < 1e-100  # every radius equal: nothing like χ²(2)
    # Whitening: the same data mapped through L and tested against N(0, LLᵀ) gives the same p.
    L = torch.tensor([[2.0, 0.0], [0.7, 0.5]], dtype=F64)
    q = whitened_gaussian_pvalues(x @ L.T + 3.0, mean + 3.0, L @ L.T)
    assert all(q[k] == pytest.approx(p[k], rel=1e-9, abs=1e-300) for k in p)


def test_ks_pvalue_on_exact_quantiles_and_shifted_quantiles():
    n = 2000
    x = stats.norm.ppf((np.arange(n) + 0.5) / n)  # D = 1/(2n): p ≈ 1
    assert ks_pvalue(x, stats.norm.cdf) > 0.999
    assert ks_pvalue(x + 0.2, stats.norm.cdf) < 1e-10


def test_projection_ks_identical_and_shifted_samples():
    x = torch.randn(3000, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    gen = torch.Generator().manual_seed(1)
    p = projection_ks_pvalues(x, x.clone(), 4, gen)
    assert len(p) == 4 and min(p.values()) == 1.0
    q = projection_ks_pvalues(x, x + 1.0, 4, gen)
    assert max(q.values()) < 1e-6  # a shift along (1,1,1) shows in every random direction


def test_normal_pvalues_and_z_power():
    p = normal_pvalues(np.array([0.0, 1.96, -3.0]), 0.0, 1.0)
    np.testing.assert_allclose(p, [1.0, 0.0499958, 0.0026998], rtol=1e-4)
    need = stats.norm.isf(ALPHA / 2) + stats.norm.isf(1e-3)
    assert z_test_power(need * 1.001, 1.0, ALPHA) and not z_test_power(need * 0.999, 1.0, ALPHA)


def test_gaussian_scale_ks_distance_closed_form():
    """sup|Φ(t) − Φ(t/s)| is attained where φ(t) = φ(t/s)/s: t² = 2 s² log s / (s² − 1)."""
    s = math.sqrt(1.05)
    t = math.sqrt(2 * s * s * math.log(s) / (s * s - 1))
    assert gaussian_scale_ks_distance(0.05) == pytest.approx(
        stats.norm.cdf(t) - stats.norm.cdf(t / s), rel=1e-6)


def test_seed_for_is_stable_and_distinct():
    assert seed_for("a::b") == seed_for("a::b") != seed_for("a::c")
    assert 0 <= seed_for("x") < 2**63
    assert seed_for("a") == 5385491284112807882  # fixed across processes and PYTHONHASHSEED


def test_power_failures_are_not_assertion_errors():
    """An underpowered check raises UnderpoweredError, which pytest.raises(AssertionError)
    around a broken variant does not accept."""
    from verification.stats import UnderpoweredError, assert_gaussian_law, assert_ks_power

    x = torch.zeros(100, 2, dtype=F64)
    with pytest.raises(UnderpoweredError):
        assert_gaussian_law(x, torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64))
    assert not issubclass(UnderpoweredError, AssertionError)
    with pytest.raises(UnderpoweredError):
        assert_ks_power(1000, 0.01, ALPHA)
    assert_ks_power(1_000_000, 0.01, ALPHA)
