"""The energies of the digits rung and the image view the transitions need.

E_θ(x) = MLP_θ(x) + ‖x − c‖²/(2R²) on flat 8×8 digits x ∈ ℝ⁶⁴: a Swish MLP (``hidden`` units,
``depth`` hidden layers, :class:`ebmref.nets.MLPEnergy`) plus a fixed, weak Gaussian base
measure (c = 0.5 in every pixel, R = 1: ten times the data's pixel scale), which makes
Z_θ = ∫ exp(−E_θ) finite for any weights without shaping the landscape where the data and the
chains live. G seeds of one method are one vectorised model
(:class:`ebmref.ensemble.StackedMLPEnergy`); member g is initialised under seed
``seed0 + g``. :meth:`Confined.member` returns one seed as a standalone energy.
"""

from __future__ import annotations

import torch
from torch import Tensor

from digits.data import DIM, IMAGE_SIZE
from ebmref.energy import Energy
from ebmref.ensemble import StackedMLPEnergy
from ebmref.nets import MLPEnergy
from ebmref.validation import check_int_range, check_positive

RADIUS = 1.0
CENTER = 0.5


class Confined(Energy):
    """E(x) = net(x) + ‖x − c‖²/(2R²) (module docstring); ``net`` may be an ensemble."""

    def __init__(self, net: Energy, radius: float = RADIUS, center: float = CENTER):
        super().__init__()
        check_positive(radius, "radius")
        self.net, self.radius, self.center = net, float(radius), float(center)
        self.event_shape = net.event_shape
        self.n_members = net.n_members

    def forward(self, x: Tensor) -> Tensor:
        d = x - self.center
        return self.net(x) + (d * d).sum(-1) / (2.0 * self.radius**2)

    def member(self, g: int) -> Confined:
        """Member g of an ensemble as a standalone energy (a copy)."""
        return Confined(self.net.member(g), self.radius, self.center)


def build_energy(n_members: int, hidden: int = 128, depth: int = 2, seed0: int = 0
                 ) -> Confined:
    """G = ``n_members`` MLP energies initialised under seeds seed0, …, seed0 + G − 1, stacked
    (the caller's global RNG is left untouched)."""
    check_int_range(n_members, "n_members", 1)
    check_int_range(hidden, "hidden", 1)
    check_int_range(depth, "depth", 1)
    check_int_range(seed0, "seed0", 0)
    members = []
    with torch.random.fork_rng():
        for g in range(n_members):
            torch.manual_seed(seed0 + g)
            members.append(MLPEnergy(DIM, hidden=hidden, depth=depth))
    return Confined(StackedMLPEnergy(members))


class FlatImages:
    """A transition on images (B, 1, S, S) (e.g. :class:`ebmref.transitions.GridElasticDeform`)
    applied to flat rows (B, S²): view, transform, flatten."""

    def __init__(self, transition, size: int = IMAGE_SIZE):
        self.transition, self.size = transition, size

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        images = x.reshape(x.shape[0], 1, self.size, self.size)
        return self.transition(images, generator).reshape(x.shape[0], -1)

    def __repr__(self) -> str:
        return f"FlatImages({self.transition!r})"
