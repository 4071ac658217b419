"""whiten / whitened_gaussian_tests of ebmref.stats against a whitening and p-values computed
here with numpy and scipy (Cholesky z = L⁻¹(x − m); two-sided χ²(M·d) of Σ‖z‖²; Bonferroni'd
two-sided z-test of √M·z̄), on data whose p-values lie well inside (0, 1), plus the shape
message and the NaN results for non-finite rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from ebmref.stats import whiten, whitened_gaussian_tests

F64 = torch.float64
MEAN = torch.tensor([1.0, -2.0], dtype=F64)
COV = torch.tensor([[2.0, 0.6], [0.6, 1.0]], dtype=F64)


def test_chi2_and_mean_pvalues_match_scipy():
    """Data drawn 3 % too wide and shifted by 0.08 sd: both p-values are small but not 0."""
    g = torch.Generator().manual_seed(11)
    lc = np.linalg.cholesky(COV.numpy())
    e = torch.randn(2000, 2, generator=g, dtype=F64) * 1.03 + torch.tensor([0.08, 0.0],
                                                                            dtype=F64)
    x = MEAN + e @ torch.as_tensor(lc).T
    z = np.linalg.solve(lc, (x - MEAN).numpy().T).T
    m, d = z.shape
    s = float((z * z).sum())
    p_chi2 = min(1.0, 2 * min(stats.chi2.cdf(s, m * d), stats.chi2.sf(s, m * d)))
    zbar = z.mean(0) * math.sqrt(m)
    p_mean = min(1.0, d * float((2 * stats.norm.sf(np.abs(zbar))).min()))
    assert 1e-8 < p_chi2 < 0.3 and 1e-8 < p_mean < 0.3
    got = whitened_gaussian_tests(x, MEAN, COV)
    assert got["chi2"] == pytest.approx((s / (m * d), p_chi2), rel=1e-9)
    assert got["mean"] == pytest.approx((float(np.abs(zbar).max()), p_mean), rel=1e-9)


def test_non_finite_rows_give_nan_for_every_test():
    """A NaN row makes the statistic and p-value of chi2, mean and ks all NaN."""
    x = torch.zeros(4, 2, dtype=F64)
    x[2, 1] = math.nan
    got = whitened_gaussian_tests(x, MEAN, COV)
    assert sorted(got) == ["chi2", "ks", "mean"]
    assert all(math.isnan(v) for pair in got.values() for v in pair)


def test_whiten_shape_message():
    """Mismatched shapes are refused with the three shapes."""
    with pytest.raises(ValueError, match=r"^x, mean, cov: expected \(M, d\), \(d,\), \(d, d\), "
                                         r"got \(5, 2\), \(3,\), \(2, 2\)$"):
        whiten(torch.zeros(5, 2), torch.zeros(3), torch.eye(2))
