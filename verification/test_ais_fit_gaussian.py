"""fit_gaussian (ebmref.ais): N(mean, inflate² · cov + jitter·I) of the data's rows, checked
against numpy's sample mean and covariance for the default and a non-trivial inflation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ebmref.ais import fit_gaussian

F64 = torch.float64


@pytest.mark.parametrize("inflate", [1.0, 3.0])
def test_fit_gaussian_mean_and_inflated_covariance(inflate):
    """Mean = row mean; covariance = inflate² · unbiased sample covariance + 1e-6·I (default
    jitter), to float64 round-off."""
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    x[:, 1] += 0.5 * x[:, 0]
    g = fit_gaussian(x) if inflate == 1.0 else fit_gaussian(x, inflate=inflate)
    want = inflate**2 * np.cov(x.numpy().T) + 1e-6 * np.eye(3)
    assert g.mu.detach().numpy() == pytest.approx(x.numpy().mean(0), rel=1e-12)
    assert g.covariance.detach().numpy() == pytest.approx(want, rel=1e-10)
