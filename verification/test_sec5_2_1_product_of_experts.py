"""C19 (§5.2.1): "the sum of many energy functions defines the product of their underlying
distributions … p₁·p₂ = e^{−(E₁+E₂)}/(Z₁Z₂). Therefore, for the energy of an image to be low,
only one of the CNNs must assign it low energy."

Verdict checked here:
* the sum of energies defines the *normalised* product of experts p ∝ e^{−(E₁+E₂)} whose
  normaliser is Z = ∫e^{−(E₁+E₂)}, not Z₁Z₂: p₁·p₂ integrates to Z/(Z₁Z₂) ≠ 1 (for two
  Gaussians, log(Z₁Z₂/Z) = ½ log 2π(s₁² + s₂²) + (a − b)²/(2(s₁² + s₂²)) in closed form);
* "only one term must be low" is refuted: with every term bounded below,
  E₁ + E₂ ≥ E₁ + min E₂ and ≥ E₂ + min E₁, so the sum is low only where *all* terms are low.
  "Only one low" describes a mixture (−log(e^{−E₁} + e^{−E₂})), not a sum.
"""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmref.analytic import log_partition_quadrature
from ebmref.energy import DoubleWell, Energy, Gaussian, SumEnergy

A, S1, B, S2 = -1.0, 1.0, 2.0, 0.5  # expert 1 N(a, s₁²), expert 2 N(b, s₂²)


def gaussian(m: float, s: float) -> Gaussian:
    return Gaussian([m], [[s * s]], dtype=torch.float64)


def product_log_z(a: float, s1: float, b: float, s2: float) -> float:
    """log ∫ exp(−(x−a)²/(2s₁²) − (x−b)²/(2s₂²)) dx in closed form."""
    v = s1 * s1 + s2 * s2
    return 0.5 * math.log(2 * math.pi * s1 * s1 * s2 * s2 / v) - (a - b) ** 2 / (2 * v)


def paper_gap(a: float, s1: float, b: float, s2: float) -> float:
    """log(Z₁Z₂) − log Z = −log ∫ p₁p₂ dx."""
    v = s1 * s1 + s2 * s2
    return 0.5 * math.log(2 * math.pi * v) + (a - b) ** 2 / (2 * v)


def _bounds(a, s1, b, s2):
    lo, hi = min(a - 12 * s1, b - 12 * s2), max(a + 12 * s1, b + 12 * s2)
    return ((lo, hi),)


def test_normaliser_of_a_sum_is_the_integral_not_the_product_of_normalisers():
    e1, e2 = gaussian(A, S1), gaussian(B, S2)
    poe = SumEnergy([e1, e2])
    log_z, err = log_partition_quadrature(poe, _bounds(A, S1, B, S2), n_points=4001)
    assert err < 1e-10
    assert abs(log_z - product_log_z(A, S1, B, S2)) < 1e-9
    log_z1z2 = float((e1.log_partition() + e2.log_partition()).detach())
    gap = log_z1z2 - log_z
    assert abs(gap - paper_gap(A, S1, B, S2)) < 1e-9
    assert gap > 3.0  # ∫p₁p₂ = e^{−gap} ≈ 0.0098: the paper's display is far from normalised
    # broken variant: the paper's normaliser Z₁Z₂ fails the same check
    assert abs(log_z1z2 - product_log_z(A, S1, B, S2)) > 1e-3
    print(f"log Z (quadrature) {log_z:.10f}, log Z1Z2 {log_z1z2:.6f}, gap {gap:.6f} nats, "
          f"∫p1·p2 = {math.exp(-gap):.5f}")


@settings(max_examples=25, deadline=None)
@given(a=st.floats(-3, 3), b=st.floats(-3, 3), s1=st.floats(0.3, 2.0), s2=st.floats(0.3, 2.0))
def test_gap_formula_matches_quadrature_for_any_two_gaussians(a, b, s1, s2):
    """log Z of the sum (quadrature) matches the closed form, and the gap to the library's
    log Z₁ + log Z₂ matches the gap formula, which is ≥ ½ log(2π(s₁² + s₂²)) > 0 here: Z = Z₁Z₂
    never holds for two Gaussians."""
    e1, e2 = gaussian(a, s1), gaussian(b, s2)
    log_z, _ = log_partition_quadrature(SumEnergy([e1, e2]), _bounds(a, s1, b, s2),
                                        n_points=2001)
    assert abs(log_z - product_log_z(a, s1, b, s2)) < 1e-8
    gap = float((e1.log_partition() + e2.log_partition()).detach()) - log_z
    assert abs(gap - paper_gap(a, s1, b, s2)) < 1e-8
    assert gap >= 0.5 * math.log(2 * math.pi * 0.18) - 1e-8


def test_non_gaussian_experts_also_need_the_integral():
    """Double well × Gaussian: quadrature of the sum differs from log Z₁ + log Z₂."""
    e1, e2 = DoubleWell(a=2.0, b=0.5, dtype=torch.float64), gaussian(0.7, 0.8)
    log_z, err = log_partition_quadrature(SumEnergy([e1, e2]), ((-8.0, 8.0),), n_points=4001)
    assert err < 1e-8
    assert abs(log_z - float((e1.log_partition() + e2.log_partition()).detach())) > 0.5


class _Mixture(Energy):
    """−log(e^{−E₁} + e^{−E₂}): the "OR" model in which one low term suffices."""

    def __init__(self, e1, e2):
        super().__init__()
        self.e1, self.e2 = e1, e2

    def forward(self, x):
        return -torch.logaddexp(-self.e1(x), -self.e2(x))


def test_a_sum_is_low_only_where_every_term_is_low():
    """At x = a expert 1 is at its minimum (E₁ = 0) but the sum is 14.4 above its minimum:
    the product density there is e^{−14.4} ≈ 5.6e-7 of its peak (excess against its closed
    form). A mixture (broken reading, "one low term suffices") is low at x = a."""
    e1, e2 = gaussian(A, S1), gaussian(B, S2)
    poe = SumEnergy([e1, e2])
    x = torch.linspace(-10, 10, 200001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        v1, v2, v = e1(x), e2(x), poe(x)
        torch.testing.assert_close(v, v1 + v2, rtol=0, atol=1e-12)  # the library sums
        x_a = torch.tensor([[A]], dtype=torch.float64)
        excess = float(poe(x_a) - v.min())
        v_sum = S1**2 + S2**2
        exact = (A - B) ** 2 / (2 * S2**2) - (A - B) ** 2 / (2 * v_sum)
        assert abs(excess - exact) < 1e-6  # grid minimum vs exact minimum
        assert excess > 10
        # the mixture is low where only one expert is low: its excess at x = a is ≤ log 2
        mix = _Mixture(e1, e2)
        assert float(mix(x_a) - mix(x).min()) <= math.log(2) + 1e-9
        # probability mass of the product near expert 1's mode vs its own mode
        log_z, _ = log_partition_quadrature(poe, _bounds(A, S1, B, S2), n_points=4001)
        dens = torch.exp(-v - log_z)
        near_a = float(dens[(x[:, 0] - A).abs() < 0.5].sum() * 1e-4)
        assert near_a < 1e-4
    print(f"E(a) − min E = {excess:.4f}; p(a)/p_max = {math.exp(-excess):.3g}; "
          f"P_PoE(|x − a| < 0.5) = {near_a:.3g}")
