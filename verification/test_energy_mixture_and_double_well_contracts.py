"""ebmref.energy's GaussianMixture and DoubleWell pinned against independent computations:
mixture energies, component log-densities, log Z and log p against scipy.stats, the closed-form
gradient against Σₖ rₖ Σₖ⁻¹(x − μₖ) in numpy (also far from every component and for d > 8),
the three covariance forms, the exact sampler under a given generator, every constructor check
with its full message; DoubleWell's energy, autograd gradient, dtypes, event shape, tilt check
and CDF (against scipy quadrature) with its shape and dtype contract. Deterministic."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from scipy.special import logsumexp

from ebmref.energy import DoubleWell, GaussianMixture

LOGITS = [0.3, -1.2, 0.9]
MEANS = [[0.0, 1.0], [2.5, -0.5], [-1.5, -2.0]]
COVS = [[[1.0, 0.3], [0.3, 0.5]], [[0.4, -0.1], [-0.1, 2.0]], [[0.7, 0.0], [0.0, 0.7]]]
X = [[0.1, 0.2], [1.5, -2.0], [-0.7, 0.0], [2.2, 1.1], [0.0, -1.1], [-9.0, 14.0], [40.0, -35.0]]


def _mix(covs=COVS, dtype=torch.float64) -> GaussianMixture:
    return GaussianMixture(LOGITS, MEANS, covs, dtype=dtype)


def _component_logpdf(x, covs=COVS):
    return np.stack([stats.multivariate_normal(m, c).logpdf(x) for m, c in zip(MEANS, covs)], 1)


def test_mixture_energy_log_z_and_component_densities_match_scipy():
    """E = −log Σₖ exp(aₖ) N(x; μₖ, Σₖ), log Z = logsumexp(a), log p = log Σ πₖ Nₖ;
    component_log_density is scipy's per-component logpdf, shape (B, K)."""
    m, x = _mix(), torch.tensor(X, dtype=torch.float64)
    comp = _component_logpdf(X)
    np.testing.assert_allclose(m.component_log_density(x).detach().numpy(), comp, rtol=1e-12)
    e_ref = -logsumexp(np.array(LOGITS) + comp, axis=1)
    np.testing.assert_allclose(m(x).detach().numpy(), e_ref, rtol=1e-12)
    log_z = logsumexp(LOGITS)
    assert float(m.log_partition().detach()) == pytest.approx(log_z, rel=1e-14)
    np.testing.assert_allclose(m.log_prob(x).detach().numpy(), e_ref * -1 - log_z, rtol=1e-12)
    np.testing.assert_allclose(m.weights.detach().numpy(), np.exp(np.array(LOGITS) - log_z))
    assert m.dim == 2 and m.event_shape == (2,)


def test_mixture_closed_form_gradient_and_energy_match_numpy():
    """energy_and_grad: E as forward, ∇E = Σₖ rₖ Σₖ⁻¹(x − μₖ) with r = softmax(a + log Nₖ),
    no graph; exact also 40 σ away from every component (stable log-sum-exp)."""
    m, x = _mix(), torch.tensor(X, dtype=torch.float64)
    comp = np.array(LOGITS) + _component_logpdf(X)
    resp = np.exp(comp - logsumexp(comp, axis=1, keepdims=True))
    grads = np.stack([(np.array(X) - mu) @ np.linalg.inv(c) for mu, c in zip(MEANS, COVS)], 1)
    grad_ref = (resp[:, :, None] * grads).sum(1)
    e, g = m.energy_and_grad(x)
    assert not e.requires_grad and not g.requires_grad
    assert e.shape == (7,) and g.shape == (7, 2) and g.is_contiguous()
    np.testing.assert_allclose(e.numpy(), -logsumexp(comp, axis=1), rtol=1e-12)
    np.testing.assert_allclose(g.numpy(), grad_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(m.grad(x), g, rtol=0, atol=0)


def test_mixture_gradient_in_nine_dimensions_matches_autograd():
    """For d > 8 (the transposed-copy path) the closed form equals autograd of the energy."""
    gen = torch.Generator().manual_seed(3)
    means = torch.randn(2, 9, generator=gen, dtype=torch.float64)
    a = torch.randn(9, 9, generator=gen, dtype=torch.float64)
    covs = torch.stack([a @ a.T / 9 + torch.eye(9, dtype=torch.float64), 2 * torch.eye(9)])
    m = GaussianMixture([0.2, -0.4], means, covs, dtype=torch.float64)
    x = torch.randn(11, 9, generator=gen, dtype=torch.float64)
    e, g = m.energy_and_grad(x)
    xg = x.clone().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(m(xg).sum(), xg)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(e, m(x).detach(), rtol=1e-12, atol=1e-12)


def test_mixture_create_graph_keeps_the_graph():
    """create_graph=True: energy and gradient are differentiable (in x and in θ)."""
    m = _mix()
    x = torch.tensor(X[:4], dtype=torch.float64, requires_grad=True)
    e, g = m.energy_and_grad(x, create_graph=True)
    assert e.requires_grad and g.requires_grad
    (dx,) = torch.autograd.grad(e.sum(), x, retain_graph=True)
    torch.testing.assert_close(dx, g.detach(), rtol=1e-12, atol=1e-12)
    (dlog,) = torch.autograd.grad(g.sum(), m.logits, retain_graph=True)
    assert dlog.shape == (3,) and bool(torch.isfinite(dlog).all())
    assert m.grad(x, create_graph=True).requires_grad


@pytest.mark.parametrize("covs", [0.7, [0.7, 1.3, 0.2], "matrices"])
def test_mixture_isotropic_covariance_forms(covs):
    """A scalar (one variance for all) or a (K,) vector (one per component) means Σₖ = vₖ I,
    the same mixture as the full (K, d, d) matrices."""
    v = np.broadcast_to(np.asarray(0.7 if covs == "matrices" else covs, float), (3,))
    full = np.stack([vk * np.eye(2) for vk in v])
    m = _mix(full if covs == "matrices" else covs)
    np.testing.assert_allclose((m.scale_trils @ m.scale_trils.transpose(1, 2)).detach().numpy(),
                               full, atol=1e-14)
    x = torch.tensor(X[:5], dtype=torch.float64)
    ref = -logsumexp(np.array(LOGITS) + _component_logpdf(X[:5], full), axis=1)
    np.testing.assert_allclose(m(x).detach().numpy(), ref, rtol=1e-12)


def test_mixture_dtype_follows_the_means():
    """Every parameter takes the means' dtype: torch's default when dtype is None."""
    m = _mix()
    assert {p.dtype for p in m.parameters()} == {torch.float64}
    np.testing.assert_allclose(m.logits.detach().numpy(), LOGITS, rtol=0)
    d = GaussianMixture(np.array(LOGITS), np.array(MEANS), np.array(COVS))
    assert {p.dtype for p in d.parameters()} == {torch.get_default_dtype()}


@pytest.mark.parametrize("covs", [0.7, [0.7, 1.3, 0.2], COVS])
def test_mixture_dtype_is_kept_under_a_float64_default(covs):
    """A float32 mixture built while torch's default dtype is float64 is float32 throughout,
    for each covariance form (nothing is promoted to the default dtype)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        m = GaussianMixture(LOGITS, MEANS, covs, dtype=torch.float32)
    finally:
        torch.set_default_dtype(old)
    assert {p.dtype for p in m.parameters()} == {torch.float32}


@pytest.mark.parametrize("logits,means,covs,msg", [
    ([0.0, 1.0], [0.0, 1.0], 1.0, "means: expected shape (K, d), got (2,)"),
    ([0.0, 1.0], np.zeros((2, 2, 1)), 1.0, "means: expected shape (K, d), got (2, 2, 1)"),
    ([0.0, 1.0, 2.0], np.zeros((2, 3)), 1.0, "logits: expected shape (2,), got (3,)"),
    ([0.0, 1.0], np.zeros((2, 3)), [1.0, 2.0, 3.0], "covariances: expected shape (2,), got (3,)"),
    ([0.0, 1.0], np.zeros((2, 3)), np.ones((3, 3)),
     "covariances: expected shape (2, 3, 3), got (3, 3)"),
    ([0.0, 1.0], np.zeros((2, 3)), np.stack([np.eye(2)] * 2),
     "covariances: expected shape (2, 3, 3), got (2, 2, 2)"),
    ([0.0, 1.0], np.zeros((2, 2)), [1.0, -0.5],
     "covariances[1]: must be positive definite, smallest eigenvalue -0.5"),
    ([0.0, 1.0], np.zeros((2, 2)), [[[1.0, 0.2], [0.1, 1.0]], [[1.0, 0.0], [0.0, 1.0]]],
     "covariances[0]: must be symmetric"),
    ([0.0, math.nan], np.zeros((2, 2)), 1.0,
     "logits: must be finite (no NaN or inf), got non-finite entries"),
    ([0.0, 1.0], [[0.0, math.inf], [0.0, 0.0]], 1.0,
     "means: must be finite (no NaN or inf), got non-finite entries"),
    ([0.0, 1.0], np.zeros((2, 2)), [1.0, math.inf],
     "covariances: must be finite (no NaN or inf), got non-finite entries"),
])
def test_mixture_constructor_checks_with_full_messages(logits, means, covs, msg):
    """Each bad argument is refused with its name (component index for covariances) and rule."""
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        GaussianMixture(logits, means, covs, dtype=torch.float64)


@pytest.mark.parametrize("method", ["__call__", "component_log_density", "energy_and_grad"])
def test_mixture_refuses_a_batch_of_the_wrong_event_shape(method):
    """Every entry point checks x against (B, d) with the full message."""
    msg = "x: expected shape (B, 2), got (4, 3)"
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        getattr(_mix(), method)(torch.zeros(4, 3, dtype=torch.float64))


def test_mixture_sample_reproduces_from_the_callers_generator():
    """sample(n, g): components k ~ Categorical(softmax a) with replacement, then
    μₖ + Lₖ ε with ε = randn(n, d), all from g; n = 1 allowed, n = 0 refused."""
    m = _mix()
    for n in (1, 9):
        ref_gen = torch.Generator().manual_seed(77)
        idx = torch.multinomial(torch.softmax(torch.tensor(LOGITS, dtype=torch.float64), 0), n,
                                replacement=True, generator=ref_gen)
        eps = torch.randn(n, 2, generator=ref_gen, dtype=torch.float64).numpy()
        L = np.linalg.cholesky(np.array(COVS))[idx.numpy()]
        ref = np.array(MEANS)[idx.numpy()] + np.einsum("nij,nj->ni", L, eps)
        s = m.sample(n, torch.Generator().manual_seed(77))
        assert s.shape == (n, 2) and s.dtype == torch.float64 and not s.requires_grad
        np.testing.assert_allclose(s.numpy(), ref, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match=r"^n: must be an integer in \[1, ∞\], got 0$"):
        m.sample(0)


def test_double_well_energy_gradient_and_event_shape():
    """E = a(x² − 1)² + b x on (B, 1); ∇E = 4a x³ − 4a x + b by autograd; (B, 2) refused."""
    w = DoubleWell(a=1.7, b=-0.35, dtype=torch.float64)
    x = torch.tensor([[-1.3], [0.0], [0.4], [2.1]], dtype=torch.float64)
    xv = x.numpy()[:, 0]
    np.testing.assert_allclose(w(x).detach().numpy(), 1.7 * (xv ** 2 - 1) ** 2 - 0.35 * xv,
                               rtol=1e-14)
    np.testing.assert_allclose(w.grad(x).numpy()[:, 0], 6.8 * xv ** 3 - 6.8 * xv - 0.35,
                               rtol=1e-13)
    assert w.event_shape == (1,)
    with pytest.raises(ValueError, match=r"^x: expected shape \(B, 1\), got \(4, 2\)$"):
        w(torch.zeros(4, 2, dtype=torch.float64))


def test_double_well_parameters_take_the_given_or_default_dtype():
    """a and b are stored as given (float(a), float(b)) in dtype, default torch's default."""
    w = DoubleWell(a=1.7, b=-0.35, dtype=torch.float64)
    assert w.a.dtype == w.b.dtype == torch.float64
    assert w.a.item() == 1.7 and w.b.item() == -0.35
    d = DoubleWell(a=3, b=1)
    assert d.a.dtype == d.b.dtype == torch.get_default_dtype()
    assert d.a.item() == 3.0 and d.b.item() == 1.0


def test_double_well_defaults_and_the_check_of_a():
    """DoubleWell() is a = 2, b = 0; a must be a finite number > 0, with its message."""
    w = DoubleWell()
    assert (w.a.item(), w.b.item()) == (2.0, 0.0)
    for a in (-1.0, 0.0, math.inf):
        with pytest.raises(ValueError, match=f"^a: must be a finite number > 0, got {a!r}$"):
            DoubleWell(a=a)


@pytest.mark.parametrize("b", [math.inf, -math.inf, math.nan])
def test_double_well_refuses_a_non_finite_tilt(b):
    """b must be finite; the message quotes it."""
    with pytest.raises(ValueError, match=f"^b: must be finite, got {re.escape(str(b))}$"):
        DoubleWell(a=1.0, b=b)


def test_double_well_cdf_against_quadrature_with_its_shape_and_dtype():
    """cdf((n, 1)) → (n,) in x's dtype, equal to ∫_{−∞}^x e^{−E} / Z by scipy.quad (≤ 2e-9)."""
    a, b = 1.5, 0.4
    w = DoubleWell(a=a, b=b, dtype=torch.float64)

    def dens(t):
        return math.exp(-(a * (t * t - 1) ** 2 + b * t))

    z = integrate.quad(dens, -np.inf, np.inf, points=None, epsabs=1e-13, epsrel=1e-12)[0]
    pts = [-1.6, -0.93, 0.05, 1.02, 1.7]
    ref = [integrate.quad(dens, -np.inf, p, epsabs=1e-13, epsrel=1e-12)[0] / z for p in pts]
    for dtype, tol in ((torch.float64, 2e-9), (torch.float32, 1e-6)):
        c = w.cdf(torch.tensor(pts, dtype=dtype)[:, None])
        assert c.shape == (5,) and c.dtype == dtype
        np.testing.assert_allclose(c.numpy(), ref, atol=tol)
