"""Contracts of ebmref.ensemble beyond the happy path of test_ensemble.py: the exact argument
errors, a one-member ensemble (G ≥ 1 per the docstring), members that carry buffers, the
event shape, and ``member(g)`` returning independent copies in the ensemble's dtype with the
members' activation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ebmref.energy import Energy
from ebmref.ensemble import EnsembleEnergy, StackedMLPEnergy
from ebmref.nets import MLPEnergy

DT = torch.float64
G, B = 3, 4
KINDS = [EnsembleEnergy, StackedMLPEnergy]


def _members(g: int = G, **kwargs) -> list[MLPEnergy]:
    out = []
    for seed in range(g):
        torch.manual_seed(seed)
        out.append(MLPEnergy(2, hidden=6, depth=2, **kwargs).to(DT))
    return out


def _x(n: int) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(7), dtype=DT)


class _Centred(Energy):
    """E(x) = a·‖x − c‖² with a trained scale a and a buffer c (in a submodule, so that the
    buffer's name has a dot)."""

    def __init__(self, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.a = nn.Parameter(1.0 + torch.rand(1, generator=gen, dtype=DT))
        self.inner = nn.Module()
        self.inner.register_buffer("c", torch.randn(2, generator=gen, dtype=DT))
        self.event_shape = (2,)

    def forward(self, x):
        self._check_batch(x)
        return self.a * ((x - self.inner.c) ** 2).sum(-1)


def test_ensemble_energy_argument_errors_are_exact():
    """Empty, non-Energy and mixed-architecture members, a batch that does not split into G
    blocks and a member index out of range are refused with their full messages."""
    bad_members = r"^members: expected a non-empty sequence of ebmref Energy modules$"
    with pytest.raises(ValueError, match=bad_members):
        EnsembleEnergy([])
    with pytest.raises(ValueError, match=bad_members):
        EnsembleEnergy([nn.Linear(2, 1)])  # a module, but not an Energy
    with pytest.raises(ValueError, match=r"^members: all members must have the same "
                                         r"architecture$"):
        EnsembleEnergy([MLPEnergy(2, hidden=8), MLPEnergy(2, hidden=4)])


def test_stacked_mlp_argument_errors_are_exact():
    with pytest.raises(ValueError, match=r"^members: expected a non-empty sequence of "
                                         r"MLPEnergy modules$"):
        StackedMLPEnergy([])
    with pytest.raises(ValueError, match=r"^members: spectrally normalised MLPs are not "
                                         r"supported here; use EnsembleEnergy$"):
        StackedMLPEnergy([MLPEnergy(2, hidden=8, spectral_norm=True)])
    with pytest.raises(ValueError, match=r"^members: all members must have the same "
                                         r"architecture$"):
        StackedMLPEnergy([MLPEnergy(2, hidden=8), MLPEnergy(2, hidden=4)])


@pytest.mark.parametrize("kind", KINDS)
def test_batch_and_index_errors_are_exact(kind):
    """The row count in the message is the batch's (4), not its width (2); the index range is
    [0, G − 1]; the event shape (2,) of the members is checked."""
    ens = kind(_members())
    with pytest.raises(ValueError, match=r"^x: 4 rows do not split into n_members=3 blocks$"):
        ens(torch.zeros(4, 2, dtype=DT))
    with pytest.raises(ValueError, match=r"^g: must be a member index in \[0, 2\], got 3$"):
        ens.member(G)
    assert ens.event_shape == (2,)
    with pytest.raises(ValueError, match=r"^x: expected shape \(B, 2\), got \(3, 5\)$"):
        ens(torch.zeros(3, 5, dtype=DT))


def test_a_one_member_ensemble_is_its_member():
    """G = 1 is allowed: the ensemble evaluates as its only member."""
    (m,) = _members(1)
    ens = EnsembleEnergy([m])
    x = _x(5)
    assert ens.n_members == 1 and ens.event_shape == (2,)
    torch.testing.assert_close(ens(x), m(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(ens.member(0)(x), m(x), rtol=0, atol=1e-12)


def test_members_with_buffers_use_their_own_buffers():
    """Stacked buffers (here the centre c of each member) are part of every member's state:
    block g is evaluated with member g's parameter and buffer, and member(g) restores both."""
    members = [_Centred(seed) for seed in range(G)]
    ens = EnsembleEnergy(members)
    x = _x(G * B)
    e = ens(x)
    for g, m in enumerate(members):
        rows = slice(g * B, (g + 1) * B)
        want = m.a * ((x[rows] - m.inner.c) ** 2).sum(-1)  # the closed form, not m.forward
        torch.testing.assert_close(e[rows], want.detach(), rtol=0, atol=1e-12)
        copy_g = ens.member(g)
        assert torch.equal(copy_g.inner.c, m.inner.c) and torch.equal(copy_g.a, m.a)
    # Broken variant the check catches: all blocks with member 0's centre.
    assert not torch.allclose(e[B:2 * B], members[0](x[B:2 * B]), atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_member_copies_are_independent(kind):
    """Copies taken one after the other do not share storage: member 0's copy still evaluates
    as member 0 after member 1 was taken, and training a copy leaves the ensemble unchanged."""
    members = _members()
    ens = kind(members)
    x = _x(B)
    m0 = ens.member(0)
    m1 = ens.member(1)
    with torch.no_grad():
        torch.testing.assert_close(m0(x), members[0](x), rtol=0, atol=1e-12)
        torch.testing.assert_close(m1(x), members[1](x), rtol=0, atol=1e-12)
        for p in m0.parameters():
            p.add_(1.0)
        torch.testing.assert_close(ens.member(0)(x), members[0](x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_member_has_the_ensembles_dtype(kind):
    """An ensemble built from float64 members and then cast to float32 returns float32
    members (the docstring: "on this ensemble's device and dtype")."""
    ens = kind(_members()).float()
    m = ens.member(1)
    assert all(p.dtype == torch.float32 for p in m.parameters())
    assert m(_x(B).float()).dtype == torch.float32


def test_stacked_member_keeps_the_activation():
    """A tanh MLP's member is a tanh MLP with the same energies (not the default Swish)."""
    members = _members(activation="tanh")
    ens = StackedMLPEnergy(members)
    x = _x(G * B)
    with torch.no_grad():
        torch.testing.assert_close(ens(x)[:B], members[0](x[:B]), rtol=0, atol=1e-12)
        for g, m in enumerate(members):
            copy_g = ens.member(g)
            assert copy_g.activation == "tanh"
            torch.testing.assert_close(copy_g(x), m(x), rtol=0, atol=1e-12)
