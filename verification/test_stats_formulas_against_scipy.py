"""ebmref.stats against independent computations: every helper's formula recomputed with
numpy/scipy (whitening, the three whitened Gaussian tests, the KS test and its null law, the
DKW band, normal p-values, χ² power and its detectable error, the z-test power, the dilation
KS distance in closed form), its argument checks with their exact messages at their exact
boundaries, and its documented defaults. Deterministic: fixed data, no stochastic assertion."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from scipy import optimize, stats

from ebmref import stats as es

COV = np.array([[2.0, 0.6, -0.3], [0.6, 1.0, 0.2], [-0.3, 0.2, 0.5]])
MEAN = np.array([0.3, -1.1, 2.7])  # not float32 numbers: a float32 path would show


def _data(m: int = 7) -> np.ndarray:
    """A fixed (m, 3) sample, not Gaussian on purpose: every statistic lies off its bounds."""
    i = np.arange(m * 3, dtype=np.float64).reshape(m, 3)
    return MEAN + np.sin(1.7 * i + 0.3) * np.array([1.3, 0.8, 0.9])


def _whiten_np(x, mean, cov):
    return np.linalg.solve(np.linalg.cholesky(cov), (x - mean).T).T


def test_whiten_is_the_inverse_cholesky_factor_in_float64():
    """z = L⁻¹(x − m) with C = L Lᵀ, in float64 whatever the input dtype."""
    x = _data()
    z = es.whiten(torch.tensor(x, dtype=torch.float32), torch.tensor(MEAN, dtype=torch.float32),
                  torch.tensor(COV, dtype=torch.float32))
    assert z.dtype == torch.float64
    x32, m32, c32 = (np.asarray(v, np.float32).astype(np.float64) for v in (x, MEAN, COV))
    np.testing.assert_allclose(z.numpy(), _whiten_np(x32, m32, c32), rtol=1e-12, atol=1e-12)
    # Lists are accepted as well (as_tensor), and give the same numbers.
    z2 = es.whiten(x.tolist(), MEAN.tolist(), COV.tolist())
    np.testing.assert_allclose(z2.numpy(), _whiten_np(x, MEAN, COV), rtol=1e-12, atol=1e-12)


def test_whiten_uses_the_symmetric_part_of_the_covariance():
    """A slightly asymmetric covariance is read as ½(C + Cᵀ) (not its lower triangle)."""
    skew = np.array([[0.0, 0.1, 0.0], [-0.1, 0.0, 0.05], [0.0, -0.05, 0.0]])
    z = es.whiten(_data(), MEAN, COV + skew)
    np.testing.assert_allclose(z.numpy(), _whiten_np(_data(), MEAN, COV), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("x,mean,cov,got", [
    (np.zeros((4, 2, 3)), np.zeros((2, 3)), np.eye(2), "(4, 2, 3), (2, 3), (2, 2)"),
    (np.zeros((4, 3)), np.zeros(2), np.eye(3), "(4, 3), (2,), (3, 3)"),
    (np.zeros((4, 3)), np.zeros(3), np.eye(2), "(4, 3), (3,), (2, 2)"),
    (np.zeros((4, 3)), np.zeros(3), np.zeros((3, 4)), "(4, 3), (3,), (3, 4)"),
])
def test_whiten_refuses_each_inconsistent_shape(x, mean, cov, got):
    """Each of x (M, d), mean (d,), cov (d, d) is checked on its own, with all shapes quoted."""
    msg = f"x, mean, cov: expected (M, d), (d,), (d, d), got {got}"
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        es.whiten(x, mean, cov)


def _reference_tests(x, mean, cov):
    z = _whiten_np(x, mean, cov)
    m, d = z.shape
    s = float((z * z).sum())
    k = m * d
    p_chi2 = 2 * min(stats.chi2(k).cdf(s), stats.chi2(k).sf(s))
    zbar = np.sqrt(m) * z.mean(axis=0)
    p_mean = min(1.0, d * np.min(2 * stats.norm.sf(np.abs(zbar))))
    ks = stats.kstest((z * z).sum(axis=1), "chi2", args=(d,))
    return {"chi2": (s / k, p_chi2), "mean": (np.abs(zbar).max(), p_mean),
            "ks": (ks.statistic, ks.pvalue)}


@pytest.mark.parametrize("shift", [0.0, 0.4, -2.5])
def test_whitened_gaussian_tests_match_a_numpy_scipy_recomputation(shift):
    """Statistics and p-values of chi2, mean and ks equal the recomputation from the docstring
    (χ²(M·d) two-sided, Bonferroni'd coordinate z-tests, KS of ‖z‖² against χ²(d))."""
    x = _data(7) + shift * np.array([1.0, -0.5, 0.3])
    got = es.whitened_gaussian_tests(torch.tensor(x), torch.tensor(MEAN), torch.tensor(COV))
    ref = _reference_tests(x, MEAN, COV)
    assert list(got) == ["chi2", "mean", "ks"]
    for name in ref:
        assert all(isinstance(v, float) for v in got[name])
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-9, atol=1e-300)
    assert es.whitened_gaussian_pvalues(x, MEAN, COV) == {k: v[1] for k, v in got.items()}


def test_whitened_mean_pvalue_is_capped_at_one():
    """With every coordinate mean near 0, d · min p exceeds 1 and is reported as 1."""
    z = np.array([[0.1, -0.2], [-0.1, 0.2], [0.05, 0.01], [-0.05, -0.01]])
    got = es.whitened_gaussian_tests(torch.tensor(z), torch.zeros(2), torch.eye(2))
    assert 2 * np.min(2 * stats.norm.sf(np.abs(2 * z.mean(0)))) > 1
    assert got["mean"][1] == 1.0
    assert got["mean"][0] == pytest.approx(2 * np.abs(z.mean(0)).max(), rel=1e-12)


def test_whitened_tests_of_non_finite_rows_are_all_nan():
    """A non-finite row makes every statistic and p-value NaN, under the same three names."""
    x = _data(5)
    x[2, 1] = np.inf
    got = es.whitened_gaussian_tests(torch.tensor(x), torch.tensor(MEAN), torch.tensor(COV))
    assert list(got) == ["chi2", "mean", "ks"]
    assert all(math.isnan(v) for pair in got.values() for v in pair)


def test_ks_test_is_scipys_kolmogorov_smirnov_of_the_pit_values():
    """(D, p) is scipy's one-sample KS test of F(x) against U(0, 1); the cdf gets x as given."""
    x = torch.tensor([[-1.3], [0.2], [0.7], [2.2], [-0.4], [0.05], [1.1]], dtype=torch.float64)
    seen = []

    def cdf(v):
        seen.append(tuple(v.shape))
        return stats.logistic.cdf(v.numpy())

    d, p = es.ks_test(x, cdf)
    ref = stats.kstest(x.numpy().ravel(), "logistic", method="exact")
    assert seen == [(7, 1)]
    assert (d, p) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-12)
    assert es.ks_pvalue(x, cdf) == pytest.approx(ref.pvalue, rel=1e-12)
    assert isinstance(d, float) and isinstance(p, float)


@pytest.mark.parametrize("n,method", [(9_999, "exact"), (10_000, "asymp")])
def test_ks_test_uses_the_limit_law_from_ten_thousand_samples(n, method):
    """Below 10⁴ samples the p-value is the exact finite-n law, from 10⁴ on Kolmogorov's limit."""
    u = (np.arange(n) + 0.5) / n
    x = stats.norm.ppf(u ** 1.03)  # √n · D ≈ 1: the two laws' p-values differ visibly
    d, p = es.ks_test(x, stats.norm.cdf)
    ref = stats.kstest(x, stats.norm.cdf, method=method)
    other = stats.kstest(x, stats.norm.cdf, method="asymp" if method == "exact" else "exact")
    assert abs(ref.pvalue - other.pvalue) > 1e-4
    assert (d, p) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-10)


def test_ks_test_of_nan_samples_is_nan_without_calling_the_cdf():
    """NaN samples give (NaN, NaN)."""
    d, p = es.ks_test(np.array([0.1, np.nan, 0.3]), stats.norm.cdf)
    assert math.isnan(d) and math.isnan(p)


def test_dkwm_epsilon_formula_and_its_exact_range():
    """ε = √(ln(2/α)/(2n)); n = 1 and α just inside (0, 1) are accepted, the rest refused."""
    for n, alpha in [(1, 0.05), (7, 1e-6), (1000, 0.5), (3, 1 - 1e-12), (2, 1e-300)]:
        assert es.dkwm_epsilon(n, alpha) == pytest.approx(
            math.sqrt(math.log(2 / alpha) / (2 * n)), rel=1e-14)
    for n, alpha in [(0, 0.05), (-1, 0.05), (5, 0.0), (5, 1.0), (5, 1.5), (5, -0.1)]:
        msg = f"n, alpha: need n ≥ 1 and 0 < alpha < 1, got {n}, {alpha}"
        with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
            es.dkwm_epsilon(n, alpha)


def test_ks_min_detectable_one_and_two_sample_sizes():
    """D_min = ε(n_eff, α) + ε(n_eff, β), n_eff = n (one sample) or n·n2/(n + n2); β defaults
    to BETA = 1e-3."""
    def eps(n, a):
        return math.sqrt(math.log(2 / a) / (2 * n))
    assert es.BETA == 1e-3
    assert es.ks_min_detectable(400, 1e-4) == pytest.approx(eps(400, 1e-4) + eps(400, 1e-3),
                                                            rel=1e-14)
    assert es.ks_min_detectable(400, 1e-4, 0.02) == pytest.approx(
        eps(400, 1e-4) + eps(400, 0.02), rel=1e-14)
    n_eff = 300 * 100 / 400
    assert es.ks_min_detectable(300, 1e-4, 0.02, n2=100) == pytest.approx(
        eps(n_eff, 1e-4) + eps(n_eff, 0.02), rel=1e-14)


def test_normal_pvalues_two_sided_in_float64():
    """p = 2 Φ(−|est − exp|/se) element-wise, computed in float64 from float32 input too."""
    est = np.array([1.3, -0.2, 4.1], dtype=np.float32)
    exp = np.array([1.0, 0.5, 3.0], dtype=np.float32)
    se = np.array([0.2, 0.3, 0.5], dtype=np.float32)
    ref = 2 * stats.norm.cdf(-np.abs((est.astype(float) - exp) / se.astype(float)))
    got = es.normal_pvalues(est, exp, se)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=1e-13)
    got_t = es.normal_pvalues(torch.tensor(est), torch.tensor(exp), torch.tensor(se))
    np.testing.assert_allclose(got_t, ref, rtol=1e-13)


def test_assert_pvalues_threshold_is_inclusive_and_message_lists_all():
    """Pass iff every p ≥ α/m (p = α/m passes); the failure names the bad ones and all."""
    es.assert_pvalues({"a": 0.25, "b": 0.9}, alpha=0.5)
    es.assert_pvalues([0.25, 0.9], alpha=0.5)
    msg = ("p-value(s) below α/m = 1.0e-01/4 = 0.025: b, d "
           "(all: a=0.5, b=0.0249, c=0.9, d=nan)")
    with pytest.raises(AssertionError, match=f"^{re.escape(msg)}$"):
        es.assert_pvalues({"a": 0.5, "b": 0.0249, "c": 0.9, "d": math.nan}, alpha=0.1)
    msg = "p-value(s) below α/m = 1.0e-06/3 = 3.33e-07: 1 (all: 0=0.5, 1=1e-07, 2=0.9)"
    with pytest.raises(AssertionError, match=f"^{re.escape(msg)}$"):
        es.assert_pvalues(torch.tensor([0.5, 1e-7, 0.9], dtype=torch.float64))
    with pytest.raises(AssertionError, match=r"^p-value\(s\) below .*: 0 \(all: 0=1e-07\)$"):
        es.assert_pvalues(np.array([[1e-7]]))


@pytest.mark.parametrize("empty", [{}, [], np.array([])])
def test_assert_pvalues_needs_one_pvalue(empty):
    """An empty mapping or sequence is refused, not passed."""
    with pytest.raises(ValueError, match="^pvalues: need at least one p-value$"):
        es.assert_pvalues(empty)


def _power_ref(k, scale, alpha):
    law = stats.chi2(k, scale=scale)  # the law of Σ‖zᵢ‖² when Cov is scaled by `scale`
    return law.sf(stats.chi2(k).isf(alpha / 2)) + law.cdf(stats.chi2(k).ppf(alpha / 2))


@pytest.mark.parametrize("m,d,scale,alpha", [
    (3, 2, 1.0, 0.1), (3, 2, 1.4, 0.1), (3, 2, 0.5, 0.1), (40, 5, 1.1, 1e-4), (40, 5, 0.9, 1e-4),
])
def test_chi2_power_is_the_two_tailed_rejection_probability(m, d, scale, alpha):
    """Power of the two-sided χ²(M·d) test when Σ‖z‖² ~ scale·χ²(M·d); α when scale = 1."""
    got = es.chi2_power(m, d, scale, alpha)
    assert isinstance(got, float)
    assert got == pytest.approx(_power_ref(m * d, scale, alpha), rel=1e-10)
    if scale == 1.0:
        assert got == pytest.approx(alpha, rel=1e-10)


def test_chi2_detectable_rel_error_solves_the_power_equation():
    """The returned r makes min(power(1 + r), power(1 − r)) = 1 − β (β given or BETA)."""
    # The last design aims at a low power (β = 0.995), where shrinking is the weaker direction.
    for m, d, alpha, beta in [(200, 3, 1e-5, 0.01), (500, 2, 1e-6, es.BETA),
                              (1000, 1, 1e-4, 0.995)]:
        r = (es.chi2_detectable_rel_error(m, d, alpha, beta) if beta != es.BETA
             else es.chi2_detectable_rel_error(m, d, alpha))
        k = m * d
        lo = min(_power_ref(k, 1 + r, alpha), _power_ref(k, 1 - r, alpha))
        assert lo == pytest.approx(1 - beta, abs=1e-8)
        assert 0 < r < 0.999
        assert min(_power_ref(k, 1 + 0.99 * r, alpha),
                   _power_ref(k, 1 - 0.99 * r, alpha)) < 1 - beta


def test_chi2_detectable_rel_error_is_infinite_when_nothing_is_detected():
    """With too few chains even a factor 2 (or 1/1000) is missed: the answer is inf."""
    assert es.chi2_detectable_rel_error(1, 1, 1e-6) == math.inf
    assert min(_power_ref(1, 1.999, 1e-6), _power_ref(1, 0.001, 1e-6)) < 1 - es.BETA


def test_chi2_detectable_rel_error_at_exactly_the_wanted_power_is_finite():
    """A design that detects a factor 2 (and 1/1000) with probability exactly 1 − β answers
    r = 0.999 (the bound qualifies: "prob ≥ 1 − β"), not inf."""
    power = min(es.chi2_power(10, 1, 1.999, 0.1), es.chi2_power(10, 1, 0.001, 0.1))
    # power ∈ [0.5, 1), so 1 − power and 1 − (1 − power) are exact: f(0.999) is exactly 0.
    assert 0.5 <= power < 1
    assert es.chi2_detectable_rel_error(10, 1, 0.1, 1 - power) == pytest.approx(0.999, abs=1e-9)


def test_ks_distance_default_grid_and_sup():
    """sup |F_a − F_b| over np.linspace(lo, hi, 20001) by default (n_grid otherwise)."""
    grids = []

    def cdf_a(t):
        grids.append(t)
        return stats.norm.cdf(t)

    got = es.ks_distance(cdf_a, stats.logistic.cdf, -3.0, 5.0)
    np.testing.assert_array_equal(grids[0], np.linspace(-3.0, 5.0, 20001))
    t = grids[0]
    assert got == np.max(np.abs(stats.norm.cdf(t) - stats.logistic.cdf(t)))
    es.ks_distance(cdf_a, stats.logistic.cdf, -1.0, 2.0, n_grid=11)
    np.testing.assert_array_equal(grids[1], np.linspace(-1.0, 2.0, 11))


def _gauss_dilation_ks(s: float) -> float:
    """KS distance between N(0, 1) and N(0, s²) in closed form: the CDFs cross the
    difference's extremum at t² = 2 s² log s / (s² − 1)."""
    t = math.sqrt(2 * s * s * math.log(s) / (s * s - 1))
    return abs(stats.norm.cdf(t) - stats.norm.cdf(t / s))


@pytest.mark.parametrize("rel", [0.05, 0.3, -0.2])
def test_dilation_ks_distance_of_a_gaussian_in_closed_form(rel):
    """N(c, σ²) dilated about c to variance (1 + r)σ²: the closed-form KS distance, for a
    variance grown (r > 0) and shrunk (r < 0)."""
    c, sd = 1.5, 0.7
    got = es.dilation_ks_distance(lambda t: stats.norm.cdf(t, c, sd), c, c - 9 * sd,
                                  c + 9 * sd, rel)
    assert got == pytest.approx(_gauss_dilation_ks(math.sqrt(1 + rel)), abs=1e-8)


def test_dilation_ks_distance_default_is_a_5_percent_variance_error():
    """rel_variance_error defaults to 0.05 (≈ 0.0059 for any Gaussian about its mean)."""
    got = es.dilation_ks_distance(stats.norm.cdf, 0.0, -8.0, 8.0)
    assert got == pytest.approx(_gauss_dilation_ks(math.sqrt(1.05)), abs=1e-8)
    assert got == pytest.approx(0.0059026029613, abs=1e-8)


def test_dilation_ks_distance_about_an_off_centre_point_of_a_skewed_law():
    """A Gumbel law dilated about a point c away from its centre (X ↦ c + s(X − c)): the sup of
    |F(t) − F(c + (t − c)/s)| found by a bounded scalar optimiser."""
    c, s = 1.2, math.sqrt(1.3)

    def minus_gap(t):
        return -abs(stats.gumbel_r.cdf(t) - stats.gumbel_r.cdf(c + (t - c) / s))

    best = min((optimize.minimize_scalar(minus_gap, bounds=b, method="bounded",
                                         options={"xatol": 1e-10})
                for b in [(-4.0, c), (c, 12.0)]), key=lambda r: r.fun)
    got = es.dilation_ks_distance(stats.gumbel_r.cdf, c, -6.0, 20.0, 0.3)
    # The grid (h = 1.3e-3) misses a smooth sup by at most h² max|D''| / 8 ≲ 1e-7.
    assert got == pytest.approx(-best.fun, abs=1e-7)


def test_z_test_power_boundary_and_scaling_by_the_standard_error():
    """Detected iff |effect|/se ≥ z_{1−α/2} + z_{1−β} for every entry, equality included;
    β defaults to BETA; z_detectable is that threshold times se."""
    alpha, beta = 1e-3, 0.05
    need = stats.norm.isf(alpha / 2) + stats.norm.isf(beta)
    assert es.z_test_power(need, 1.0, alpha, beta)
    assert not es.z_test_power(np.nextafter(need, 0), 1.0, alpha, beta)
    assert es.z_test_power(-need, 1.0, alpha, beta)
    se = np.array([0.5, 2.0])
    assert es.z_test_power(need * se * (1 + 1e-9), se, alpha, beta)
    assert not es.z_test_power(need * se * np.array([1 + 1e-9, 1 - 1e-9]), se, alpha, beta)
    need_default = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(1 - es.BETA)
    assert es.z_test_power(need_default * (1 + 1e-9), 1.0, alpha)
    assert not es.z_test_power(need_default * (1 - 1e-9), 1.0, alpha)
    np.testing.assert_allclose(es.z_detectable(se, alpha, beta), need * se, rtol=1e-12)
    np.testing.assert_allclose(es.z_detectable(torch.tensor(se), alpha), need_default * se,
                               rtol=1e-12)
