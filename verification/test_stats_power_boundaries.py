"""Boundaries of the power assertions of ebmref.stats, against an independent computation.

The power of the two-sided χ² variance test is recomputed here from the Gamma law of
Σ‖zᵢ‖² ~ s·χ²(k) = Gamma(k/2, scale 2s) (scipy.stats.gamma, not the chi2 helpers of the
module); the sample sizes at which ``assert_chi2_power`` / ``assert_gaussian_law`` start to
pass, the defaults they document (5 % covariance error, β = 1e-3, α split over 3 p-values),
the full UnderpoweredError messages, the two-sample size of ``assert_ks_power`` and the
contract of ``projection_ks_pvalues`` (float64 inputs, the caller's generator) are pinned.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import optimize, stats

from ebmref.stats import (
    ALPHA,
    BETA,
    UnderpoweredError,
    assert_chi2_power,
    assert_gaussian_law,
    assert_ks_power,
    chi2_variance_power,
    gaussian_scale_ks_distance,
    ks_min_detectable,
    projection_ks_pvalues,
    random_directions,
)

F64 = torch.float64


def gamma_power(k: int, scale: float, alpha: float) -> float:
    """P(reject) of the two-sided level-α test of Σ‖z‖² ~ χ²(k) when Σ‖z‖² ~ scale·χ²(k)."""
    null = stats.gamma(k / 2, scale=2.0)
    lo, hi = null.ppf(alpha / 2), null.isf(alpha / 2)
    alt = stats.gamma(k / 2, scale=2.0 * scale)
    return float(alt.sf(hi) + alt.cdf(lo))


def design_ok(n: int, d: int, rel: float, alpha: float, beta: float) -> bool:
    """Detects covariance × (1 ± rel) with probability ≥ 1 − β (both directions)."""
    k = n * d
    return min(gamma_power(k, 1 + rel, alpha), gamma_power(k, 1 - rel, alpha)) >= 1 - beta


def smallest_n(d: int, rel: float, alpha: float, beta: float) -> int:
    """Smallest number of rows whose design passes (bisection on the monotone power)."""
    lo, hi = 1, 2
    while not design_ok(hi, d, rel, alpha, beta):
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if design_ok(mid, d, rel, alpha, beta) else (mid, hi)
    return hi


def quantile_rows(n: int, scale: float = 1.0) -> torch.Tensor:
    """n × 1 exact N(0, scale²) quantiles: every p-value of the Gaussian tests is large for
    scale = 1 (mean exactly 0, KS distance ≈ 1/(2n))."""
    u = (np.arange(n) + 0.5) / n
    return torch.as_tensor(scale * stats.norm.ppf(u), dtype=F64)[:, None]


def test_assert_chi2_power_threshold_uses_its_level_beta_and_5_percent_default():
    """assert_chi2_power passes from the first sample size whose power (computed here from the
    Gamma law) reaches 1 − β at level alpha_per for a 5 % error, and raises one row below."""
    alpha = ALPHA / 3
    n = smallest_n(2, 0.05, alpha, BETA)
    assert_chi2_power(n, 2, alpha)
    with pytest.raises(UnderpoweredError):
        assert_chi2_power(n - 1, 2, alpha)
    n_half = smallest_n(2, 0.05, alpha, 0.5)  # β = 0.5 needs far fewer chains
    assert n_half < n - 1
    assert_chi2_power(n_half, 2, alpha, beta=0.5)
    with pytest.raises(UnderpoweredError):
        assert_chi2_power(n_half - 1, 2, alpha, beta=0.5)


def test_assert_chi2_power_message_states_the_detectable_error():
    """The message gives chains, d, the detectable covariance error (solved here on the Gamma
    law), the level and the requested error."""
    n, d, alpha, beta = 1000, 2, 1e-4, 0.01
    r = optimize.brentq(lambda r: min(gamma_power(n * d, 1 + r, alpha),
                                      gamma_power(n * d, 1 - r, alpha)) - (1 - beta),
                        1e-6, 0.999, xtol=1e-14)
    msg = (f"underpowered: 1000 chains × d=2 detect only a {r:.3%} covariance error at level "
           f"0.0001, need 5.0%")
    with pytest.raises(UnderpoweredError, match=f"^{msg}$"):
        assert_chi2_power(n, d, alpha, beta=beta)


def test_assert_gaussian_law_splits_alpha_over_three_pvalues():
    """The power check runs at level α/3 (three p-values), β and a 5 % error by default: it
    passes from exactly the smallest such design on, and raises one row below."""
    n = smallest_n(1, 0.05, ALPHA / 3, BETA)
    assert smallest_n(1, 0.05, ALPHA / 4, BETA) > n > smallest_n(1, 0.05, 3 * ALPHA, BETA)
    zero, one = torch.zeros(1, dtype=F64), torch.eye(1, dtype=F64)
    p = assert_gaussian_law(quantile_rows(n), zero, one)
    assert set(p) == {"chi2", "mean", "ks"}
    with pytest.raises(UnderpoweredError):
        assert_gaussian_law(quantile_rows(n - 1), zero, one)


def test_assert_gaussian_law_passes_beta_and_alpha_through():
    """A caller's β relaxes the power check; a caller's α is the level of the p-values."""
    zero, one = torch.zeros(1, dtype=F64), torch.eye(1, dtype=F64)
    n = smallest_n(1, 0.05, ALPHA / 3, 0.5)
    assert_gaussian_law(quantile_rows(n), zero, one, beta=0.5)
    with pytest.raises(UnderpoweredError):
        assert_gaussian_law(quantile_rows(n - 1), zero, one, beta=0.5)
    # Standard deviation 1 % too large: the χ² p-value (computed here) lies between the
    # default α/3 and 0.9/3, so only the caller's α = 0.9 rejects.
    x = quantile_rows(60_000, scale=1.01)
    s = float((x * x).sum())
    p_chi2 = 2 * min(stats.chi2.cdf(s, 60_000), stats.chi2.sf(s, 60_000))
    assert ALPHA / 3 < p_chi2 < 0.3
    assert_gaussian_law(x, zero, one)
    with pytest.raises(AssertionError, match="chi2"):
        assert_gaussian_law(x, zero, one, alpha=0.9)


def test_chi2_variance_power_takes_the_weaker_direction():
    """With few chains the shrunken covariance (1 − r) is the harder one to detect: the check
    compares the smaller of the two powers with 1 − β, and ≥ (power 1 meets β = 0)."""
    n, r, alpha = 10, 0.5, 0.01
    up, down = gamma_power(n, 1 + r, alpha), gamma_power(n, 1 - r, alpha)
    assert down < up
    for need in (down - 0.005, (down + up) / 2, up + 0.005):
        assert chi2_variance_power(n, 1, r, alpha, 1 - need) is (min(up, down) >= need)
    assert gamma_power(10_000, 1.5, 0.1) == gamma_power(10_000, 0.5, 0.1) == 1.0
    assert chi2_variance_power(10_000, 1, 0.5, 0.1, beta=0.0)


def test_assert_ks_power_boundary_message_and_two_sample_size():
    """D_min ≤ effect passes (equality included); the message states n, D_min, the level and
    the effect; n2 makes the effective size n·n2/(n + n2) (DKW–Massart, computed here)."""
    n, alpha = 5000, 1e-4
    d_min = math.sqrt(math.log(2 / alpha) / (2 * n)) + math.sqrt(math.log(2 / BETA) / (2 * n))
    assert ks_min_detectable(n, alpha) == pytest.approx(d_min, rel=1e-14)
    assert_ks_power(n, ks_min_detectable(n, alpha), alpha)
    msg = (f"underpowered: KS with n=5000 detects D ≥ {d_min:.4f} at level 0.0001, "
           f"the effect to catch is 0.0300")
    with pytest.raises(UnderpoweredError, match=f"^{msg}$"):
        assert_ks_power(n, 0.03, alpha)
    n_eff = n * 500 / (n + 500)
    d_two = math.sqrt(math.log(2 / alpha) / (2 * n_eff)) + math.sqrt(math.log(2 / BETA)
                                                                      / (2 * n_eff))
    assert_ks_power(n, d_two * 1.001, alpha, n2=500)
    with pytest.raises(UnderpoweredError):
        assert_ks_power(n, d_two * 0.999, alpha, n2=500)


def test_gaussian_scale_ks_distance_default_is_a_5_percent_variance_error():
    """Default r = 5 %: the sup of |Φ(t) − Φ(t/s)|, s² = 1.05, attained at t² = 2s²log s/(s²−1)."""
    s = math.sqrt(1.05)
    t = math.sqrt(2 * s * s * math.log(s) / (s * s - 1))
    assert gaussian_scale_ks_distance() == pytest.approx(
        stats.norm.cdf(t) - stats.norm.cdf(t / s), rel=1e-6)


def test_projection_ks_pvalues_float32_inputs_and_callers_generator():
    """Inputs of any float dtype are projected in float64 on the directions drawn from the
    caller's generator: the p-values equal scipy's two-sample KS on those projections."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(300, 2, 2, generator=g, dtype=F64)
    y = torch.randn(200, 2, 2, generator=g, dtype=F64) * 1.2
    dirs = random_directions(4, 4, torch.Generator().manual_seed(7)).numpy()
    px, py = x.flatten(1).numpy() @ dirs.T, y.flatten(1).numpy() @ dirs.T
    want = [stats.ks_2samp(px[:, i], py[:, i]).pvalue for i in range(4)]
    got = projection_ks_pvalues(x, y, 4, torch.Generator().manual_seed(7))
    assert list(got) == ["proj0", "proj1", "proj2", "proj3"]
    assert list(got.values()) == pytest.approx(want, rel=1e-9)
    for xs, ys in ((x.float(), y), (x, y.float())):  # float32 data is promoted
        p = projection_ks_pvalues(xs, ys, 4, torch.Generator().manual_seed(7))
        assert list(p.values()) == pytest.approx(want, rel=1e-2)


def test_projection_ks_pvalues_dimension_mismatch_message():
    """Data of different dimension (after flattening) is refused with both dimensions."""
    with pytest.raises(ValueError, match=r"^x, y: dimensions differ, 6 vs 4$"):
        projection_ks_pvalues(torch.zeros(5, 2, 3), torch.zeros(5, 4), 2, None)
