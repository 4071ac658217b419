"""Software tests of ebmref/samplers.py: argument checks, reproducibility, shapes and the
options (grad_clip, clamp, record_every, transition, differentiable_steps). The statistical
behaviour of the kernels is tested in test_sec1_2_langevin.py (C3–C5)."""

from __future__ import annotations

import math
import re

import pytest
import torch

from ebmref.energy import DoubleWell, Energy, Gaussian, GaussianMixture
from ebmref.samplers import (
    SamplerDiverged,
    decoupled_noise,
    effective_temperature,
    langevin,
    mala,
    ornstein_uhlenbeck,
)

F64 = torch.float64


def gaussian():
    return Gaussian([0.5, -1.0], [[1.0, 0.6], [0.6, 0.8]], dtype=F64)


class Flat(Energy):
    """E ≡ 0: ∇E = 0, so a noiseless chain only moves through the transition hook."""

    event_shape = (2,)

    def forward(self, x):
        return (x * 0).sum(-1)


X0 = torch.zeros(8, 2, dtype=F64)
NAN_X0 = torch.tensor([[0.0, float("nan")]] * 3, dtype=F64)


@pytest.mark.parametrize("call,arg", [
    (lambda: langevin(gaussian(), X0, 5, 0.0), "step_size"),
    (lambda: langevin(gaussian(), X0, 5, -0.1), "step_size"),
    (lambda: langevin(gaussian(), X0, 5, float("nan")), "step_size"),
    (lambda: langevin(gaussian(), X0, 5, float("inf")), "step_size"),
    (lambda: langevin(gaussian(), X0, 5, 0.1, noise=-0.01), "noise"),
    (lambda: langevin(gaussian(), X0, -1, 0.1), "n_steps"),
    (lambda: langevin(gaussian(), X0, 2.5, 0.1), "n_steps"),
    (lambda: langevin(gaussian(), NAN_X0, 5, 0.1), "x0"),
    (lambda: langevin(gaussian(), torch.zeros(0, 2, dtype=F64), 5, 0.1), "x0"),
    (lambda: langevin(gaussian(), torch.zeros(4, 3, dtype=F64), 5, 0.1), "x"),
    (lambda: langevin(gaussian(), X0, 5, 0.1, grad_clip=0.0), "grad_clip"),
    (lambda: langevin(gaussian(), X0, 5, 0.1, clamp=(1.0, 0.0)), "clamp"),
    (lambda: langevin(gaussian(), X0, 5, 0.1, clamp=(1.0, 1.0)), "clamp"),  # an empty box
    (lambda: langevin(gaussian(), X0, 5, 0.1, transition_every=-1), "transition_every"),
    (lambda: langevin(gaussian(), X0, 5, 0.1, differentiable_steps=6), "differentiable_steps"),
    (lambda: langevin(gaussian(), X0, 5, 0.1, transition=lambda x, g: x), "transition_every"),
    (lambda: langevin(gaussian(), X0, 5, 0.1, record_every=-1), "record_every"),
    (lambda: mala(gaussian(), X0, 5, 0.0), "step_size"),
    (lambda: mala(gaussian(), NAN_X0, 5, 0.1), "x0"),
    (lambda: mala(gaussian(), X0, -2, 0.1), "n_steps"),
    (lambda: ornstein_uhlenbeck(gaussian(), X0, 5, 0.0), "tau"),
    (lambda: ornstein_uhlenbeck(DoubleWell(), X0, 5, 0.1), "energy"),
    (lambda: ornstein_uhlenbeck(gaussian(), NAN_X0, 5, 0.1), "x0"),
    (lambda: effective_temperature(0.0, 0.1), "step_size"),
    (lambda: effective_temperature(10.0, -1.0), "noise"),
    (lambda: decoupled_noise(0.0, 1.0), "step_size"),
    (lambda: decoupled_noise(0.1, 0.0), "temperature"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(call, arg):
    with pytest.raises(ValueError, match=rf"^{re.escape(arg)}:"):
        call()


SAMPLERS = {
    "langevin_eq1": lambda x0, g: langevin(gaussian(), x0, 7, 0.3, generator=g, record_every=2),
    "langevin_decoupled": lambda x0, g: langevin(gaussian(), x0, 7, 0.1, noise=0.2, generator=g,
                                                 record_every=2),
    "mala": lambda x0, g: mala(gaussian(), x0, 7, 0.3, generator=g, record_every=2),
    "ou": lambda x0, g: ornstein_uhlenbeck(gaussian(), x0, 7, 0.3, generator=g, record_every=2),
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_reproducible_and_shapes(name):
    x0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    a = SAMPLERS[name](x0, torch.Generator().manual_seed(1))
    b = SAMPLERS[name](x0, torch.Generator().manual_seed(1))
    c = SAMPLERS[name](x0, torch.Generator().manual_seed(2))
    assert torch.equal(a.x, b.x) and torch.equal(a.trajectory, b.trajectory)
    assert not torch.equal(a.x, c.x)
    assert a.x.shape == x0.shape and a.x.dtype == F64 and not a.x.requires_grad
    # record_every=2 over 7 steps: x0 and steps 2, 4, 6.
    assert a.trajectory.shape == (4, 16, 2)
    assert torch.equal(a.trajectory[0], x0)
    if name == "mala":
        assert a.acceptance.shape == (16,)
        assert bool(((a.acceptance >= 0) & (a.acceptance <= 1)).all())
    assert not torch.equal(x0, a.x)  # x0 itself is not modified in place, the chains moved
    assert torch.equal(x0, torch.randn(16, 2, generator=torch.Generator().manual_seed(0),
                                       dtype=F64))


def test_record_last_frame_and_zero_steps():
    x0 = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    out = langevin(gaussian(), x0, 6, 0.2, generator=torch.Generator().manual_seed(1),
                   record_every=3)
    assert out.trajectory.shape == (3, 5, 2) and torch.equal(out.trajectory[-1], out.x)
    assert torch.equal(langevin(gaussian(), x0, 0, 0.2).x, x0)
    assert torch.equal(mala(gaussian(), x0, 0, 0.2).x, x0)
    assert langevin(gaussian(), x0, 2, 0.2).trajectory is None  # recording is opt-in


DIVERGING_X0 = torch.tensor([[0.0], [1e3], [1.0], [-1e3], [0.5]], dtype=F64)


@pytest.mark.parametrize("record_every", [0, 1, 4])
def test_divergence_names_the_sampler_the_chains_and_the_step(record_every):
    """On the double well 2(x² − 1)² at λ = 0.1 the chains started at ±1e3 overflow within 6
    steps and the others stay near the wells: langevin raises SamplerDiverged by default,
    counting 2 chains (not frames, whatever is recorded); check_finite=False hands the chains
    back instead."""
    def run(**kw):
        return langevin(DoubleWell(dtype=F64), DIVERGING_X0, 6, 0.1, record_every=record_every,
                        generator=torch.Generator().manual_seed(0), **kw)

    with pytest.raises(SamplerDiverged, match=r"^langevin: 2 chain\(s\) became non-finite "
                                              r"with step_size=0\.1; use a smaller step"):
        run()
    out = run(check_finite=False)
    assert (~torch.isfinite(out.x)).any(-1).tolist() == [False, True, False, True, False]


def test_divergence_at_a_recorded_frame_is_reported_even_if_a_transition_repairs_it():
    """A transition that resets non-finite states (every 6th step) leaves finite final states;
    the recorded frames still show the 2 chains that diverged on the way."""
    def repair(x, gen):
        return torch.where(torch.isfinite(x), x, torch.zeros_like(x))

    kw = {"transition": repair, "transition_every": 6, "record_every": 1,
          "generator": torch.Generator().manual_seed(0)}
    with pytest.raises(SamplerDiverged, match=r"^langevin: 2 chain\(s\) became non-finite"):
        langevin(DoubleWell(dtype=F64), DIVERGING_X0, 6, 0.1, **kw)
    kw["generator"] = torch.Generator().manual_seed(0)
    out = langevin(DoubleWell(dtype=F64), DIVERGING_X0, 6, 0.1, check_finite=False, **kw)
    assert bool(torch.isfinite(out.x).all()) and not bool(torch.isfinite(out.trajectory).all())


def test_grad_clip_bounds_each_gradient_entry():
    """Noiseless decoupled step far from the mode: |∇E| ≫ c, so x₁ = x₀ − α·c·sign(∇E)."""
    g = gaussian()
    x0 = torch.tensor([[50.0, -40.0], [-30.0, 20.0]], dtype=F64)
    out = langevin(g, x0, 1, 0.5, noise=0.0, grad_clip=0.01)
    torch.testing.assert_close(out.x, x0 - 0.5 * 0.01 * torch.sign(g.grad(x0)), rtol=0, atol=1e-14)
    unclipped = langevin(g, x0, 1, 0.5, noise=0.0)
    torch.testing.assert_close(unclipped.x, x0 - 0.5 * g.grad(x0), rtol=0, atol=1e-12)


def test_clamp_keeps_states_in_bounds():
    x0 = torch.rand(200, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    out = langevin(gaussian(), x0, 10, 0.5, generator=torch.Generator().manual_seed(1),
                   clamp=(0.0, 1.0), record_every=1)
    assert float(out.trajectory.min()) >= 0.0 and float(out.trajectory.max()) <= 1.0
    assert bool((out.x == 0).any() or (out.x == 1).any())  # the bound was active


def test_transition_applied_every_k_steps_with_the_generator():
    calls = []

    def shift(x, gen):
        calls.append(gen)
        return x + 1.0

    gen = torch.Generator().manual_seed(0)
    out = langevin(Flat(), X0, 10, 0.1, noise=0.0, generator=gen, transition=shift,
                   transition_every=3, record_every=1)
    assert len(calls) == 3 and all(c is gen for c in calls)
    torch.testing.assert_close(out.x, X0 + 3.0, rtol=0, atol=0)
    steps_after = [float(out.trajectory[t, 0, 0]) for t in range(11)]
    assert steps_after == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3]


def test_differentiable_steps_carry_the_parameter_graph():
    """One noiseless decoupled step x₁ = x₀ − αP(x₀ − μ): ∂(Σ x₁)/∂μ = α P 1 per chain."""
    g = gaussian()
    x0 = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    out = langevin(g, x0, 3, 0.2, noise=0.0, differentiable_steps=1)
    assert out.x.requires_grad
    (d_mu,) = torch.autograd.grad(out.x.sum(), g.mu)
    torch.testing.assert_close(d_mu, 4 * 0.2 * g.precision.detach() @ torch.ones(2, dtype=F64),
                               rtol=0, atol=1e-12)
    # Two differentiable steps: x₂ − μ = A²(x₀ − μ) with A = I − αP, so ∂/∂μ = 4(I − A²)ᵀ1.
    out2 = langevin(g, x0, 2, 0.2, noise=0.0, differentiable_steps=2)
    (d_mu2,) = torch.autograd.grad(out2.x.sum(), g.mu)
    A = torch.eye(2, dtype=F64) - 0.2 * g.precision.detach()
    torch.testing.assert_close(d_mu2,
                               4 * (torch.eye(2, dtype=F64) - A @ A).T @ torch.ones(2, dtype=F64),
                               rtol=0, atol=1e-12)
    assert not langevin(g, x0, 3, 0.2, noise=0.0).x.requires_grad
    # Without differentiated steps nothing reaches back to x0 either, not even at 0 steps.
    x0_grad = x0.clone().requires_grad_()
    for n in (0, 3):
        assert not langevin(g, x0_grad, n, 0.2, noise=0.0).x.requires_grad


def test_mala_small_step_accepts_almost_everything_and_large_step_rejects():
    gm = GaussianMixture([0.0, 0.5], [[-1.5, 0.0], [1.5, 0.5]], [0.4, 0.5], dtype=F64)
    x0 = gm.sample(2000, torch.Generator().manual_seed(0))
    small = mala(gm, x0, 5, 1e-4, generator=torch.Generator().manual_seed(1))
    large = mala(gm, x0, 5, 25.0, generator=torch.Generator().manual_seed(1))
    assert float(small.acceptance.mean()) > 0.99
    assert float(large.acceptance.mean()) < 0.05
    # Rejected chains stay exactly where they were.
    stuck = large.acceptance == 0
    assert torch.equal(large.x[stuck], x0[stuck])


def test_mala_rejects_non_finite_proposals():
    class Cliff(Energy):
        """½x² on x < 1, NaN beyond. The NaN is added as a constant so that ∇E stays finite
        everywhere: only the proposals past the cliff are poisoned, not every row's gradient."""

        event_shape = (1,)

        def forward(self, x):
            cliff = torch.where(x[:, 0] < 1.0, 0.0, float("nan"))
            return 0.5 * x[:, 0] ** 2 + cliff

    x0 = torch.zeros(500, 1, dtype=F64)
    # λ = 2: y = √2 ξ, so about a quarter of all proposals land past the cliff.
    out = mala(Cliff(), x0, 20, 2.0, generator=torch.Generator().manual_seed(0))
    assert bool(torch.isfinite(out.x).all()) and float(out.x.max()) < 1.0
    # The chains did move (acceptance well away from 0 and 1) and reached the cliff's edge.
    assert 0.3 < float(out.acceptance.mean()) < 0.95
    assert float(out.x.max()) > 0.5


def test_effective_temperature_formula():
    assert effective_temperature(10.0, 0.005) == pytest.approx(0.005**2 / 20, rel=1e-15)
    assert effective_temperature(0.5, math.sqrt(1.0)) == pytest.approx(1.0)


@pytest.mark.parametrize("shape,dtype", [
    ((1 << 14,), torch.float32),        # one value per chain: words of the element size
    ((1 << 13, 2), torch.float32),      # a row is one int64
    ((5462, 3), torch.float32),         # 12-byte rows: int32 words
    ((2732, 2, 3), torch.float32),      # the last dimension sets the word (12 bytes), not dim 1
    ((1 << 14, 1), torch.float16),      # 2-byte rows
    ((1 << 12, 4), torch.float64),
])
def test_mala_row_select_is_torch_where_bit_for_bit(shape, dtype):
    """MALA's accept/reject select on CPU (large tensors: integer words and bit masks) equals
    torch.where row by row, NaN payloads and signed zeros included."""
    from ebmref.samplers import _select

    g = torch.Generator().manual_seed(0)
    new = torch.randn(shape, generator=g).to(dtype)
    old = torch.randn(shape, generator=g).to(dtype)
    new.view(-1)[::7] = float("nan")
    old.view(-1)[::5] = -0.0
    accept = torch.rand(shape[0], generator=g) < 0.5
    want = torch.where(accept.view((-1,) + (1,) * (len(shape) - 1)), new, old)
    got = _select(accept, new, old)
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[want.element_size()]
    assert got.shape == want.shape and torch.equal(got.view(bits), want.view(bits))


def test_one_step_is_the_update_formula_with_the_generators_draw():
    """x₁ = x₀ − (λ/2)∇E(x₀) + √λ ξ (eq. 1) and the exact OU step x₁ = μ + e^{−τP}(x₀ − μ) + Lξ
    (LLᵀ = Σ − e^{−τP}Σe^{−τP}ᵀ) with ξ the generator's next standard normal draw: the sign and
    scale of the noise, not only its law."""
    g = gaussian()
    x0 = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    xi = torch.randn(6, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    for differentiated in (0, 1):  # the fused update and the one autograd records
        ula = langevin(g, x0, 1, 0.3, generator=torch.Generator().manual_seed(1),
                       differentiable_steps=differentiated).x
        torch.testing.assert_close(ula.detach(), x0 - 0.15 * g.grad(x0) + math.sqrt(0.3) * xi,
                                   rtol=0, atol=1e-14)
    with torch.no_grad():
        decay = torch.linalg.matrix_exp(-0.3 * g.precision)
        cov = g.covariance - decay @ g.covariance @ decay.T
        chol = torch.linalg.cholesky(0.5 * (cov + cov.T))
        want = g.mu + (x0 - g.mu) @ decay.T + xi @ chol.T
    ou = ornstein_uhlenbeck(g, x0, 1, 0.3, generator=torch.Generator().manual_seed(1)).x
    torch.testing.assert_close(ou, want, rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", ["mala", "ou"])
def test_mala_and_ou_record_on_request_and_end_on_the_last_step(name):
    sampler = {"mala": mala, "ou": ornstein_uhlenbeck}[name]
    x0 = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert sampler(gaussian(), x0, 6, 0.2).trajectory is None  # recording is opt-in
    out = sampler(gaussian(), x0, 6, 0.2, generator=torch.Generator().manual_seed(1),
                  record_every=3)
    assert out.trajectory.shape == (3, 5, 2)  # x0 and steps 3, 6
    assert torch.equal(out.trajectory[0], x0) and torch.equal(out.trajectory[-1], out.x)


class _Escaping(Gaussian):
    """A pathological energy whose MALA proposals are finite but are accepted into −∞ energy
    at infinite states: ∇E = 1e308 at finite x (the proposal overflows to −inf), and E is
    lower there, so the Hastings ratio accepts."""

    def energy_and_grad(self, x, create_graph=False):
        finite = torch.isfinite(x).all(-1)
        g = torch.where(torch.isfinite(x), torch.full_like(x, 1e308), torch.full_like(x, -1e308))
        return torch.where(finite, 0.0, -1.0).to(x.dtype), g


def test_mala_chains_that_leave_the_finite_numbers_raise_by_default():
    energy = _Escaping([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    for record_every in (0, 1):
        with pytest.raises(SamplerDiverged, match=r"^mala: 3 chain\(s\) became non-finite "
                                                  r"with step_size=4\.0; "):
            mala(energy, torch.zeros(3, 2, dtype=F64), 1, 4.0, record_every=record_every,
                 generator=torch.Generator().manual_seed(6))


def test_energy_type_errors_name_what_they_got():
    with pytest.raises(ValueError,
                       match=r"^energy: expected an ebmref\.energy\.Energy .* got int$"):
        langevin(3, X0, 5, 0.1)
    with pytest.raises(ValueError, match=r"^energy: the exact OU transition needs a Gaussian, "
                                         r"got .*DoubleWell"):
        ornstein_uhlenbeck(DoubleWell(), X0, 5, 0.1)


def test_all_steps_differentiated_reach_back_to_x0():
    """differentiable_steps = n_steps = 1, noiseless decoupled step: ∂x₁/∂x₀ = I − αP per chain,
    so ∂(Σx₁)/∂x₀ = (I − αP)ᵀ1 for every chain."""
    g = gaussian()
    x0 = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    x0.requires_grad_()
    out = langevin(g, x0, 1, 0.2, noise=0.0, differentiable_steps=1)
    (dx0,) = torch.autograd.grad(out.x.sum(), x0)
    a = torch.eye(2, dtype=F64) - 0.2 * g.precision.detach()
    torch.testing.assert_close(dx0, (a.T @ torch.ones(2, dtype=F64)).expand(3, 2), rtol=0,
                               atol=1e-12)
