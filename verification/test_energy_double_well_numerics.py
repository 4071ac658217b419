"""Numerics of the analytic energies of ebmref.energy against independent computations.

* ``DoubleWell.log_partition`` (documented absolute error ≲ 1e-10) against a reference that
  integrates each well in its own scaled variable x = m + s·u (s = 1/√E''(m), split at the
  barrier, infinite tails) with scipy.integrate.quad: strongly tilted wells (mode far out),
  a flat quartic (mass out to |x| ≈ 20), and very narrow wells (a = 10⁶, 1.4·10⁶);
* ``DoubleWell.cdf`` (documented ~1e-9) against quadrature of the same density at points off
  the tabulation grid, its dtype, and ``sample``'s dtype, sizes and float64 uniforms;
* ``TemperedEnergy`` keeps the event shape and the parameter graph with ``create_graph``;
* ``AnalyticEnergy.sample`` names the class that has no exact sampler.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate

from ebmref.energy import AnalyticEnergy, DoubleWell, Gaussian, TemperedEnergy

F64 = torch.float64


def _energy(a: float, b: float):
    return lambda t: a * (t * t - 1.0) ** 2 + b * t


def _minima(a: float, b: float) -> list[float]:
    """Local minima of a(x² − 1)² + bx: real roots of 4a x³ − 4a x + b with E'' > 0."""
    roots = np.roots([4 * a, 0.0, -4 * a, b])
    real = sorted(float(r.real) for r in roots if abs(r.imag) < 1e-9 * max(1.0, abs(r)))
    return [r for r in real if 12 * a * r * r - 4 * a > 0]


def reference_log_z(a: float, b: float) -> float:
    """log ∫ exp(−E) over ℝ: one quad per well in the variable u = (x − m)/s, peak at u = 0."""
    energy = _energy(a, b)
    mins = _minima(a, b)
    e_min = min(energy(m) for m in mins)
    cuts = [-math.inf] + [0.5 * (p + q) for p, q in itertools.pairwise(mins)] + [math.inf]
    z = 0.0
    for m, lo, hi in zip(mins, cuts, cuts[1:], strict=False):
        s = 1.0 / math.sqrt(12 * a * m * m - 4 * a)
        f = lambda u, m=m, s=s: s * math.exp(-(energy(m + s * u) - e_min))
        for u0, u1 in (((lo - m) / s, 0.0), (0.0, (hi - m) / s)):
            z += integrate.quad(f, u0, u1, epsabs=0.0, epsrel=1e-13, limit=500)[0]
    return math.log(z) - e_min


@pytest.mark.parametrize("a,b", [(2.0, 0.0), (2.0, 1.5), (1e-3, 0.0), (2.5, 240.0),
                                 (1e5, 10.0), (1e6, 3.0), (1.4e6, 0.0)])
def test_double_well_log_partition_matches_reference(a, b):
    """log Z to 1e-10 (relative 1e-12 where log Z ≈ 560): a broad quartic (a = 1e-3, mass
    out to |x| ≈ 20), a tilt putting the mode at x ≈ −3 (b = 240), wells of width ~3e-4
    (a ≥ 1e6) that a quadrature must not step over, and a minor well holding e⁻²⁰ ≈ 2e-9 of
    the mass (a = 1e5, b = 10), which a 1e-10 accuracy must still count."""
    got = float(DoubleWell(a, b, dtype=F64).log_partition())
    assert got == pytest.approx(reference_log_z(a, b), rel=1e-12, abs=1e-10)


def test_reference_log_z_agrees_with_laplace_for_narrow_wells():
    """Self-check of the reference: for a → ∞, Z → 2√(π/(4a)) (two Gaussian wells of
    variance 1/(8a)), with a relative correction O(1/a)."""
    a = 1e6
    assert reference_log_z(a, 0.0) == pytest.approx(math.log(2 * math.sqrt(math.pi / (4 * a))),
                                                    abs=1e-6)


@pytest.mark.parametrize("a,b", [(2.0, 0.5), (1e-3, 0.0)])
def test_double_well_cdf_matches_quadrature_off_the_grid(a, b):
    """P(X ≤ x) at points between the nodes of the tabulation, to 2e-9 (docstring: ~1e-9);
    reference: quad of exp(−E) from far out in the tail (density < e⁻⁷⁰⁰ there)."""
    dw = DoubleWell(a, b, dtype=F64)
    energy = _energy(a, b)
    f = lambda t: math.exp(-energy(t))
    far = 60.0 if a < 1 else 6.0
    z = sum(integrate.quad(f, lo, hi, epsabs=0.0, epsrel=1e-13, limit=500)[0]
            for lo, hi in ((-far, -1.0), (-1.0, 1.0), (1.0, far)))
    scale = 8.0 if a < 1 else 1.0
    xs = scale * np.array([-2.31234567, -1.1234567, -0.61234567, 0.01234567, 0.71234567,
                           1.0123456, 1.51234567])
    ref = []
    for x in xs:
        pts = [p for p in (-1.0, 1.0) if -far < p < x]
        ref.append(integrate.quad(f, -far, x, points=pts or None, epsabs=0.0, epsrel=1e-13,
                                  limit=500)[0] / z)
    got = dw.cdf(torch.as_tensor(xs, dtype=F64)[:, None])
    assert got.shape == (7,)
    assert got.tolist() == pytest.approx(ref, abs=2e-9, rel=0)


def test_double_well_cdf_and_sample_dtypes_and_sizes():
    """cdf returns the dtype of x; samples have the parameters' dtype and shape (n, 1);
    n = 1 is a valid size."""
    dw = DoubleWell(2.0, 0.3, dtype=torch.float32)
    assert dw.cdf(torch.zeros(3, 1, dtype=torch.float32)).dtype == torch.float32
    assert dw.cdf(torch.zeros(3, 1, dtype=F64)).dtype == F64
    s = dw.sample(1, torch.Generator().manual_seed(0))
    assert s.shape == (1, 1) and s.dtype == torch.float32
    assert DoubleWell(2.0, 0.3, dtype=F64).sample(2).dtype == F64


def test_double_well_sample_uses_float64_uniforms():
    """No two of 60 000 samples of a continuous law coincide (P ≈ n²/2⁵⁴ ≈ 1e-7 with float64
    uniforms; float32 uniforms, 2²⁴ values, would give ~100 ties)."""
    s = DoubleWell(2.0, 0.0, dtype=F64).sample(60_000, torch.Generator().manual_seed(2))
    assert np.unique(s.numpy()).size == 60_000


def test_tempered_energy_keeps_event_shape_and_parameter_graph():
    """E_T = E/T: the event shape is the base's; with create_graph the energy and gradient
    stay differentiable in the base's parameters: ∂/∂μ Σᵢ E_T(xᵢ) = −Σᵢ P(xᵢ − μ)/T."""
    base = Gaussian([0.5, -1.0], [[2.0, 0.3], [0.3, 1.0]], dtype=F64)
    temp = TemperedEnergy(base, 4.0)
    assert temp.event_shape == (2,)
    x = torch.tensor([[0.0, 0.0], [1.0, 2.0], [-1.0, 0.5]], dtype=F64)
    e, g = temp.energy_and_grad(x, create_graph=True)
    (d_mu,) = torch.autograd.grad(e.sum(), base.mu, retain_graph=True)
    p = torch.linalg.inv(base.covariance.detach())
    want = -((x - base.mu.detach()) @ p).sum(0) / 4.0
    assert d_mu.tolist() == pytest.approx(want.tolist(), rel=1e-12)
    (d_mu_g,) = torch.autograd.grad(g.sum(), base.mu)  # ∇ₓE_T = P(x − μ)/T
    assert d_mu_g.tolist() == pytest.approx((-3.0 * p.sum(0) / 4.0).tolist(), rel=1e-12)


def test_analytic_energy_without_sampler_names_its_class():
    """An AnalyticEnergy subclass that defines no sampler says which class has none."""
    class Flat(AnalyticEnergy):
        def forward(self, x):
            return x.sum(1) * 0.0

    with pytest.raises(NotImplementedError, match=r"^Flat has no exact sampler$"):
        Flat().sample(3)


def test_double_well_defaults_and_parameter_dtype():
    """DoubleWell() is the symmetric well E = 2(x² − 1)² (a = 2, b = 0); a and b are stored in
    the requested dtype, torch's default dtype when none is given."""
    x = torch.tensor([[-1.5], [0.0], [0.5], [2.0]], dtype=torch.get_default_dtype())
    want = [2.0 * (v * v - 1.0) ** 2 for v in (-1.5, 0.0, 0.5, 2.0)]
    assert DoubleWell()(x).tolist() == pytest.approx(want, rel=1e-6)
    dw = DoubleWell()
    assert dw.a.dtype == dw.b.dtype == torch.get_default_dtype()
    dw = DoubleWell(1.0, -0.5, dtype=F64)
    assert dw.a.dtype == dw.b.dtype == F64
    assert (dw.a.item(), dw.b.item()) == (1.0, -0.5)
