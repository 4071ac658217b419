"""Software tests of ensembles (ebmref.ensemble): G seeds trained as one vectorised model must
behave as G independent models — same energies and gradients per member, separate replay
buffers, per-member entropy, and each member's weight gradient equal to its own loss's."""

from __future__ import annotations

import copy

import pytest
import torch

from ebmref.buffer import ReplayBuffer, UniformNoise
from ebmref.config import TrainConfig, with_overrides
from ebmref.energy import Energy
from ebmref.ensemble import EnsembleEnergy, StackedMLPEnergy
from ebmref.entropy import kozachenko_leonenko, nearest_neighbour_surrogate
from ebmref.nets import MLPEnergy
from ebmref.objectives import contrastive_loss
from ebmref.training import TrainState, train, train_step

DT = torch.float64
G, B = 3, 8


def _members(g: int = G) -> list[MLPEnergy]:
    out = []
    for seed in range(g):
        torch.manual_seed(seed)
        out.append(MLPEnergy(2, hidden=8, depth=2).to(DT))
    return out


KINDS = [EnsembleEnergy, StackedMLPEnergy]


@pytest.mark.parametrize("kind", KINDS)
def test_members_energy_and_gradient_match_standalone_modules(kind):
    members = _members()
    ens = kind(members)
    x = torch.randn(G * B, 2, generator=torch.Generator().manual_seed(0), dtype=DT)
    e, grad = ens.energy_and_grad(x)
    for g, m in enumerate(members):
        rows = slice(g * B, (g + 1) * B)
        e_m, grad_m = m.energy_and_grad(x[rows])
        assert torch.allclose(e[rows], e_m, atol=1e-12) and torch.allclose(grad[rows], grad_m,
                                                                           atol=1e-12)
        copy_g = ens.member(g)  # a standalone copy with the same weights
        assert torch.allclose(copy_g(x[rows]), e_m, atol=1e-12)
    # Broken variant the check catches: rows evaluated by the wrong member.
    assert not torch.allclose(e[:B], members[1](x[:B]), atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_invalid_ensembles_are_rejected(kind):
    with pytest.raises(ValueError, match="members"):
        kind([])
    with pytest.raises(ValueError, match="same architecture"):
        kind([MLPEnergy(2, hidden=8), MLPEnergy(2, hidden=4)])
    with pytest.raises(ValueError, match="n_members"):
        kind(_members())(torch.zeros(4, 2, dtype=DT))
    with pytest.raises(ValueError, match="g:"):
        kind(_members()).member(G)
    with pytest.raises(ValueError, match="spectral"):
        StackedMLPEnergy([MLPEnergy(2, hidden=8, spectral_norm=True)])


def test_member_buffers_stay_separate():
    """Reads, FIFO and reservoir pushes and peeks of G·n states touch member g's block only:
    tag every stored state with its member, and every block of a read carries its own tag."""
    for replacement in ("fifo", "reservoir"):
        buf = ReplayBuffer(5, "noise", reinit_prob=0.0, replacement=replacement,
                           noise_fn=UniformNoise((1,), dtype=DT), n_members=G)
        gen = torch.Generator().manual_seed(1)
        buf.sample(G, gen)
        buf.storage = torch.arange(G, dtype=DT).repeat_interleave(5)[:, None]  # tag = member
        for _ in range(4):
            x, _ = buf.sample(G * 2, gen)
            assert torch.equal(x[:, 0].floor(), torch.arange(G, dtype=DT).repeat_interleave(2))
            buf.push(x.floor() + 0.5, gen)  # new states keep their member in the integer part
            assert torch.equal(buf.storage[:, 0].floor(),
                               torch.arange(G, dtype=DT).repeat_interleave(5))
        assert torch.equal(buf.peek(G * 3, gen)[:, 0].floor(),
                           torch.arange(G, dtype=DT).repeat_interleave(3))
    with pytest.raises(ValueError, match="n_members"):
        buf.sample(G + 1, gen)


@pytest.mark.parametrize("estimator", [nearest_neighbour_surrogate, kozachenko_leonenko])
def test_grouped_entropy_is_the_mean_of_the_groups_estimates(estimator):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(G * 20, 2, generator=gen, dtype=DT)
    ref = torch.randn(G * 10, 2, generator=gen, dtype=DT)
    blocks = [estimator(x[g * 20:(g + 1) * 20], reference=ref[g * 10:(g + 1) * 10])
              for g in range(G)]
    got = estimator(x, reference=ref, groups=G)
    assert torch.allclose(got, torch.stack(blocks).mean(), atol=1e-12)
    assert not torch.allclose(estimator(x, reference=ref), got, atol=1e-6)  # ungrouped differs


def _config(**extra) -> TrainConfig:
    return with_overrides(TrainConfig(), {
        "run.n_updates": 30, "run.batch_size": B, "run.device": "cpu", "run.dtype": "float64",
        "run.progress": False, "run.log_every": 10, "buffer.size": 64, "buffer.noise_low": -3.0,
        "buffer.noise_high": 3.0, "sampler.n_steps": 5, "sampler.step_size": 0.05,
        "sampler.noise": None, "sampler.grad_clip": None, "sampler.clamp": None,
        "optim.lr": 1e-2, "optim.l2": 0.1, "optim.betas": (0.9, 0.999),
        "optim.max_grad_norm": None, **extra})


def test_each_members_gradient_is_its_own_loss_gradient():
    """After one train_step on G members, the stacked weight gradient of member g equals the
    gradient of member g's own contrastive loss on its own rows of x⁺ and x⁻ (a mean over all
    G·B rows without the sum over members would give 1/G of it)."""
    members = _members()
    state = TrainState.create(EnsembleEnergy(copy.deepcopy(members)), _config())
    x_pos = 0.3 * torch.randn(G * B, 2, generator=torch.Generator().manual_seed(3), dtype=DT)
    out = train_step(state, x_pos)
    stacked = StackedMLPEnergy(members)
    for g, m in enumerate(members):
        rows = slice(g * B, (g + 1) * B)
        loss = contrastive_loss(m(x_pos[rows]), m(out.x_neg[rows]), 0.1)
        want = torch.autograd.grad(loss, list(m.parameters()))
        got = [state.energy.stacked[k.replace(".", "__")].grad[g]
               for k, _ in m.named_parameters()]
        assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(got, want))
    # The stacked MLP's losses sum the same way: its weight gradients are the members' too.
    loss = G * contrastive_loss(stacked(x_pos), stacked(out.x_neg), 0.1)
    got = torch.autograd.grad(loss, list(stacked.weights))
    for g, m in enumerate(members):
        rows = slice(g * B, (g + 1) * B)
        loss_g = contrastive_loss(m(x_pos[rows]), m(out.x_neg[rows]), 0.1)
        want = torch.autograd.grad(loss_g, [lin.weight for lin in m.net
                                            if isinstance(lin, torch.nn.Linear)])
        assert all(torch.allclose(a[g], b.T, atol=1e-12) for a, b in zip(got, want))


@pytest.mark.parametrize("kind", KINDS)
def test_an_ensemble_trains_and_rejects_coupling_options(kind):
    """Three members fit N(1, 0.3²) by NLL with the KL loss: every member's energy moves its
    minimum to the data (E of the data mean below E of the origin)."""
    data = 1.0 + 0.3 * torch.randn(512, 2, generator=torch.Generator().manual_seed(4), dtype=DT)
    ens = kind(_members())
    res = train(ens, data, _config(**{"kl.weight": 1.0, "kl.entropy_weight": 0.3,
                                      "kl.entropy_reference": 16, "kl.n_chains": 4}))
    assert res.step == 30 and res.buffer.storage.shape == (G * 64, 2)
    for g in range(G):
        m = ens.member(g)
        with torch.no_grad():
            assert float(m(torch.ones(1, 2, dtype=DT))) < float(m(torch.zeros(1, 2, dtype=DT)))
    with pytest.raises(ValueError, match="max_grad_norm"):
        train(kind(_members()), data, _config(**{"optim.max_grad_norm": 1.0}))
    assert isinstance(ens, Energy) and ens.n_members == G
