"""MLPEnergy's documented construction: the defaults (128 wide, 3 hidden layers, Swish, no
spectral normalisation), the layer sequence for any depth and width down to 1, every
activation name mapped to its module, spectral normalisation on the Linear layers only, the
(B,) output, and each argument error with its full message.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from ebmref.nets import ACTIVATIONS, MLPEnergy


def _layout(e):
    return [(type(m).__name__, getattr(m, "in_features", None), getattr(m, "out_features", None))
            for m in e.net]


def test_defaults_are_three_swish_layers_of_128():
    """MLPEnergy(dim): Linear(dim, 128), SiLU, twice Linear(128, 128), SiLU, Linear(128, 1);
    no parametrisation (spectral_norm=False)."""
    e = MLPEnergy(3)
    assert e.activation == "swish" and e.event_shape == (3,)
    assert _layout(e) == [("Linear", 3, 128), ("SiLU", None, None), ("Linear", 128, 128),
                          ("SiLU", None, None), ("Linear", 128, 128), ("SiLU", None, None),
                          ("Linear", 128, 1)]
    assert not any(parametrize.is_parametrized(m) for m in e.net)


def test_smallest_width_and_depth():
    """hidden = 1 and depth = 1 are allowed: Linear(dim, 1), activation, Linear(1, 1)."""
    e = MLPEnergy(2, hidden=1, depth=1, activation="tanh")
    assert _layout(e) == [("Linear", 2, 1), ("Tanh", None, None), ("Linear", 1, 1)]
    assert e(torch.randn(5, 2)).shape == (5,)


@pytest.mark.parametrize("name, module", [
    ("swish", nn.SiLU), ("silu", nn.SiLU), ("relu", nn.ReLU), ("elu", nn.ELU),
    ("softplus", nn.Softplus), ("tanh", nn.Tanh), ("leaky_relu", nn.LeakyReLU)])
def test_every_activation_name(name, module):
    """Each name builds its module after every hidden Linear (leaky ReLU with slope 0.2)."""
    e = MLPEnergy(2, hidden=4, depth=2, activation=name)
    acts = [m for m in e.net if not isinstance(m, nn.Linear)]
    assert len(acts) == 2 and all(type(m) is module for m in acts)
    if name == "leaky_relu":
        assert acts[0].negative_slope == 0.2


def test_spectral_norm_wraps_the_linear_layers_only_and_output_is_one_per_row():
    """spectral_norm=True parametrises every Linear weight (not the activations); the energy
    of a (B, dim) batch is the last layer's single output, shape (B,)."""
    e = MLPEnergy(2, hidden=8, depth=2, spectral_norm=True)
    assert [parametrize.is_parametrized(m, "weight") if isinstance(m, nn.Linear) else None
            for m in e.net] == [True, None, True, None, True]
    e.eval()  # no power iteration: both calls see the same normalised weights
    x = torch.randn(6, 2)
    assert torch.equal(e(x), e.net(x)[:, 0])
    assert e(x[:1]).shape == (1,)


@pytest.mark.parametrize("kwargs, message", [
    ({"dim": 0}, "dim: must be an integer in [1, ∞], got 0"),
    ({"dim": 2, "hidden": 0}, "hidden: must be an integer in [1, ∞], got 0"),
    ({"dim": 2, "depth": 0}, "depth: must be an integer in [1, ∞], got 0"),
    ({"dim": 2, "activation": "gelu"},
     f"activation: must be one of {tuple(ACTIVATIONS)}, got 'gelu'"),
])
def test_argument_errors_word_for_word(kwargs, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        MLPEnergy(**kwargs)

