"""log_partition_quadrature (ebmref.analytic): the grid is built in the requested dtype (the
energy sees points of that dtype), and an energy that is non-finite everywhere is refused with
its full message."""

from __future__ import annotations

import math

import pytest
import torch

from ebmref.analytic import log_partition_quadrature


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_quadrature_evaluates_the_energy_in_the_requested_dtype(dtype):
    """Points of the requested dtype; log ∫₀² exp(−x) dx = log(1 − e⁻²) to Simpson accuracy."""
    seen = set()

    def energy(x):
        seen.add(x.dtype)
        return x[:, 0]

    log_z, _ = log_partition_quadrature(energy, ((0.0, 2.0),), n_points=401, dtype=dtype)
    assert seen == {dtype}
    assert log_z == pytest.approx(math.log(1 - math.exp(-2.0)), abs=1e-6)


def test_quadrature_refuses_an_energy_infinite_everywhere():
    """exp(−E) = 0 on the whole grid: nothing to integrate."""
    with pytest.raises(ValueError, match=r"^energy: non-finite everywhere on the quadrature grid$"):
        log_partition_quadrature(lambda x: torch.full((x.shape[0],), math.inf, dtype=x.dtype),
                                 ((0.0, 1.0),), n_points=5)
