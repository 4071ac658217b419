"""Software tests of ebmref.entropy: exact constants, invariances, gradients, validation."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import special

from ebmref.entropy import kozachenko_leonenko, log_unit_ball_volume, nearest_neighbour_surrogate

DT = torch.float64


def test_unit_ball_volume():
    assert math.exp(log_unit_ball_volume(1)) == pytest.approx(2.0, abs=1e-14)
    assert math.exp(log_unit_ball_volume(2)) == pytest.approx(math.pi, abs=1e-14)
    assert math.exp(log_unit_ball_volume(3)) == pytest.approx(4 * math.pi / 3, abs=1e-13)


def test_kl_estimator_by_hand_on_a_small_set():
    """Three points on a line, k = 1 and 2, written out with scipy's digamma."""
    x = torch.tensor([[0.0], [1.0], [3.0]], dtype=DT)
    rho1 = torch.tensor([1.0, 1.0, 2.0], dtype=DT)
    rho2 = torch.tensor([3.0, 2.0, 3.0], dtype=DT)
    for k, rho in ((1, rho1), (2, rho2)):
        expected = (special.digamma(3) - special.digamma(k) + math.log(2.0)
                    + float(torch.log(rho).mean()))
        assert float(kozachenko_leonenko(x, k=k)) == pytest.approx(expected, abs=1e-13)
    ref = torch.tensor([[0.5], [10.0]], dtype=DT)
    expected = (special.digamma(3) - special.digamma(1) + math.log(2.0)
                + math.log(0.5 * 0.5 * 2.5) / 3)
    assert float(kozachenko_leonenko(x, reference=ref)) == pytest.approx(expected, abs=1e-13)


def test_translation_and_scale_equivariance(rng):
    x = torch.randn(200, 3, generator=rng, dtype=DT)
    h = float(kozachenko_leonenko(x, k=2))
    assert float(kozachenko_leonenko(x + 5.0, k=2)) == pytest.approx(h, abs=1e-12)
    assert float(kozachenko_leonenko(3.0 * x, k=2)) == pytest.approx(h + 3 * math.log(3.0),
                                                                      abs=1e-12)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=rng, dtype=DT))
    assert float(kozachenko_leonenko(x @ q.T, k=2)) == pytest.approx(h, abs=1e-10)


def test_images_are_flattened(rng):
    x = torch.rand(20, 1, 4, 4, generator=rng, dtype=DT)
    assert float(kozachenko_leonenko(x)) == pytest.approx(float(kozachenko_leonenko(x.flatten(1))))


def test_gradients_finite_and_match_finite_differences(rng):
    x = torch.randn(12, 2, generator=rng, dtype=DT, requires_grad=True)
    ref = torch.randn(10, 2, generator=rng, dtype=DT)
    for f in (lambda z: kozachenko_leonenko(z, k=3), lambda z: nearest_neighbour_surrogate(z, ref)):
        (g,) = torch.autograd.grad(f(x), x)
        assert torch.isfinite(g).all()
        assert torch.autograd.gradcheck(f, (x,), eps=1e-7, atol=1e-6)


@pytest.mark.parametrize("call, name", [
    (lambda x: kozachenko_leonenko(x, k=0), "k"),
    (lambda x: kozachenko_leonenko(x[:3], k=3), "x"),
    (lambda x: kozachenko_leonenko(x, k=4, reference=x[:3]), "reference"),
    (lambda x: kozachenko_leonenko(x, reference=torch.zeros(5, 3, dtype=DT)), "reference"),
    (lambda x: kozachenko_leonenko(torch.zeros(5, dtype=DT)), "x"),
    (lambda x: nearest_neighbour_surrogate(x[:1]), "x"),
])
def test_validation(call, name):
    x = torch.randn(10, 2, dtype=DT)
    with pytest.raises(ValueError, match=name):
        call(x)


def test_duplicate_points_are_refused():
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]], dtype=DT)
    with pytest.raises(ValueError, match="coincide"):
        kozachenko_leonenko(x)


def test_min_distance_floor_keeps_tied_points_finite():
    """Chains clamped to a box tie exactly; with a floor the estimate is finite, equals the
    formula with ρ replaced by max(ρ, floor), and the floored distances pass no gradient."""
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]], dtype=DT, requires_grad=True)
    floor = 1e-6
    h = kozachenko_leonenko(x, min_distance=floor)
    rho = torch.tensor([floor, floor, math.sqrt(2.0)], dtype=DT)
    expected = (special.digamma(3) - special.digamma(1) + log_unit_ball_volume(2)
                + 2 * float(torch.log(rho).mean()))
    assert float(h.detach()) == pytest.approx(expected, abs=1e-12)
    (g,) = torch.autograd.grad(h, x)
    # Only ρ₃ = ‖x₃ − x₁‖ (x₁ is x₃'s first nearest neighbour) carries a gradient:
    # ∂/∂x₃ (d/N) log ρ₃ = (2/3)(x₃ − x₁)/ρ₃² = (1/3, 1/3), and minus that on x₁.
    third = torch.full((2,), 1.0 / 3.0, dtype=DT)
    torch.testing.assert_close(g, torch.stack([-third, torch.zeros(2, dtype=DT), third]),
                               rtol=0, atol=1e-12)
    s = nearest_neighbour_surrogate(x.detach(), min_distance=floor)
    assert float(s) == pytest.approx(float(torch.log(rho).mean()), abs=1e-12)
    with pytest.raises(ValueError, match="min_distance"):
        nearest_neighbour_surrogate(x.detach(), min_distance=-1.0)
