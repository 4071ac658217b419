"""Closed-form paths of ebmref.energy on sizes the other tests do not reach: a 3-D Gaussian's
gradient (the small-matrix product loop), the mixture's create_graph path, n = 1 samples, and
the mixture's covariance-shape message."""

from __future__ import annotations

import pytest
import torch

from ebmref.energy import Gaussian, GaussianMixture

F64 = torch.float64


def test_gaussian_3d_gradient_is_precision_times_offset():
    """∇E = Σ⁻¹(x − μ) for d = 3 (numpy-free: torch.linalg.solve), energy ½(x − μ)ᵀΣ⁻¹(x − μ)."""
    cov = torch.tensor([[2.0, 0.3, 0.1], [0.3, 1.0, 0.2], [0.1, 0.2, 0.5]], dtype=F64)
    g = Gaussian([0.5, -1.0, 0.2], cov, dtype=F64)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    diff = x - g.mu.detach()
    want = torch.linalg.solve(cov, diff.T).T
    e, grad = g.energy_and_grad(x)
    assert torch.allclose(grad, want, rtol=1e-12, atol=1e-12)
    assert torch.allclose(g.grad(x), want, rtol=1e-12, atol=1e-12)
    assert torch.allclose(e, 0.5 * (diff * want).sum(1), rtol=1e-12, atol=1e-12)
    assert g.sample(1).shape == (1, 3)


def test_mixture_create_graph_and_covariance_shape_message():
    """With create_graph the mixture's energy and gradient equal the closed-form ones and stay
    differentiable; covariances of the wrong shape are refused with both shapes."""
    m = GaussianMixture([0.2, -0.1], [[0.0, 0.0], [1.0, 1.0]], [0.5, 1.5], dtype=F64)
    x = torch.tensor([[0.3, -0.2], [1.2, 0.9]], dtype=F64)
    e, g = m.energy_and_grad(x, create_graph=True)
    e0, g0 = m.energy_and_grad(x)
    assert torch.allclose(e, e0, rtol=1e-12) and torch.allclose(g, g0, rtol=1e-12)
    assert e.requires_grad and g.requires_grad
    with pytest.raises(ValueError,
                       match=r"^covariances: expected shape \(2, 2, 2\), got \(2, 3, 3\)$"):
        GaussianMixture([0.0, 0.0], [[0.0, 0.0], [1.0, 1.0]], torch.eye(3).expand(2, 3, 3))
