"""The conformance package's argument and result checks, by their exact messages:
assert_conforms (no report; the failing tables joined by blank lines after one header line),
make_generator (bools and non-ints refused as such, negative ints by the range check, a
Generator passed through with its initial seed) and run_sampler (a result that is not the
chains' (B, d) tensor, named with its type and shape).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from ebmref.conformance import Report, Row, assert_conforms
from ebmref.conformance.report import make_generator
from ebmref.conformance.sampler import run_sampler
from ebmref.conformance.targets import gauss2d

F64 = torch.float64


def _failing(title):
    return Report(title, 1e-6, 3, [Row("t", "s", 1.0, 1e-9, 1e-6, "e")], [f"design {title}"])


def test_assert_conforms_joins_the_failing_tables_with_blank_lines():
    """The message is one header line, a blank line, then each failing report's Markdown,
    separated by blank lines; passing reports are left out."""
    ok = Report("ok", 1e-6, 0, [Row("t", "s", 1.0, 0.5, 1e-6, "e")])
    a, b = _failing("first"), _failing("second")
    expected = "conformance check failed:\n\n" + a.markdown() + "\n\n" + b.markdown()
    with pytest.raises(AssertionError) as info:
        assert_conforms(a, ok, b)
    assert str(info.value) == expected
    assert "### ok" not in str(info.value)


def test_assert_conforms_without_reports_names_the_type():
    """No report at all is an argument error, not a pass."""
    with pytest.raises(ValueError, match=r"^reports: need at least one Report$"):
        assert_conforms()


@pytest.mark.parametrize("seed", [True, False, 1.5, "3", None])
def test_make_generator_refuses_non_integer_seeds(seed):
    """A bool, float, string or None is refused as not an int (the range check is not
    reached)."""
    msg = f"seed: expected an int or a torch.Generator, got {seed!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        make_generator(seed)


def test_make_generator_range_and_generators():
    """Negative ints fail the range check; an int seeds a fresh generator and is recorded; a
    Generator is used as it is (same object, current state) with its initial seed recorded."""
    with pytest.raises(ValueError, match=re.escape("seed: must be an integer in [0, ∞], got -1")):
        make_generator(-1)
    g, s = make_generator(0)
    assert s == 0 and g.initial_seed() == 0
    assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=torch.manual_seed(0)))
    mine = torch.Generator().manual_seed(11)
    torch.rand(2, generator=mine)
    state = mine.get_state()
    g, s = make_generator(mine)
    assert g is mine and s == 11 and torch.equal(g.get_state(), state)


def _message(got):
    return re.escape("fn: must return the chain states, a tensor of shape (4, 2) (or an object "
                     f"with it in .x), got {got}")


@pytest.mark.parametrize("result, got", [
    (np.zeros((4, 2)), "ndarray of shape (4, 2)"),
    (np.zeros((3, 2)), "ndarray of shape (3, 2)"),
    (torch.zeros(4, 3, dtype=F64), "Tensor of shape torch.Size([4, 3])"),
    ([[0.0, 0.0]] * 4, "list of shape None"),
])
def test_run_sampler_names_the_wrong_result(result, got):
    """A non-tensor (even of the right shape) or a tensor of another shape is refused, the
    message naming its type and its shape (None when it has none)."""
    x0 = torch.zeros(4, 2, dtype=F64)
    with pytest.raises(ValueError, match=f"^{_message(got)}$"):
        run_sampler(lambda e, x, n, s, g: result, gauss2d(), x0, 1, 0.1, torch.Generator())
