"""Full error messages of ebmref.energy (verification/test_energy.py checks only the argument
name at the start): the batch-shape check with a multi-dimensional event shape, and the
constructor checks of Gaussian and DoubleWell with the value they got."""

from __future__ import annotations

import re

import pytest
import torch

from ebmref.ais import UniformBox
from ebmref.energy import DoubleWell, Gaussian


@pytest.mark.parametrize("make,x,msg", [
    (lambda: Gaussian([0.0, 0.0], torch.eye(2)), torch.zeros(4, 5),
     "x: expected shape (B, 2), got (4, 5)"),
    (lambda: UniformBox(0.0, 1.0, (2, 3)), torch.zeros(4, 6),
     "x: expected shape (B, 2, 3), got (4, 6)"),
    (lambda: DoubleWell(), torch.zeros(3), "x: expected shape (B, 1), got (3,)"),
])
def test_batch_shape_message_lists_the_event_shape(make, x, msg):
    """A batch of the wrong shape is refused with the expected (B, *event) and the shape got."""
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        make()(x)


@pytest.mark.parametrize("make,msg", [
    (lambda: Gaussian([[0.0, 0.0]], torch.eye(2)),
     "mean: expected a vector (d,), got shape (1, 2)"),
    (lambda: DoubleWell(b=float("inf")), "b: must be finite, got inf"),
    (lambda: DoubleWell(a=0.0), "a: must be a finite number > 0, got 0.0"),
])
def test_constructor_messages_give_the_value(make, msg):
    """Bad constructor arguments are refused with the rule and the value got."""
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        make()
