"""Calibrated statistical helpers: exact-null p-values, Bonferroni and design-based power.

A stochastic test of a sampler or an estimator must be calibrated (correct code fails rarely,
at a rate the test states) and sensitive (broken code fails, and the test proves it has the
samples to notice). The rules every stochastic test of ``verification/`` and every check of
:mod:`ebmref.conformance` follows:

1. many independent chains, batched, in float64, with one seeded ``torch.Generator``; final
   states are iid across chains;
2. statistics whose null law is exact (χ², normal, Kolmogorov–Smirnov, binomial; for a Gaussian
   target whiten with the exact law, z = L⁻¹(x − m));
3. a total false-failure rate α per test (default :data:`ALPHA` = 1e-6), stated with the test,
   split over its m p-values by Bonferroni (fail iff min p < α/m) — :func:`assert_pvalues`;
4. power asserted inside the test and computed from the design (known variances, sample
   sizes, or a pilot run with its own fixed seed), never from the sample under test: at the
   sample size used, the test detects the effect it exists to catch (by default a 5 %
   variance error of a Gaussian target) with probability ≥ 1 − β — :func:`chi2_variance_power`,
   :func:`ks_min_detectable`, :func:`z_test_power`; a rare event is never asserted not to
   happen: its rate is tested against a bound;
5. a broken variant (wrong sign, missing factor, no Metropolis step, …) run through the same
   assertion and expected to fail; a kernel that does nothing conserves every law, so
   stationarity tests carry a movement guard;
6. the real failure rate is measured over fresh seeds and must match the stated α (the
   suite's ``python -m verification.seed_sweep``).

Conventions: in the power helpers ``alpha`` is the level of *one* p-value, i.e. the total α
already divided by the number m of p-values the test passes to :func:`assert_pvalues`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from scipy import optimize, stats
from torch import Tensor

ALPHA = 1e-6
"""Default total false-failure rate of one stochastic test."""

BETA = 1e-3
"""Default miss probability for the power assertions."""


def _np(x) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


# --------------------------------------------------------------------------- p-values


def whiten(x: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
    """z = L⁻¹(x − m) with C = L Lᵀ: iid N(0, I) rows when x ~ N(m, C)."""
    x = torch.as_tensor(x, dtype=torch.float64)
    mean = torch.as_tensor(mean, dtype=torch.float64)
    cov = torch.as_tensor(cov, dtype=torch.float64)
    if x.ndim != 2 or mean.shape != x.shape[1:] or cov.shape != (x.shape[1], x.shape[1]):
        raise ValueError(f"x, mean, cov: expected (M, d), (d,), (d, d), got "
                         f"{tuple(x.shape)}, {tuple(mean.shape)}, {tuple(cov.shape)}")
    L = torch.linalg.cholesky(0.5 * (cov + cov.T))
    return torch.linalg.solve_triangular(L, (x - mean).T, upper=False).T


def whitened_gaussian_tests(x: Tensor, mean: Tensor, cov: Tensor) -> dict[str, tuple[float, float]]:
    """{name: (statistic, p-value)} for the hypothesis "rows of x are iid N(mean, cov)".

    With z = L⁻¹(x − m), M rows and dimension d:

    * ``chi2``: Σᵢ‖zᵢ‖² ~ χ²(M·d), two-sided (catches variance too large *and* too small);
      statistic reported as Σᵢ‖zᵢ‖²/(M·d) (1 in expectation);
    * ``mean``: √M·z̄ⱼ ~ N(0, 1) per coordinate, two-sided, Bonferroni'd over the d
      coordinates inside (min(1, d·min pⱼ)); statistic maxⱼ √M|z̄ⱼ|;
    * ``ks``: Kolmogorov–Smirnov of ‖zᵢ‖² against χ²(d) (shape of the radial law); statistic
      the KS distance D.

    Non-finite rows make every p-value NaN (a failure for :func:`assert_pvalues`).
    """
    z = whiten(x, mean, cov)
    m, d = z.shape
    if not bool(torch.isfinite(z).all()):
        nan = math.nan
        return {"chi2": (nan, nan), "mean": (nan, nan), "ks": (nan, nan)}
    s = float((z * z).sum())
    k = m * d
    p_chi2 = min(1.0, 2.0 * min(stats.chi2.cdf(s, k), stats.chi2.sf(s, k)))
    zbar = _np(z.mean(0)) * math.sqrt(m)
    p_mean = min(1.0, d * float(np.min(2.0 * stats.norm.sf(np.abs(zbar)))))
    r2 = _np((z * z).sum(1))
    ks = stats.kstest(r2, stats.chi2(d).cdf)
    return {"chi2": (s / k, float(p_chi2)), "mean": (float(np.abs(zbar).max()), p_mean),
            "ks": (float(ks.statistic), float(ks.pvalue))}


def whitened_gaussian_pvalues(x: Tensor, mean: Tensor, cov: Tensor) -> dict[str, float]:
    """p-values for the hypothesis "rows of x are iid N(mean, cov)" (rule 2 above): the
    ``chi2``, ``mean`` and ``ks`` tests of :func:`whitened_gaussian_tests`."""
    return {k: p for k, (_, p) in whitened_gaussian_tests(x, mean, cov).items()}


def ks_test(x_1d, cdf: Callable) -> tuple[float, float]:
    """(D, p): one-sample Kolmogorov–Smirnov distance of the samples ``x_1d`` to an exact CDF
    and its p-value (D's null law is Kolmogorov's, exact for a continuous CDF).

    ``cdf`` may take a tensor (e.g. :meth:`ebmref.energy.DoubleWell.cdf`, which wants shape
    (n, 1)) or a numpy array; the samples are passed in the shape given. NaN samples give
    (NaN, NaN).
    """
    if not np.isfinite(_np(x_1d)).all():
        return math.nan, math.nan
    u = _np(cdf(x_1d)).ravel()
    # For n ≥ 10⁴ use the Kolmogorov limit law: accurate there and conservative (finite-n
    # tails are lighter, cf. Stephens' (√n + 0.12 + 0.11/√n) correction), and it avoids
    # scipy's slow exact tail when p is tiny (a broken kernel).
    method = "asymp" if u.size >= 10_000 else "auto"
    res = stats.kstest(u, "uniform", method=method)
    return float(res.statistic), float(res.pvalue)


def ks_pvalue(x_1d, cdf: Callable) -> float:
    """One-sample KS p-value of the samples ``x_1d`` against an exact CDF (:func:`ks_test`)."""
    return ks_test(x_1d, cdf)[1]


def dkwm_epsilon(n: int, alpha: float) -> float:
    """DKW–Massart band: P(sup|F̂ₙ − F| > ε) ≤ α for ε = √(ln(2/α) / (2n))."""
    if n < 1 or not (0 < alpha < 1):
        raise ValueError(f"n, alpha: need n ≥ 1 and 0 < alpha < 1, got {n}, {alpha}")
    return math.sqrt(math.log(2.0 / alpha) / (2.0 * n))


def random_directions(n_proj: int, dim: int, generator: torch.Generator | None) -> Tensor:
    """n_proj uniformly random unit vectors in ℝ^dim, shape (n_proj, dim)."""
    u = torch.randn(n_proj, dim, generator=generator, dtype=torch.float64)
    return u / u.norm(dim=1, keepdim=True)


def projection_ks_pvalues(x: Tensor, y: Tensor, n_proj: int,
                          generator: torch.Generator | None) -> dict[str, float]:
    """Two-sample KS p-values of x and y projected on ``n_proj`` random unit directions.

    Each p-value is exact under "x and y are iid from the same law" (the directions are drawn
    independently of the data); combine them with :func:`assert_pvalues` (Bonferroni).
    """
    x = torch.as_tensor(x, dtype=torch.float64).flatten(1)
    y = torch.as_tensor(y, dtype=torch.float64).flatten(1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x, y: dimensions differ, {x.shape[1]} vs {y.shape[1]}")
    dirs = random_directions(n_proj, x.shape[1], generator)
    px, py = _np(x @ dirs.T), _np(y @ dirs.T)
    return {f"proj{i}": float(stats.ks_2samp(px[:, i], py[:, i]).pvalue) for i in range(n_proj)}


def normal_pvalues(estimate, expected, standard_error) -> np.ndarray:
    """Two-sided p-values of z = (estimate − expected)/se under N(0, 1), element-wise (CLT)."""
    z = (_np(estimate) - _np(expected)) / _np(standard_error)
    return 2.0 * stats.norm.sf(np.abs(z))


def assert_pvalues(pvalues: Mapping[str, float] | Sequence[float], alpha: float = ALPHA) -> None:
    """Bonferroni: fail iff min p < α/m; total false-failure rate ≤ α. Message lists them."""
    if isinstance(pvalues, Mapping):
        items = list(pvalues.items())
    else:
        items = [(str(i), float(p)) for i, p in enumerate(np.ravel(_np(pvalues)))]
    if not items:
        raise ValueError("pvalues: need at least one p-value")
    m = len(items)
    threshold = alpha / m
    bad = [(k, p) for k, p in items if not (p >= threshold)]  # NaN counts as a failure
    if bad:
        listing = ", ".join(f"{k}={p:.3g}" for k, p in items)
        raise AssertionError(f"p-value(s) below α/m = {alpha:.1e}/{m} = {threshold:.3g}: "
                             f"{', '.join(k for k, _ in bad)} (all: {listing})")


# --------------------------------------------------------------------------- power


def chi2_power(n_chains: int, d: int, scale: float, alpha: float) -> float:
    """Power of the two-sided χ²(M·d) test at level ``alpha`` when the true covariance is
    ``scale`` × the hypothesised one: Σ‖zᵢ‖² ~ scale · χ²(M·d)."""
    k = n_chains * d
    lo, hi = stats.chi2.ppf(alpha / 2, k), stats.chi2.isf(alpha / 2, k)
    return float(stats.chi2.sf(hi / scale, k) + stats.chi2.cdf(lo / scale, k))


def chi2_variance_power(n_chains: int, d: int, rel_error: float, alpha: float,
                        beta: float = BETA) -> bool:
    """Can the χ² test (level ``alpha`` for this one p-value) detect a covariance scaled by
    1 + rel_error with probability ≥ 1 − β?  Checked for both 1 + |r| and 1 − |r|."""
    r = abs(rel_error)
    return min(chi2_power(n_chains, d, 1 + r, alpha),
               chi2_power(n_chains, d, 1 - r, alpha)) >= 1 - beta


def chi2_detectable_rel_error(n_chains: int, d: int, alpha: float, beta: float = BETA) -> float:
    """Smallest |r| such that a covariance scaled by 1 ± r is detected with prob ≥ 1 − β."""
    f = lambda r: min(chi2_power(n_chains, d, 1 + r, alpha),
                      chi2_power(n_chains, d, 1 - r, alpha)) - (1 - beta)
    if f(0.999) < 0:
        return math.inf  # not even a factor 2 (or 1/1000) is reliably detected
    return float(optimize.brentq(f, 1e-9, 0.999))


def ks_min_detectable(n: int, alpha: float, beta: float = BETA, n2: int | None = None) -> float:
    """D_min = ε(n, α) + ε(n, β): a true KS distance ≥ D_min is detected with prob ≥ 1 − β.

    One-sample by default; for a two-sample test with sizes n and n2 the DKW bound applies
    with the effective size n·n2/(n + n2).
    """
    n_eff = n if n2 is None else n * n2 / (n + n2)
    return dkwm_epsilon(n_eff, alpha) + dkwm_epsilon(n_eff, beta)


def ks_distance(cdf_a: Callable[[np.ndarray], np.ndarray],
                cdf_b: Callable[[np.ndarray], np.ndarray],
                lo: float, hi: float, n_grid: int = 20001) -> float:
    """sup |F_a − F_b| over a fine grid of [lo, hi] (the KS distance between two laws)."""
    t = np.linspace(lo, hi, n_grid)
    return float(np.max(np.abs(cdf_a(t) - cdf_b(t))))


def gaussian_scale_ks_distance(rel_variance_error: float = 0.05) -> float:
    """KS distance between N(0, 1) and N(0, 1 + r): the effect of an r variance error on a
    1-D Gaussian (≈ 0.0059 for r = 5 %)."""
    s = math.sqrt(1 + rel_variance_error)
    return ks_distance(stats.norm.cdf, lambda t: stats.norm.cdf(t / s), -8, 8)


def z_test_power(effect, standard_error, alpha: float, beta: float = BETA) -> bool:
    """Does a two-sided z-test at level ``alpha`` detect the mean shift ``effect`` of every
    given coordinate with probability ≥ 1 − β?

    True iff |effect|/se ≥ z_{1−α/2} + z_{1−β} for every entry (a sufficient condition).
    """
    ratio = np.abs(_np(effect)) / _np(standard_error)
    needed = stats.norm.isf(alpha / 2) + stats.norm.isf(beta)
    return bool(np.all(ratio >= needed))


def z_detectable(standard_error, alpha: float, beta: float = BETA):
    """Smallest mean shift detected with probability ≥ 1 − β by the two-sided z-test at level
    ``alpha`` (for messages of UnderpoweredError)."""
    return (stats.norm.isf(alpha / 2) + stats.norm.isf(beta)) * _np(standard_error)


# --------------------------------------------------------------------------- composite checks


class UnderpoweredError(Exception):
    """The test's sample size cannot detect the effect it exists to catch. Deliberately not an
    AssertionError, so ``pytest.raises(AssertionError)`` around a broken variant cannot be
    satisfied by a power failure."""


def assert_chi2_power(n_chains: int, d: int, alpha_per: float, rel_error: float = 0.05,
                      beta: float = BETA) -> None:
    """Fail unless the χ² test detects a ``rel_error`` covariance error (prob ≥ 1 − β)."""
    if not chi2_variance_power(n_chains, d, rel_error, alpha_per, beta):
        raise UnderpoweredError(
            f"underpowered: {n_chains} chains × d={d} detect only a "
            f"{chi2_detectable_rel_error(n_chains, d, alpha_per, beta):.3%} covariance error at "
            f"level {alpha_per:.2g}, need {rel_error:.1%}")


def assert_gaussian_law(x: Tensor, mean: Tensor, cov: Tensor, alpha: float = ALPHA,
                        rel_error: float = 0.05, beta: float = BETA) -> dict[str, float]:
    """Assert rows of x are iid N(mean, cov) with false-failure rate ``alpha`` (3 p-values of
    :func:`whitened_gaussian_pvalues`), after asserting the test detects a ``rel_error``
    covariance error with probability ≥ 1 − β. Returns the p-values."""
    m, d = x.shape
    assert_chi2_power(m, d, alpha / 3, rel_error, beta)
    p = whitened_gaussian_pvalues(x, mean, cov)
    assert_pvalues(p, alpha)
    return p


def dilation_ks_distance(cdf: Callable[[np.ndarray], np.ndarray], center: float, lo: float,
                         hi: float, rel_variance_error: float = 0.05) -> float:
    """KS distance between a 1-D law and the same law dilated about ``center`` so that its
    variance grows by ``rel_variance_error``: the effect of a 5 % variance error on a
    non-Gaussian target (for N(0, 1) it equals :func:`gaussian_scale_ks_distance`)."""
    s = math.sqrt(1 + rel_variance_error)
    return ks_distance(cdf, lambda t: cdf(center + (t - center) / s), lo, hi)


def assert_ks_power(n: int, effect: float, alpha_per: float, beta: float = BETA,
                    n2: int | None = None) -> None:
    """Fail unless D_min = ε(n, α/m) + ε(n, β) ≤ ``effect`` (rule 4 of the module docstring)."""
    d_min = ks_min_detectable(n, alpha_per, beta, n2)
    if d_min > effect:
        raise UnderpoweredError(f"underpowered: KS with n={n} detects D ≥ {d_min:.4f} at level "
                             f"{alpha_per:.2g}, the effect to catch is {effect:.4f}")
