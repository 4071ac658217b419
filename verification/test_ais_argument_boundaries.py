"""ebmref.ais's argument checks at their boundaries, with full messages: the path (equal or
decreasing betas, the first and last value named), per-β step tensors (one value too many, a
zero, an infinity), the smallest accepted n_particles, target_acceptance and n_pilot, the
samples of reverse_ais (N = 1, 1-D, a multi-axis event named axis by axis, the closed box);
and the documented defaults of ais/reverse_ais (λ = 0.1, one kernel step, no pilot; a pilot of
256 particles adapting towards acceptance 0.6), seen through a recording kernel."""

from __future__ import annotations

import math
import re

import pytest
import torch

from ebmref.ais import UniformBox, ais, reverse_ais, schedule
from ebmref.energy import Energy, Gaussian

F64 = torch.float64


def _pair():
    target = Gaussian([0.3, -0.2], [[1.0, 0.2], [0.2, 0.5]], dtype=F64)
    base = Gaussian([0.0, 0.0], [[2.0, 0.0], [0.0, 2.0]], dtype=F64)
    return target, base


def _raises(msg: str, call) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        call()


@pytest.mark.parametrize("betas,first,last", [
    ([0.0, 0.5, 0.5, 1.0], 0.0, 1.0),
    ([0.0, 0.6, 0.4, 1.0], 0.0, 1.0),
    ([0.1, 0.5, 0.7, 1.0], 0.1, 1.0),
    ([0.0, 0.3, 0.6, 0.9], 0.0, 0.9),
    ([0.0, 1.0, 1.0], 0.0, 1.0),
])
def test_betas_must_increase_strictly_from_zero_to_one(betas, first, last):
    """A repeated or decreasing β, or wrong ends: refused, naming the first and last β."""
    target, base = _pair()
    for run in (lambda b: ais(target, base, 4, b),
                lambda b: reverse_ais(target, base, target.sample(3), b)):
        _raises(f"betas: must increase strictly from 0 to 1, got first {first}, last {last}",
                lambda run=run: run(torch.tensor(betas, dtype=F64)))


@pytest.mark.parametrize("betas", [[[0.0, 1.0]], [0.0], [0.0, 1.0]])
def test_betas_must_be_a_one_dimensional_tensor_of_two_or_more(betas):
    """A 2-D tensor, a single β or a list: refused with the path's description."""
    target, base = _pair()
    b = betas if betas == [0.0, 1.0] else torch.tensor(betas, dtype=F64)
    _raises("betas: expected a 1-D tensor 0 = β₀ < … < β_K = 1 with K >= 1",
            lambda: ais(target, base, 4, b))


def test_float32_path_is_accepted_and_returned_in_float64():
    """betas and steps given in float32 come back as float64 (with the same values)."""
    target, base = _pair()
    b32 = torch.tensor([0.0, 0.25, 0.75, 1.0])
    s32 = torch.tensor([0.3, 0.2, 0.1, 0.05])
    res = ais(target, base, 3, b32, s32, generator=torch.Generator().manual_seed(0))
    assert res.betas.dtype == F64 and res.step_sizes.dtype == F64
    assert res.acceptance.dtype == F64 and res.log_weights.dtype == F64
    assert torch.equal(res.betas, b32.to(F64)) and torch.equal(res.step_sizes, s32.to(F64))
    assert res.acceptance.shape == (4,) and res.log_weights.shape == (3,)


@pytest.mark.parametrize("steps,shape", [
    ([0.1, 0.1, 0.1, 0.1, 0.1], "(5,)"),
    ([0.1, 0.0, 0.1, 0.1], "(4,)"),
    ([0.1, 0.1, math.inf, 0.1], "(4,)"),
    ([0.1, 0.1, 0.1, math.nan], "(4,)"),
])
def test_step_tensor_needs_one_finite_positive_value_per_beta(steps, shape):
    """Too many values, a zero, an infinity or a NaN: refused with the tensor's shape."""
    target, base = _pair()
    _raises(f"step_size: a tensor must hold 4 finite values > 0 (one per β_k), got shape {shape}",
            lambda: ais(target, base, 4, schedule(3, "linear"), torch.tensor(steps, dtype=F64)))


@pytest.mark.parametrize("value", [0, 0.0, math.inf, "0.1"])
def test_scalar_step_must_be_a_finite_positive_number(value):
    """A scalar step of 0 or ∞ (or a string) is refused by the positive-number check."""
    target, base = _pair()
    _raises(f"step_size: must be a finite number > 0, got {value!r}",
            lambda: ais(target, base, 4, schedule(2, "linear"), value))


def test_smallest_accepted_counts():
    """K = 1, n_particles = 2, n_pilot = 1 and n_mcmc = 0 are accepted; one less is refused."""
    target, base = _pair()
    b = schedule(2, "linear")
    one = torch.tensor([0.0, 1.0], dtype=F64)
    assert ais(target, base, 2, one).acceptance.shape == (2,)
    assert reverse_ais(target, base, target.sample(2), one).acceptance.shape == (2,)
    assert ais(target, base, 2, b, adapt=True, n_pilot=1).log_weights.shape == (2,)
    assert bool(ais(target, base, 2, b, n_mcmc=0).acceptance.isnan().all())
    _raises("n_particles: must be an integer in [2, ∞], got 1", lambda: ais(target, base, 1, b))
    _raises("n_pilot: must be an integer in [1, ∞], got 0",
            lambda: reverse_ais(target, base, target.sample(3), b, adapt=True, n_pilot=0))
    _raises("n_mcmc: must be an integer in [0, ∞], got -1",
            lambda: reverse_ais(target, base, target.sample(3), b, n_mcmc=-1))


@pytest.mark.parametrize("value", [0.0, 1.0, 1.5, -0.2, 1])
def test_target_acceptance_must_be_a_float_strictly_inside_zero_one(value):
    """0, 1, values outside and an int are refused (forward and reverse)."""
    target, base = _pair()
    b = schedule(2, "linear")
    msg = f"target_acceptance: must lie in (0, 1), got {value!r}"
    _raises(msg, lambda: ais(target, base, 4, b, adapt=True, target_acceptance=value))
    _raises(msg, lambda: reverse_ais(target, base, target.sample(3), b, adapt=True,
                                     target_acceptance=value))


def test_target_acceptance_close_to_the_ends_is_accepted():
    """0.01 and 0.99 are inside (0, 1)."""
    target, base = _pair()
    for value in (0.01, 0.99):
        res = ais(target, base, 2, schedule(2, "linear"), adapt=True, target_acceptance=value,
                  n_pilot=2)
        assert res.step_sizes.shape == (3,)


class _Quadratic(Energy):
    """½‖x‖² on any event shape (no event_shape of its own)."""

    def forward(self, x):
        return 0.5 * (x * x).flatten(1).sum(1)


def test_reverse_samples_are_described_axis_by_axis():
    """N = 1, 1-D samples or a wrong event: refused, naming the event axes of the base."""
    target = Gaussian([0.0] * 6, torch.eye(6), dtype=F64)
    box = UniformBox(0.0, 1.0, (2, 3), dtype=F64)
    b = schedule(2, "linear")
    head = "samples: expected exact target samples (N >= 2, 2, 3), got "
    flat = _Quadratic()
    for x, got in ((torch.full((1, 2, 3), 0.5), "(1, 2, 3)"), (torch.full((4,), 0.5), "(4,)"),
                   (torch.full((4, 3, 2), 0.5), "(4, 3, 2)"), (torch.full((4, 6), 0.5), "(4, 6)")):
        _raises(head + got, lambda x=x: reverse_ais(flat, box, x, b))
    _raises("samples: expected exact target samples (N >= 2, 6), got (1, 6)",
            lambda: reverse_ais(target, Gaussian([0.0] * 6, torch.eye(6), dtype=F64),
                                torch.zeros(1, 6, dtype=F64), b))


def test_reverse_samples_on_the_box_border_are_inside():
    """The box is closed: samples on its faces are accepted, a hair outside refused."""
    target = Gaussian([0.5, 0.5], [[0.1, 0.0], [0.0, 0.1]], dtype=F64)
    box = UniformBox(0.0, 1.0, (2,), dtype=F64)
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]], dtype=F64)
    res = reverse_ais(target, box, x, schedule(2, "linear"), n_mcmc=0)
    assert res.log_weights.shape == (3,)
    _raises("samples: must lie inside the base's box",
            lambda: reverse_ais(target, box, x - 1e-12, schedule(2, "linear")))


def _recording(calls: list, rate: float):
    """A kernel that records (particles, step, n_steps), does not move, reports ``rate``."""
    def kernel(energy, x, step, n_steps, generator):
        calls.append((x.shape[0], step, n_steps))
        return x, torch.full((x.shape[0],), rate, dtype=x.dtype)
    return kernel


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_documented_defaults_without_adaptation(direction):
    """By default each of the K kernels runs one step of λ = 0.1 on the N particles, and no
    pilot runs."""
    target, base = _pair()
    calls: list = []
    b = schedule(3, "linear")
    if direction == "forward":
        res = ais(target, base, 5, b, kernel=_recording(calls, 0.5))
    else:
        res = reverse_ais(target, base, target.sample(5), b, kernel=_recording(calls, 0.5))
    assert calls == [(5, 0.1, 1)] * 3
    assert res.step_sizes.tolist() == [0.1] * 4


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_documented_pilot_defaults(direction):
    """adapt=True: the pilot runs 256 particles and adapts towards acceptance 0.6: with an
    acceptance of 0.9 reported everywhere each step is the previous one times e^{0.3}."""
    target, base = _pair()
    calls: list = []
    b = schedule(3, "linear")
    kernel = _recording(calls, 0.9)
    if direction == "forward":
        res = ais(target, base, 5, b, 0.2, adapt=True, kernel=kernel)
    else:
        res = reverse_ais(target, base, target.sample(5), b, 0.2, adapt=True, kernel=kernel)
    steps = [0.2 * math.exp(0.3 * k) for k in range(3)]
    assert [c[0] for c in calls] == [256] * 3 + [5] * 3
    assert [c[1] for c in calls[:3]] == pytest.approx(steps, rel=1e-12)
    assert res.step_sizes.tolist() == pytest.approx([0.2] + steps, rel=1e-12)
