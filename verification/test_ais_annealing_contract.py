"""Contract details of ebmref.ais: plain importance sampling over several temperatures
(n_mcmc = 0), the β₀ step after adaptation, float64 results for float32 inputs, the annealed
energy's event shape, zero gradient outside a box and its create_graph message."""

from __future__ import annotations

import math

import pytest
import torch

from ebmref.ais import AnnealedEnergy, UniformBox, ais, schedule, summarise_log_weights
from ebmref.energy import Gaussian

F64 = torch.float64


def _pair():
    target = Gaussian([0.3, -0.2], [[1.0, 0.2], [0.2, 0.5]], dtype=F64)
    base = Gaussian([0.0, 0.0], [[2.0, 0.0], [0.0, 2.0]], dtype=F64)
    return target, base


def test_without_moves_every_temperature_adds_its_share():
    """n_mcmc = 0 over K = 3 steps: the Δβ sum to 1, so log w = −(E_θ − E₀)(x₀) exactly."""
    target, base = _pair()
    res = ais(target, base, 16, schedule(3, "linear"), n_mcmc=0,
              generator=torch.Generator().manual_seed(3))
    x0 = base.sample(16, torch.Generator().manual_seed(3))
    want = -(target(x0) - base(x0))
    assert res.log_weights.tolist() == pytest.approx(want.tolist(), rel=1e-12, abs=1e-12)


def test_adapted_steps_copy_beta_one_to_beta_zero_and_small_pilot():
    """After the pilot the step at β₀ (used only by reverse runs) is the one at β₁, even when
    the given tensor differs there; a pilot of one particle is allowed; steps are float64."""
    target, base = _pair()

    def kernel(energy, x, step, n, generator):
        return x, torch.full((x.shape[0],), 0.6, dtype=x.dtype)

    steps = torch.tensor([0.5, 0.1, 0.2, 0.3], dtype=torch.float32)
    res = ais(target, base, 4, schedule(3, "linear"), steps, adapt=True, n_pilot=1,
              kernel=kernel)
    assert res.step_sizes.dtype == F64
    assert res.step_sizes[0] == res.step_sizes[1] == torch.tensor(0.1, dtype=torch.float32)


def test_summarise_log_weights_in_float64_for_float32_input():
    """float32 log-weights are summarised in float64 (same numbers as from float64 input)."""
    lw = torch.tensor([0.1, -2.3, 1.7, 0.4], dtype=torch.float32)
    assert summarise_log_weights(lw) == pytest.approx(summarise_log_weights(lw.to(F64)),
                                                       rel=1e-15)


def test_annealed_energy_shape_box_gradient_and_create_graph():
    """The path has the base's event shape; outside a box base E_β is the constant +∞, with
    gradient 0; create_graph is refused with its message."""
    target, _ = _pair()
    box = UniformBox(-1.0, 1.0, (2,), dtype=F64)
    path = AnnealedEnergy(box, target, 0.5)
    assert path.event_shape == (2,)
    e, g = path.energy_and_grad(torch.tensor([[0.0, 0.0], [3.0, 0.0]], dtype=F64))
    assert math.isinf(float(e[1])) and g[1].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError,
                       match=r"^create_graph: AIS energies are not differentiated in θ$"):
        path.energy_and_grad(torch.zeros(1, 2, dtype=F64), create_graph=True)


def test_step_tensor_with_a_negative_entry_is_refused():
    """Every per-β step must be finite and > 0."""
    target, base = _pair()
    with pytest.raises(ValueError, match=r"^step_size: a tensor must hold 4 finite values > 0 "
                                         r"\(one per β_k\), got shape \(4,\)$"):
        ais(target, base, 4, schedule(3, "linear"), torch.tensor([0.1, -0.1, 0.1, 0.1]))
