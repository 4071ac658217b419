"""The UniformBox base of ebmref.ais (E = 0 on the closed box [low, high], +∞ outside) and the
value of AnnealedEnergy: argument checks with their messages, dtypes, the closed box's faces,
energy_and_grad, and the law of ``sample`` (inside, spread over the whole box, reproducible
from the caller's generator, float64 uniforms without float32 ties).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from ebmref.ais import AnnealedEnergy, UniformBox
from ebmref.energy import Energy, Gaussian

F64 = torch.float64
SHAPE_MSG = r"^shape: expected a non-empty tuple of positive ints, got {}$"


@pytest.mark.parametrize("shape", [(), (0,), (2, 0), (-1,), (2.0,)])
def test_shape_must_be_a_non_empty_tuple_of_positive_ints(shape):
    """Empty, zero, negative or float sizes are refused with the shape in the message."""
    with pytest.raises(ValueError, match=SHAPE_MSG.format(re.escape(repr(shape)))):
        UniformBox(0.0, 1.0, shape)


def test_size_one_box_and_faces_belong_to_the_box():
    """A (1,) box is allowed; the closed box contains both faces (E = 0 there, +∞ just
    outside either face)."""
    box = UniformBox(-1.0, 2.0, (1,), dtype=F64)
    assert box.event_shape == (1,)
    eps = 1e-12
    x = torch.tensor([[-1.0], [2.0], [-1.0 - eps], [2.0 + eps], [0.5]], dtype=F64)
    assert box.contains(x).tolist() == [True, True, False, False, True]
    assert box(x).tolist() == [0.0, 0.0, math.inf, math.inf, 0.0]


def test_degenerate_and_non_finite_bounds_are_refused_with_their_names():
    """high must exceed low in every coordinate (equality too is refused); NaN/inf bounds
    name the bound."""
    with pytest.raises(ValueError, match=r"^high: must exceed low in every coordinate$"):
        UniformBox(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0]), (2,))
    fin = r": must be finite \(no NaN or inf\), got non-finite entries$"
    with pytest.raises(ValueError, match="^low" + fin):
        UniformBox(-math.inf, 1.0, (2,))
    with pytest.raises(ValueError, match="^high" + fin):
        UniformBox(0.0, math.nan, (2,))


def test_default_dtype_for_numbers_ints_and_tensors():
    """dtype=None stores the bounds in torch's default dtype whatever the inputs (Python ints,
    a float64 tensor), like the energies of ebmref.energy; an explicit dtype is kept, and the
    energy follows the dtype of x."""
    default = torch.get_default_dtype()
    bounds = ((0, 2), (torch.zeros(3, dtype=F64), 2.0), (0.0, torch.full((3,), 2.0, dtype=F64)))
    for low, high in bounds:
        box = UniformBox(low, high, (3,))
        assert box.low.dtype == box.high.dtype == default
        s = box.sample(4, torch.Generator().manual_seed(0))
        assert s.dtype == default and bool(box.contains(s).all())
        assert bool((s != s.round()).any())  # not integers
    box = UniformBox(0, 1, (2,), dtype=F64)
    assert box.low.dtype == F64
    for dt in (F64, torch.float32):
        assert box(torch.full((3, 2), 0.5, dtype=dt)).dtype == dt


def test_energy_and_grad_is_energy_and_zero_gradient():
    """energy_and_grad returns the box energy (0 / +∞) and a zero gradient of x's shape."""
    box = UniformBox(0.0, 1.0, (2, 2), dtype=F64)
    x = torch.tensor([[[0.5, 0.5], [0.1, 0.9]], [[0.5, 1.5], [0.1, 0.9]]], dtype=F64)
    e, g = box.energy_and_grad(x)
    assert e.tolist() == [0.0, math.inf]
    assert g.shape == x.shape and g.dtype == F64 and not bool(g.any())


def test_sample_fills_the_box_and_follows_the_generator():
    """Samples of [2, 5] × [−1, 0] lie in the box and span it (range > 99 % of each side; for
    uniform draws P(range < 99 %) < 2n·0.99ⁿ⁻¹ ≈ 2e-40 at n = 10⁴); the same seed gives the
    same samples whatever the global RNG does in between."""
    box = UniformBox(torch.tensor([2.0, -1.0]), torch.tensor([5.0, 0.0]), (2,), dtype=F64)
    s = box.sample(10_000, torch.Generator().manual_seed(0))
    assert s.shape == (10_000, 2) and bool(box.contains(s).all())
    spread = (s.max(0).values - s.min(0).values) / torch.tensor([3.0, 1.0], dtype=F64)
    assert bool((spread > 0.99).all())
    torch.rand(7)  # moves the global generator
    assert torch.equal(s, box.sample(10_000, torch.Generator().manual_seed(0)))


def test_sample_uses_float64_uniforms():
    """In float64 no two of 60 000 draws coincide (P ≈ n²/2⁵⁴ ≈ 1e-7); uniforms drawn in
    float32 would give ~100 ties (2²⁴ values). n = 1 is a valid size."""
    box = UniformBox(0.0, 1.0, (1,), dtype=F64)
    s = box.sample(60_000, torch.Generator().manual_seed(1))
    assert np.unique(s.numpy()).size == 60_000
    assert box.sample(1).shape == (1, 1)
    with pytest.raises(ValueError, match=r"^n: must be an integer in \[1, ∞\], got 0$"):
        box.sample(0)


class _BlackBox(Energy):
    """An energy that can only be evaluated (numpy inside, no autograd graph)."""

    event_shape = (2,)

    def forward(self, x):
        return torch.as_tensor((x.detach().numpy() ** 2).sum(1), dtype=x.dtype)


def test_annealed_energy_value_needs_no_gradient():
    """E_β(x) = (1 − β)E₀(x) + βE_θ(x) is evaluated without differentiating either energy:
    a target that can only be evaluated still has an annealed energy."""
    base = Gaussian([0.0, 0.0], [[2.0, 0.0], [0.0, 2.0]], dtype=F64)
    path = AnnealedEnergy(base, _BlackBox(), 0.25)
    x = torch.tensor([[1.0, 2.0], [0.0, -1.0]], dtype=F64)
    want = 0.75 * (x * x).sum(1) / 4.0 + 0.25 * (x * x).sum(1)
    assert path(x).tolist() == pytest.approx(want.tolist(), rel=1e-14)
