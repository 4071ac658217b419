"""Software tests of ebmref.negatives.sample_negatives: the one place that dispatches between
ULA, MALA and the KL loss's differentiated chains (paper §2.3, §5.4.2)."""

from __future__ import annotations

import pytest
import torch

from ebmref.config import KLConfig, SamplerConfig
from ebmref.energy import Gaussian
from ebmref.negatives import sample_negatives
from ebmref.samplers import langevin, mala

DT = torch.float64
EQ1 = {"noise": None, "grad_clip": None, "clamp": None}


def _setup():
    energy = Gaussian([0.5, -1.0], [[1.0, 0.3], [0.3, 0.5]], dtype=DT)
    x0 = torch.randn(12, 2, generator=torch.Generator().manual_seed(0), dtype=DT)
    return energy, x0


def test_ula_and_mala_dispatch_match_the_samplers():
    energy, x0 = _setup()
    ula = SamplerConfig(n_steps=7, step_size=0.1, **EQ1)
    got = sample_negatives(energy, x0, ula, generator=torch.Generator().manual_seed(1))
    want = langevin(energy, x0, 7, 0.1, generator=torch.Generator().manual_seed(1)).x
    assert torch.equal(got.x, want) and got.x_diff is None and got.acceptance is None
    m = SamplerConfig(kind="mala", n_steps=7, step_size=0.3, **EQ1)
    got = sample_negatives(energy, x0, m, generator=torch.Generator().manual_seed(1))
    want = mala(energy, x0, 7, 0.3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(got.x, want.x) and torch.equal(got.acceptance, want.acceptance)
    assert not got.x.requires_grad


@pytest.mark.parametrize("k", [1, 3])
def test_kl_chains_keep_the_graph_of_the_last_k_steps(k):
    """With the KL loss on, x̃ = x⁻ carries the graph of exactly the last k steps: its
    θ-gradient equals that of ``langevin(..., differentiable_steps=k)`` with the same noise,
    and differs from the one with another k."""
    energy, x0 = _setup()
    ula = SamplerConfig(n_steps=5, step_size=0.2, **EQ1)
    out = sample_negatives(energy, x0, ula, KLConfig(weight=1.0, differentiable_steps=k),
                           generator=torch.Generator().manual_seed(2))
    assert not out.x.requires_grad and torch.equal(out.x, out.x_diff.detach())

    def grad_mu(x):
        return torch.autograd.grad(x.sum(), energy.mu)[0]

    ref = {j: langevin(energy, x0, 5, 0.2, generator=torch.Generator().manual_seed(2),
                       differentiable_steps=j).x for j in (k, 4 - k)}
    got = grad_mu(out.x_diff)
    assert torch.allclose(got, grad_mu(ref[k]), atol=1e-12)
    assert not torch.allclose(got, grad_mu(ref[4 - k]), atol=1e-6)


def test_kl_chain_subset_reruns_the_last_steps_on_m_chains():
    """Du et al. (2020)'s split run: x⁻ from all chains (detached), x̃ from the last k steps
    rerun with fresh noise on the first m chains only."""
    energy, x0 = _setup()
    ula = SamplerConfig(n_steps=6, step_size=0.2, **EQ1)
    out = sample_negatives(energy, x0, ula, KLConfig(weight=1.0, differentiable_steps=2,
                                                     n_chains=4),
                           generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    mid = langevin(energy, x0, 4, 0.2, generator=g).x
    x_neg = langevin(energy, mid, 2, 0.2, generator=g).x
    x_diff = langevin(energy, mid[:4], 2, 0.2, generator=g, differentiable_steps=2).x
    assert torch.equal(out.x, x_neg) and torch.equal(out.x_diff.detach(), x_diff.detach())
    assert out.x_diff.shape == (4, 2) and out.x_diff.requires_grad
    # KL off: the same config runs one detached chain and returns no x̃.
    off = sample_negatives(energy, x0, ula, KLConfig(weight=0.0, n_chains=4),
                           generator=torch.Generator().manual_seed(3))
    assert off.x_diff is None and off.x.shape == (12, 2)


def test_du_decoupled_step_and_transitions_reach_the_sampler():
    """Du's decoupled step (``sampler.noise`` = σ, grad clip, clamp) and the transition every
    N steps are passed through: x⁻ equals ``langevin`` with the same settings bit for bit (and
    not eq. 1, nor a run without the transition)."""
    energy, x0 = _setup()
    flip = lambda x, g: -x
    du = SamplerConfig(n_steps=6, step_size=0.05, noise=0.3, grad_clip=0.5, clamp=(-2.0, 2.0),
                       transition_every=2)
    got = sample_negatives(energy, x0, du, generator=torch.Generator().manual_seed(4),
                           transition=flip).x
    kw = {"grad_clip": 0.5, "clamp": (-2.0, 2.0)}
    want = langevin(energy, x0, 6, 0.05, 0.3, generator=torch.Generator().manual_seed(4),
                    transition=flip, transition_every=2, **kw).x
    assert torch.equal(got, want)
    for other in (langevin(energy, x0, 6, 0.05, None, generator=torch.Generator().manual_seed(4),
                           transition=flip, transition_every=2, **kw).x,
                  langevin(energy, x0, 6, 0.05, 0.3, generator=torch.Generator().manual_seed(4),
                           **kw).x):
        assert not torch.allclose(got, other)
    # transition_every = 0: a transition given to the training loop is not applied by the sampler.
    du0 = SamplerConfig(n_steps=6, step_size=0.05, noise=0.3, grad_clip=0.5, clamp=(-2.0, 2.0))
    got0 = sample_negatives(energy, x0, du0, generator=torch.Generator().manual_seed(4),
                            transition=flip).x
    want0 = langevin(energy, x0, 6, 0.05, 0.3, generator=torch.Generator().manual_seed(4), **kw).x
    assert torch.equal(got0, want0)


@pytest.mark.parametrize("m", [1, 12])
def test_kl_chain_subset_bounds(m):
    """m = 1 is a split run with one differentiated chain; m = B (every chain) is no split:
    x̃ is x⁻ itself, with its graph."""
    energy, x0 = _setup()
    ula = SamplerConfig(n_steps=4, step_size=0.2, **EQ1)
    out = sample_negatives(energy, x0, ula, KLConfig(weight=1.0, differentiable_steps=1,
                                                     n_chains=m),
                           generator=torch.Generator().manual_seed(5))
    assert out.x_diff.shape == (m, 2) and out.x_diff.requires_grad
    if m == 12:
        assert torch.equal(out.x_diff.detach(), out.x)


class _Escaping(Gaussian):
    """A pathological energy whose MALA chains are accepted at −∞: ∇E = 1e308 at finite x
    (the proposal overflows), −1e308 there, and a lower energy there (acceptance ratio e)."""

    def energy_and_grad(self, x, create_graph=False):
        finite = torch.isfinite(x).all(-1)
        g = torch.where(torch.isfinite(x), torch.full_like(x, 1e308), torch.full_like(x, -1e308))
        return torch.where(finite, 0.0, -1.0).to(x.dtype), g


def test_non_finite_mala_chains_are_left_to_the_training_loop():
    """sample_negatives does not raise on non-finite chains (MALA included): the training loop
    checks x⁻ over all ranks at once, so that no rank stops alone."""
    energy = _Escaping([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]], dtype=DT)
    m = SamplerConfig(kind="mala", n_steps=1, step_size=4.0, **EQ1)
    out = sample_negatives(energy, torch.zeros(3, 2, dtype=DT), m,
                           generator=torch.Generator().manual_seed(6))
    assert not torch.isfinite(out.x).any()
