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


KL, NN = kozachenko_leonenko, nearest_neighbour_surrogate
X10 = torch.randn(10, 2, generator=torch.Generator().manual_seed(0), dtype=DT)


@pytest.mark.parametrize("call, message", [
    (lambda x: KL(x, k=0), r"k: must be an integer in \[1, ∞\], got 0"),
    (lambda x: KL(x, min_distance=-1.0), r"min_distance: must be a finite number >= 0, got -1\.0"),
    (lambda x: NN(x, min_distance=-1.0), r"min_distance: must be a finite number >= 0, got -1\.0"),
    (lambda x: KL(x, groups=0), r"groups: must be an integer in \[1, ∞\], got 0"),
    (lambda x: KL(x[:3], k=3), (r"x \(without each point itself\): the k-NN estimator with k=3 "
                               r"needs at least k candidate neighbours per point, got 2")),
    (lambda x: KL(x, k=4, reference=x[:3]), (r"reference: the k-NN estimator with k=4 needs at "
                                            r"least k candidate neighbours per point, got 3")),
    (lambda x: KL(x, reference=torch.zeros(5, 3, dtype=DT)),
     (r"reference: points of dimension 3 and dtype torch\.float64 do not match x "
     r"\(2, torch\.float64\)")),
    (lambda x: KL(torch.zeros(5, dtype=DT)), (r"x: expected a tensor of points with shape "
                                             r"\(N, \.\.\.\), N >= 1, got Tensor of shape "
                                             r"torch\.Size\(\[5\]\)")),
    (lambda x: KL(torch.zeros(0, 2, dtype=DT)), (r"x: expected a tensor of points .* got Tensor of "
                                                r"shape torch\.Size\(\[0, 2\]\)")),
    (lambda x: KL([[0.0, 1.0]]), r"x: expected a tensor of points .* got list of shape None"),
    (lambda x: KL(x, reference=[[0.0, 1.0]]), (r"reference: expected a tensor of points .* got "
                                              r"list of shape None")),
    (lambda x: NN(x[:1]), (r"x \(without each point itself\): the k-NN estimator with k=1 needs "
                          r"at least k candidate neighbours per point, got 0")),
    (lambda x: KL(x[:9], groups=2), r"x: 9 points do not split into groups=2 equal blocks"),
    (lambda x: KL(x, reference=x[:7], groups=2),
     r"reference: 7 points do not split into groups=2 equal blocks"),
    (lambda x: KL(torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]], dtype=DT)),
     (r"x: some points coincide with their k-th nearest neighbour \(distance 0\); the "
     r"log-distance entropy estimate is -inf \(pass min_distance > 0\)")),
])
def test_validation_messages(call, message):
    """Each refusal names its argument first and says what it got (the whole message)."""
    with pytest.raises(ValueError, match=f"^{message}$"):
        call(X10)


@pytest.mark.parametrize("estimator", [KL, NN])
@pytest.mark.parametrize("where", ["x", "reference"])
def test_non_finite_points_are_refused_unless_asked(estimator, where):
    """By default a NaN among the points (or the reference) is refused by name; with
    check_finite=False nothing is checked: a NaN point gets an infinite distance (a non-finite
    estimate), a NaN reference point is never anyone's nearest neighbour."""
    bad = X10.clone()
    bad[3, 1] = math.nan
    x, reference = {"x": (bad, None), "reference": (X10 + 0.01, bad)}[where]
    with pytest.raises(ValueError, match=f"^{where}: must be finite"):
        estimator(x, reference=reference)
    out = float(estimator(x, reference=reference, check_finite=False))
    assert math.isfinite(out) == (where == "reference")


def test_a_single_point_against_a_reference_and_large_offsets():
    """One point is a sample when the neighbours come from a reference. Far from the origin
    (‖x‖ ~ 1e5, neighbours 1e-3 apart, more than 25 points) the distances are computed
    directly, not as ‖x‖² + ‖y‖² − 2xy, so translation changes the estimate by round-off only."""
    one = KL(X10[:1], reference=X10[1:])
    assert math.isfinite(float(one))
    x = 1e-3 * torch.randn(40, 3, generator=torch.Generator().manual_seed(1), dtype=DT)
    shifted = x + 1e5
    assert float(KL(shifted)) == pytest.approx(float(KL(x)), abs=1e-6)
    assert float(NN(shifted)) == pytest.approx(float(NN(x)), abs=1e-6)


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
