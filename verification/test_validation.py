"""The library's argument checks (ebmref.validation), on their boundaries.

The convention they implement: a bad argument raises ``ValueError`` whose message starts with
the argument's name and a colon, states the value it got and the allowed range. Each check is
tested on values just inside and just outside its range, on the types it must refuse (bool is
not a number; a string is not a pair), and on what its message must contain. All deterministic.
"""

from __future__ import annotations

import math

import pytest
import torch

from ebmref import validation as v


def _message(fn, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    return str(info.value)


def _refuses(fn, value, name: str, *args, **kwargs) -> str:
    """The check refuses ``value``; its message names ``name`` first and shows the value."""
    msg = _message(fn, value, name, *args, **kwargs)
    assert msg.startswith(f"{name}: "), msg
    return msg


@pytest.mark.parametrize("good", [1, 0.5, 1e-300, 7])
def test_check_positive_accepts_finite_positive_numbers(good):
    v.check_positive(good, "step_size")


@pytest.mark.parametrize("bad", [0, 0.0, -1, -1e-300, math.nan, math.inf, True, "1", None])
def test_check_positive_refuses_the_rest(bad):
    msg = _refuses(v.check_positive, bad, "step_size")
    assert "> 0" in msg and repr(bad) in msg


@pytest.mark.parametrize("good", [0, 0.0, 2.5])
def test_check_nonnegative_accepts_zero(good):
    v.check_nonnegative(good, "noise")


@pytest.mark.parametrize("bad", [-1e-300, -1, math.nan, math.inf, False, "0"])
def test_check_nonnegative_refuses_the_rest(bad):
    msg = _refuses(v.check_nonnegative, bad, "noise")
    assert ">= 0" in msg and repr(bad) in msg


@pytest.mark.parametrize("good", [0, 0.0, 0.3, 1, 1.0])
def test_check_probability_accepts_the_closed_unit_interval(good):
    v.check_probability(good, "reinit_prob")


@pytest.mark.parametrize("bad", [-1e-12, 1.0 + 1e-12, math.nan, True, "0.5"])
def test_check_probability_refuses_the_rest(bad):
    msg = _refuses(v.check_probability, bad, "reinit_prob")
    assert "[0, 1]" in msg and repr(bad) in msg


def test_check_int_range_is_inclusive_at_both_ends():
    for value in (2, 3, 5):
        v.check_int_range(value, "n", 2, 5)
    v.check_int_range(10**9, "n", 0)  # no upper end
    for bad in (1, 6, 3.0, True, "3", None):
        msg = _refuses(v.check_int_range, bad, "n", 2, 5)
        assert "[2, 5]" in msg and repr(bad) in msg
    assert "[1, ∞]" in _refuses(v.check_int_range, 0, "n", 1)


def test_check_bool_takes_only_bools():
    v.check_bool(True, "progress")
    v.check_bool(False, "progress")
    for bad in (1, 0, "true", None):
        assert repr(bad) in _refuses(v.check_bool, bad, "progress")


def test_check_pair_returns_floats_and_accepts_any_two_element_sequence():
    assert v.check_pair([0, 1], "clamp") == (0.0, 1.0)
    out = v.check_pair(torch.tensor([0.25, 0.5]).tolist(), "betas", low=0.0, high_open=1.0)
    assert out == (0.25, 0.5) and all(type(x) is float for x in out)
    assert v.check_pair((2, 1), "pair") == (2.0, 1.0)  # order is free unless increasing
    assert v.check_pair((0.0, 0.999), "betas", low=0.0, high_open=1.0) == (0.0, 0.999)


@pytest.mark.parametrize("bad", ["ab", b"ab", (1.0,), (1.0, 2.0, 3.0), 5, None, (1.0, math.nan),
                                 (math.inf, 1.0), (True, 1.0), (1.0, False), ("0", 1.0)])
def test_check_pair_refuses_what_is_not_two_finite_numbers(bad):
    assert repr(bad) in _refuses(v.check_pair, bad, "clamp")


def test_check_pair_bounds_and_order():
    for bad in ((1.0, 1.0), (2.0, 1.0)):
        assert "expected two numbers (low < high), got" in _refuses(v.check_pair, bad, "clamp",
                                                                   increasing=True)
    assert v.check_pair((1.0, 2.0), "clamp", increasing=True) == (1.0, 2.0)
    for bad in ((-0.1, 0.5), (0.5, 1.0), (1.0, 0.5)):  # low ≤ each < high_open
        msg = _refuses(v.check_pair, bad, "betas", low=0.0, high_open=1.0)
        assert "[0.0, 1.0)" in msg


def test_check_choice_and_shape_name_the_allowed_values():
    v.check_choice("fifo", "replacement", ("fifo", "reservoir"))
    msg = _refuses(v.check_choice, "lifo", "replacement", ("fifo", "reservoir"))
    assert "'fifo'" in msg and "'reservoir'" in msg and "'lifo'" in msg
    v.check_shape(torch.zeros(2, 3), (2, 3), "m")
    with pytest.raises(ValueError, match=r"^m: expected shape \(3, 2\), got \(2, 3\)"):
        v.check_shape(torch.zeros(2, 3), (3, 2), "m")


def test_check_finite_and_points():
    v.check_finite(torch.zeros(3), "x")
    for bad in (math.nan, math.inf, -math.inf):
        _refuses(v.check_finite, torch.tensor([0.0, bad]), "x")
    x = torch.zeros(4)  # (B,) is a batch of scalars: allowed
    assert v.check_points(x, "x0") is x
    v.check_points(torch.zeros(1, 2, 3), "x0")
    msg = _refuses(v.check_points, [1.0, 2.0], "x0")
    assert "list" in msg
    assert "[0, 3]" in _refuses(v.check_points, torch.zeros(0, 3), "x0")
    assert "[]" in _refuses(v.check_points, torch.tensor(1.0), "x0")
    assert "int64" in _refuses(v.check_points, torch.zeros(2, 2, dtype=torch.long), "x0")
    _refuses(v.check_points, torch.tensor([[0.0, math.nan]]), "x0")


def test_check_positive_definite():
    v.check_positive_definite(torch.eye(2, dtype=torch.float64), "cov")
    big = torch.tensor([[1e6, 0.0], [0.0, 1e6]], dtype=torch.float64)
    v.check_positive_definite(big + torch.tensor([[0.0, 1e-5], [0.0, 0.0]]), "cov")  # relative
    assert "(2, 3)" in _refuses(v.check_positive_definite, torch.eye(2, 3), "cov")
    assert "(2, 2, 2)" in _refuses(v.check_positive_definite, torch.ones(2, 2, 2), "cov")
    _refuses(v.check_positive_definite, torch.ones(3), "cov")
    # Asymmetric, also where the entry is near zero (an absolute tolerance of 1e-10 there).
    _refuses(v.check_positive_definite, torch.tensor([[1.0, 1e-9], [0.0, 1.0]],
                                                     dtype=torch.float64), "cov")
    # Singular (smallest eigenvalue exactly 0) and indefinite matrices.
    for m in ([[1.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, -1.0]]):
        _refuses(v.check_positive_definite, torch.tensor(m, dtype=torch.float64), "cov")


def test_symmetry_tolerance_is_relative_to_the_entries_with_a_floor_of_one():
    """Asymmetry up to 1e-10 × max(1, max |m|) is round-off; 1.5e-10 on a unit matrix is not."""
    v.check_positive_definite(torch.tensor([[1.0, 0.5e-10], [0.0, 1.0]], dtype=torch.float64),
                              "cov")
    with pytest.raises(ValueError, match="^cov: must be symmetric$"):
        v.check_positive_definite(torch.tensor([[1.0, 1.5e-10], [0.0, 1.0]],
                                               dtype=torch.float64), "cov")
    big = torch.tensor([[100.0, 5e-9], [0.0, 100.0]], dtype=torch.float64)
    v.check_positive_definite(big, "cov")  # 5e-9 < 1e-10 × 100
