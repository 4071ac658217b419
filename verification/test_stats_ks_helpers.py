"""KS helpers of ebmref.stats against scipy and closed forms: the null law ``ks_test`` uses
(exact Kolmogorov law below 10⁴ samples, its limit law from 10⁴ on, as documented), the
argument range of ``dkwm_epsilon``, ``dilation_ks_distance`` on N(c, 1) (closed form) and the
contract of ``random_directions`` (unit rows drawn from the caller's generator)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from ebmref.stats import dilation_ks_distance, dkwm_epsilon, ks_test, random_directions


def _uniform_sample(n: int) -> np.ndarray:
    """A fixed sample whose KS distance to U(0, 1) is moderate (p-value ~ 0.1–0.9)."""
    return np.random.default_rng(n).uniform(size=n) ** 1.003


@pytest.mark.parametrize("n", [9_999, 10_000])
def test_ks_test_null_law_switches_at_ten_thousand(n):
    """p = P(D_n ≥ d) under Kolmogorov's exact law (scipy.stats.kstwo) for n < 10⁴ and under
    its limit law P(K ≥ √n d) (scipy.stats.kstwobign) for n ≥ 10⁴; the two differ at ~1e-3
    relative here, far above the 1e-9 tolerance."""
    u = _uniform_sample(n)
    d, p = ks_test(u, lambda x: x)
    srt = np.sort(u)
    i = np.arange(1, n + 1)
    assert d == pytest.approx(max((i / n - srt).max(), (srt - (i - 1) / n).max()), rel=1e-12)
    exact, limit = stats.kstwo.sf(d, n), stats.kstwobign.sf(math.sqrt(n) * d)
    assert abs(exact - limit) > 1e-4 * exact
    assert p == pytest.approx(exact if n < 10_000 else limit, rel=1e-9)


def test_dkwm_epsilon_requires_alpha_below_one():
    """α = 1 is refused (the band needs 0 < α < 1), with both arguments in the message."""
    assert dkwm_epsilon(10, 0.5) == pytest.approx(math.sqrt(math.log(4.0) / 20.0), rel=1e-15)
    with pytest.raises(ValueError,
                       match=r"^n, alpha: need n ≥ 1 and 0 < alpha < 1, got 10, 1\.0$"):
        dkwm_epsilon(10, 1.0)


@pytest.mark.parametrize("center", [0.0, 2.0])
def test_dilation_ks_distance_of_a_gaussian_about_its_mean(center):
    """Dilating N(c, 1) about c so that its variance grows 5 %: the KS distance is
    Φ(t) − Φ(t/s) with s² = 1.05 and t² = 2s² log s/(s² − 1) (a shrink to 0.95 gives 5 % more)."""
    s = math.sqrt(1.05)
    t = math.sqrt(2 * s * s * math.log(s) / (s * s - 1))
    want = stats.norm.cdf(t) - stats.norm.cdf(t / s)
    cdf = lambda x: stats.norm.cdf(x - center)
    got = dilation_ks_distance(cdf, center, center - 8, center + 8)
    assert got == pytest.approx(want, rel=1e-6)


def test_random_directions_are_unit_rows_from_the_callers_generator():
    """(n_proj, dim) float64 rows of norm 1, the same for the same seed whatever the global
    generator does in between."""
    d1 = random_directions(5, 3, torch.Generator().manual_seed(4))
    assert d1.shape == (5, 3) and d1.dtype == torch.float64
    assert d1.norm(dim=1).tolist() == pytest.approx([1.0] * 5, rel=1e-14)
    torch.randn(11)  # moves the global generator
    assert torch.equal(d1, random_directions(5, 3, torch.Generator().manual_seed(4)))
