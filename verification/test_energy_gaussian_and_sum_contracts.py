"""ebmref.energy's Gaussian, its helpers, the Energy base class and SumEnergy, pinned against
independent computations: energies, log Z and log p against scipy.stats.multivariate_normal,
the closed-form gradient against Σ⁻¹(x − μ) in numpy, the autograd path's graph contract
(detached unless ``create_graph``, second derivatives through x), the exact sampler under a
given generator, dtypes, and every constructor check with its full message. Deterministic."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from scipy import stats

from ebmref.energy import (
    DoubleWell,
    Energy,
    Gaussian,
    SumEnergy,
    row_sum,
    small_matmul,
)

MU = [0.3, -1.1, 0.7]
COV = [[2.0, 0.6, -0.3], [0.6, 1.0, 0.2], [-0.3, 0.2, 0.5]]
X = [[0.1, 0.2, -0.3], [1.5, -2.0, 0.4], [-0.7, 0.0, 1.9], [2.2, 1.1, -1.3], [0.0, -1.1, 0.7]]


def _gauss(dtype=torch.float64) -> Gaussian:
    return Gaussian(MU, COV, dtype=dtype)


class Quadratic(Energy):
    """A non-analytic energy on (B, 2): E = Σ c·x³ + x², through the autograd default path."""

    event_shape = (2,)

    def __init__(self, c: float = 0.5):
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(c, dtype=torch.float64))

    def forward(self, x):
        self._check_batch(x)
        return (self.c * x ** 3 + x ** 2).sum(-1)


class Flat(Energy):
    """An energy that declares no event shape (accepts any (B, ...))."""

    def forward(self, x):
        return x.reshape(x.shape[0], -1).sum(-1)


def test_gaussian_energy_log_partition_and_log_prob_match_scipy():
    """E = −log N(x; μ, Σ) − log Z with log Z = ½ log det(2πΣ); log p is scipy's logpdf."""
    g, x = _gauss(), torch.tensor(X, dtype=torch.float64)
    ref = stats.multivariate_normal(MU, COV)
    log_z = 0.5 * math.log(np.linalg.det(2 * math.pi * np.array(COV)))
    assert float(g.log_partition().detach()) == pytest.approx(log_z, rel=1e-13)
    np.testing.assert_allclose(g(x).detach().numpy(), -ref.logpdf(X) - log_z, rtol=1e-12)
    np.testing.assert_allclose(g.log_prob(x).detach().numpy(), ref.logpdf(X), rtol=1e-12)
    np.testing.assert_allclose(g.covariance.detach().numpy(), COV, atol=1e-14)
    np.testing.assert_allclose(g.precision.detach().numpy(), np.linalg.inv(COV), rtol=1e-12)
    assert g.dim == 3 and g.event_shape == (3,)


def test_gaussian_uses_only_the_lower_triangle_of_its_factor():
    """Garbage above the diagonal of ``scale_tril`` changes nothing (documented)."""
    g = _gauss()
    x = torch.tensor(X, dtype=torch.float64)
    before = (g(x), g.grad(x), g.log_partition(), g.covariance, g.precision)
    with torch.no_grad():
        g.scale_tril += torch.triu(torch.full((3, 3), 5.0, dtype=torch.float64), 1)
    after = (g(x), g.grad(x), g.log_partition(), g.covariance, g.precision)
    for b, a in zip(before, after):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)


def test_gaussian_closed_form_gradient_and_energy():
    """grad and energy_and_grad: ∇E = Σ⁻¹(x − μ), E = ½ (x − μ)ᵀΣ⁻¹(x − μ), without a graph."""
    g, x = _gauss(), torch.tensor(X, dtype=torch.float64)
    diff = np.array(X) - np.array(MU)
    grad_ref = diff @ np.linalg.inv(COV)
    e_ref = 0.5 * np.einsum("bi,bi->b", diff, grad_ref)
    e, gr = g.energy_and_grad(x)
    np.testing.assert_allclose(gr.numpy(), grad_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(e.numpy(), e_ref, rtol=1e-12)
    np.testing.assert_allclose(g.grad(x).numpy(), grad_ref, rtol=1e-12, atol=1e-14)
    assert not e.requires_grad and not gr.requires_grad and e.shape == (5,)


@pytest.mark.parametrize("method", ["grad", "energy_and_grad"])
def test_gaussian_create_graph_gives_differentiable_results(method):
    """With create_graph the gradient keeps its graph: its x-derivative is Σ⁻¹ and its
    μ-derivative is −Σ⁻¹; the energy of energy_and_grad keeps its graph too."""
    g = _gauss()
    x = torch.tensor(X, dtype=torch.float64, requires_grad=True)
    out = getattr(g, method)(x, create_graph=True)
    gr = out if method == "grad" else out[1]
    assert gr.requires_grad
    prec = np.linalg.inv(COV)
    (hx,) = torch.autograd.grad(gr[:, 0].sum(), x, retain_graph=True)
    np.testing.assert_allclose(hx.numpy(), np.tile(prec[:, 0], (5, 1)), rtol=1e-12)
    (hmu,) = torch.autograd.grad(gr[:, 1].sum(), g.mu)
    np.testing.assert_allclose(hmu.numpy(), -5 * prec[:, 1], rtol=1e-12)
    if method == "energy_and_grad":
        assert out[0].requires_grad
        np.testing.assert_allclose(out[1].detach().numpy(),
                                   (np.array(X) - MU) @ prec, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("method", ["__call__", "grad", "energy_and_grad"])
def test_gaussian_refuses_a_batch_of_the_wrong_event_shape(method):
    """Every entry point checks x against (B, d) with the full message."""
    msg = "x: expected shape (B, 3), got (4, 2)"
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        getattr(_gauss(), method)(torch.zeros(4, 2, dtype=torch.float64))


def test_gaussian_sample_is_mu_plus_l_eps_from_the_callers_generator():
    """sample(n, g) = μ + ε Lᵀ with ε = randn(n, d) drawn from g in the parameters' dtype;
    n = 1 is allowed, n = 0 is refused with its message."""
    g = _gauss()
    L = np.linalg.cholesky(COV)
    for n in (1, 6):
        gen = torch.Generator().manual_seed(123)
        eps = torch.randn(n, 3, generator=torch.Generator().manual_seed(123), dtype=torch.float64)
        s = g.sample(n, gen)
        assert s.dtype == torch.float64 and s.shape == (n, 3) and not s.requires_grad
        np.testing.assert_allclose(s.numpy(), np.array(MU) + eps.numpy() @ L.T, rtol=1e-12)
    with pytest.raises(ValueError, match=r"^n: must be an integer in \[1, ∞\], got 0$"):
        g.sample(0)


def test_gaussian_dtype_defaults_to_torchs_and_can_be_set():
    """dtype=None gives torch's default dtype whatever the input; an explicit dtype is used for
    the mean and the covariance alike."""
    g = Gaussian(torch.tensor(MU, dtype=torch.float64), torch.tensor(COV, dtype=torch.float64))
    assert g.mu.dtype == g.scale_tril.dtype == torch.get_default_dtype()
    g64 = Gaussian(np.array(MU, dtype=np.float32), COV, dtype=torch.float64)
    assert g64.mu.dtype == g64.scale_tril.dtype == torch.float64
    np.testing.assert_allclose(g64.mu.detach().numpy(), np.float32(MU), rtol=0)
    np.testing.assert_allclose(g64.covariance.detach().numpy(), COV, atol=1e-14)


@pytest.mark.parametrize("mean,cov,msg", [
    ([[0.0, 1.0]], np.eye(2), "mean: expected a vector (d,), got shape (1, 2)"),
    (0.0, np.eye(1), "mean: expected a vector (d,), got shape ()"),
    ([0.0, 1.0], np.eye(3), "covariance: expected shape (2, 2), got (3, 3)"),
    ([0.0, 1.0], np.ones(2), "covariance: expected shape (2, 2), got (2,)"),
    ([0.0, 1.0], [[1.0, 0.5], [0.4, 1.0]], "covariance: must be symmetric"),
    ([0.0, 1.0], [[1.0, 0.0], [0.0, -1.0]],
     "covariance: must be positive definite, smallest eigenvalue -1"),
    ([0.0, math.nan], np.eye(2), "mean: must be finite (no NaN or inf), got non-finite entries"),
    ([0.0, 1.0], [[1.0, math.inf], [0.0, 1.0]],
     "covariance: must be finite (no NaN or inf), got non-finite entries"),
])
def test_gaussian_constructor_checks_with_full_messages(mean, cov, msg):
    """Each bad mean or covariance is refused with its name and the rule."""
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        Gaussian(mean, cov, dtype=torch.float64)


def test_gaussian_copies_its_inputs():
    """The parameters do not alias the caller's tensors."""
    mean = torch.tensor(MU, dtype=torch.float64)
    g = Gaussian(mean, COV, dtype=torch.float64)
    mean += 1.0
    np.testing.assert_allclose(g.mu.detach().numpy(), MU)


@pytest.mark.parametrize("shape", [(5, 1), (5, 3), (4, 8), (3, 9), (7,), (2, 3, 4)])
def test_small_matmul_equals_the_matrix_product(shape):
    """small_matmul(a, m) == a @ m for batches of 1 to 9 columns and for 1-D and 3-D a."""
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(*shape, generator=gen, dtype=torch.float64)
    m = torch.randn(shape[-1], 4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(small_matmul(a, m), a @ m, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("shape", [(4, 3), (3, 4), (5, 2, 3), (2, 1)])
def test_row_sum_sums_all_but_the_batch_dimension(shape):
    """row_sum: (B, ...) → (B,), the sum over every other axis, in the input's dtype."""
    t = torch.arange(math.prod(shape), dtype=torch.float64).reshape(shape) * 0.37 - 1.0
    got = row_sum(t)
    assert got.shape == (shape[0],) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), t.numpy().reshape(shape[0], -1).sum(1), rtol=1e-14)


def test_energy_and_grad_default_detaches_unless_create_graph():
    """The autograd default: ∇E by autograd, the energy detached; x itself is not marked."""
    q = Quadratic()
    x = torch.tensor([[0.5, -1.0], [2.0, 0.25], [-0.3, 0.7]], dtype=torch.float64)
    e, g = q.energy_and_grad(x)
    np.testing.assert_allclose(g.numpy(), 1.5 * x.numpy() ** 2 + 2 * x.numpy(), rtol=1e-14)
    np.testing.assert_allclose(e.numpy(), (0.5 * x.numpy() ** 3 + x.numpy() ** 2).sum(1))
    assert not e.requires_grad and not g.requires_grad and not x.requires_grad
    torch.testing.assert_close(q.grad(x), g, rtol=0, atol=0)
    # A batch that already requires grad (e.g. a sampler's state) works the same way.
    xr = x.clone().requires_grad_(True)
    e2, g2 = q.energy_and_grad(xr)
    assert not e2.requires_grad and not g2.requires_grad
    torch.testing.assert_close(g2, g, rtol=0, atol=0)


def test_energy_and_grad_with_create_graph_differentiates_through_x_and_theta():
    """create_graph: the energy keeps its graph to θ, and the gradient is differentiable in
    the caller's x itself (second derivative 3c·x + 2) and in θ (∂/∂c of ∇E = 3x²)."""
    q = Quadratic(0.5)
    x = torch.tensor([[0.5, -1.0], [2.0, 0.25]], dtype=torch.float64, requires_grad=True)
    e, g = q.energy_and_grad(x, create_graph=True)
    assert e.requires_grad and g.requires_grad
    (dc,) = torch.autograd.grad(e.sum(), q.c, retain_graph=True)
    assert dc.item() == pytest.approx((x.detach() ** 3).sum().item(), rel=1e-14)
    (hx,) = torch.autograd.grad(g.sum(), x, retain_graph=True)
    np.testing.assert_allclose(hx.numpy(), 3 * x.detach().numpy() + 2, rtol=1e-14)
    g2 = q.grad(x, create_graph=True)
    (gc,) = torch.autograd.grad(g2.sum(), q.c)
    assert float(gc) == pytest.approx(float(3 * (x.detach() ** 2).sum()), rel=1e-14)
    # Without a graph on x, create_graph still differentiates in θ.
    xd = x.detach()
    g3 = q.grad(xd, create_graph=True)
    assert g3.requires_grad and not xd.requires_grad


def test_batch_check_message_and_shapeless_energies():
    """The batch check compares x.shape[1:] with the event shape (full message); an energy
    with no event shape takes any batch."""
    with pytest.raises(ValueError, match=r"^x: expected shape \(B, 2\), got \(3, 2, 1\)$"):
        Quadratic()(torch.zeros(3, 2, 1, dtype=torch.float64))
    Quadratic()._check_batch(torch.zeros(3, 2))
    Flat()._check_batch(torch.zeros(3, 4, 5))
    assert float(Flat()(torch.ones(2, 3, 4))[0]) == 12.0


def test_sum_energy_adds_its_terms_and_takes_the_first_event_shape():
    """E = Σᵢ Eᵢ over every term (registered as submodules); the event shape is the first
    term's; one term is enough and none is refused with its message."""
    x = torch.tensor([[0.5, -1.0], [2.0, 0.25], [-0.3, 0.7]], dtype=torch.float64)
    g = Gaussian([0.1, 0.2], [[1.0, 0.3], [0.3, 2.0]], dtype=torch.float64)
    q, f = Quadratic(), Flat()
    s = SumEnergy([g, q, f])
    torch.testing.assert_close(s(x), g(x) + q(x) + f(x), rtol=1e-14, atol=1e-14)
    assert s.event_shape == (2,) and len(list(s.parameters())) == 3
    assert SumEnergy([f, g]).event_shape == ()
    assert SumEnergy([DoubleWell()]).event_shape == (1,)
    one = SumEnergy([g])
    assert one.event_shape == (2,)
    torch.testing.assert_close(one(x), g(x), rtol=0, atol=0)
    _, grad = s.energy_and_grad(x)
    torch.testing.assert_close(grad, g.grad(x) + q.grad(x) + 1.0, rtol=1e-13, atol=1e-13)
    with pytest.raises(ValueError, match="^energies: need at least one energy, got an empty "
                                         "sequence$"):
        SumEnergy([])
