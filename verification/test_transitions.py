"""Tests of the transitions (ebmref/transitions.py): reproducibility from the generator,
differentiability of the elastic deformation, torchvision augmentation without touching the
global RNG, symmetry moves: group validation, each chain mapped by the element drawn for it,
elements drawn uniformly."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from ebmref.transitions import Augment, ElasticDeform, SymmetryMove
from verification.stats import ALPHA, assert_pvalues


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_elastic_deform_reproducible_identity_and_per_image():
    x = torch.rand(3, 1, 12, 12, generator=_gen(0), dtype=torch.float64)
    t = ElasticDeform(sigma=2.0, points=3)
    a, b = t(x, _gen(5)), t(x, _gen(5))
    assert torch.equal(a, b) and a.shape == x.shape
    assert not torch.equal(a, t(x, _gen(6)))
    assert (a - x).abs().max() > 0.05  # it moves
    torch.testing.assert_close(ElasticDeform(sigma=0.0)(x, _gen(1)), x, rtol=0, atol=1e-12)
    assert torch.equal(ElasticDeform(sigma=2.0, prob=0.0)(x, _gen(1)), x)
    same = x[:1].expand(2, -1, -1, -1).contiguous()
    y = t(same, _gen(2))
    assert not torch.allclose(y[0], y[1])  # each image gets its own displacement grid


def test_elastic_deform_gradient_is_exact():
    """elasticdeform.torch's backward is the adjoint of the (linear in x) deformation."""
    f = lambda x: ElasticDeform(sigma=1.5, points=3)(x, _gen(0))
    x = torch.rand(2, 1, 6, 6, generator=_gen(1), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (x,))


def test_augment_reproducible_and_leaves_global_rng_alone():
    x = torch.rand(4, 1, 16, 16, generator=_gen(0))
    aug = Augment(crop_scale=(0.5, 1.0), hflip=0.5, brightness=0.3, blur_sigma=(0.1, 1.0))
    before = torch.get_rng_state()
    a = aug(x, _gen(7))
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a, aug(x, _gen(7)))
    assert not torch.equal(a, aug(x, _gen(8)))
    assert a.shape == x.shape
    assert torch.equal(Augment(prob=0.0)(x, _gen(1)), x)
    with pytest.raises(ValueError, match="crop_scale"):
        Augment(crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="x"):
        aug(torch.rand(4, 16), _gen(0))


def test_symmetry_groups_are_groups():
    for move, size in ((SymmetryMove.rotations(8), 8), (SymmetryMove.sign_flips(3), 2),
                       (SymmetryMove.reflections(2), 4)):
        g = move.group
        assert g.shape[0] == size
        prods = (g[:, None] @ g[None]).reshape(-1, *g.shape[1:])
        # closed under composition: every product is an element of the group
        dist = (prods[:, None] - g[None]).flatten(2).abs().amax(-1).amin(-1)
        assert dist.max() < 1e-12


def _rotation(a: float) -> torch.Tensor:
    return torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]],
                        dtype=torch.float64)


def _conjugated_rotations_3d(n: int, seed: int) -> torch.Tensor:
    """Q diag(R_k, 1) Qᵀ, k = 0..n−1, for a random orthogonal Q: a cyclic group of 3-D maps with
    no special structure (not symmetric, not sparse)."""
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=_gen(seed), dtype=torch.float64))
    g = torch.zeros(n, 3, 3, dtype=torch.float64)
    g[:, 2, 2] = 1.0
    for k in range(n):
        g[k, :2, :2] = _rotation(2 * math.pi * k / n)
    return q @ g @ q.T


def test_symmetry_move_accepts_groups_and_rejects_other_sets():
    """A user-given group (conjugated C₅ in 3-D, the checkerboard's Klein group) is accepted;
    a set of orthogonal matrices without the identity, or not closed under products, is
    rejected with a ValueError naming ``group``."""
    SymmetryMove(_conjugated_rotations_3d(5, 0))
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    eye = torch.eye(2, dtype=torch.float64)
    SymmetryMove(torch.stack([eye, -eye, swap, -swap]).float())
    quarter = [_rotation(k * math.pi / 2) for k in range(4)]
    with pytest.raises(ValueError, match="group: the identity"):
        SymmetryMove(torch.stack(quarter[1:]))
    with pytest.raises(ValueError, match=r"group: not closed under products \(group\[1\] @ "
                                         r"group\[1\]"):
        SymmetryMove(torch.stack(quarter[:2]))
    with pytest.raises(ValueError, match="group: not closed"):
        SymmetryMove(_conjugated_rotations_3d(5, 0)[:4])


def test_symmetry_move_accepts_float32_and_integer_groups():
    """Rotation groups rounded to float32 are groups: their closure error is ~1e-6 (1.25e-6
    for n = 7, above the float64 tolerance 1e-6, within 64 ε of float32); the distance
    2d − 2⟨A, B⟩, right only for exactly orthogonal matrices, once refused them all (~4e-4).
    Integer groups are checked exactly (no ε). Sets that are not closed are still refused."""
    for group in (SymmetryMove.rotations(7, dtype=torch.float32).group,
                  SymmetryMove.rotations(60, dtype=torch.float32).group,
                  _conjugated_rotations_3d(7, 1).float()):
        assert SymmetryMove(group).group.dtype == torch.float32
    flips = torch.tensor([[[1, 0], [0, 1]], [[-1, 0], [0, -1]]])
    assert SymmetryMove(flips).group.dtype == torch.int64
    quarter = torch.stack([_rotation(k * math.pi / 2) for k in range(2)])
    for not_closed in (quarter.float(), quarter.round().long()):
        with pytest.raises(ValueError, match="group: not closed"):
            SymmetryMove(not_closed)


def _check_maps_by_drawn_element(move: SymmetryMove, n: int, gen: torch.Generator) -> None:
    """Each chain at e₁ goes to G_k e₁ for the element k drawn for it: the draws are replayed
    from the same generator state (``__call__`` draws k first), and ``apply`` is checked on
    every element."""
    d = move.group.shape[1]
    e1 = torch.zeros(n, d, dtype=torch.float64)
    e1[:, 0] = 1.0
    state = gen.get_state()
    y = move(e1, gen)
    replay = torch.Generator().manual_seed(0)
    replay.set_state(state)
    k = torch.randint(0, move.group.shape[0], (n,), generator=replay)
    torch.testing.assert_close(y, move.group[k][:, :, 0], rtol=0, atol=1e-12)
    every = torch.arange(move.group.shape[0])
    torch.testing.assert_close(move.apply(e1[: len(every)], every), move.group[:, :, 0],
                               rtol=0, atol=1e-12)


class _TransposedMove(SymmetryMove):
    """Broken: the row-vector convention x ↦ xG = Gᵀx (invisible in law: Gᵀ = G⁻¹ is drawn as
    often as G)."""

    def apply(self, x, k):
        return (x[:, None, :] @ self.group.to(x.dtype)[k])[:, 0]


@pytest.mark.parametrize("make", [lambda cls: cls.rotations(8),
                                  lambda cls: cls(_conjugated_rotations_3d(5, 1))],
                         ids=["rotations8", "conjugated_c5_3d"])
def test_symmetry_move_maps_each_chain_by_its_drawn_element(make):
    _check_maps_by_drawn_element(make(SymmetryMove), 64, _gen(3))
    with pytest.raises(AssertionError):  # broken: Gᵀ instead of G
        _check_maps_by_drawn_element(make(_TransposedMove), 64, _gen(3))


@pytest.mark.stochastic
def test_symmetry_move_draws_elements_uniformly(rng):
    """Rotating e₁ by a random element of C₈: the 8 angles are equally likely (χ² goodness of
    fit on 8 cells, n = 8000) and, with prob = ½, the count of unmoved points (binomial); α = 1e-6
    over the two p-values. Power: a
    move that never picks one element (expected count 1000 → 0) gives χ² ≈ 1143 ≫ threshold."""
    n, k = 8000, 8
    threshold = stats.chi2.isf(ALPHA / 2, k - 1)
    assert n / k > threshold  # dropping one element entirely is detected with certainty
    move = SymmetryMove.rotations(k)
    x = torch.zeros(n, 2, dtype=torch.float64)
    x[:, 0] = 1.0
    y = move(x, rng)
    torch.testing.assert_close(y.norm(dim=1), torch.ones(n, dtype=torch.float64))
    angle = torch.round(torch.atan2(y[:, 1], y[:, 0]) / (2 * torch.pi / k)).long() % k
    counts = torch.bincount(angle, minlength=k).double()
    half = SymmetryMove.rotations(k, prob=0.5)(x, rng)
    stayed = int((half[:, 0] == 1.0).sum())  # not moved (1/2) or moved by the identity (1/16)
    assert_pvalues({"chi2": float(stats.chisquare(counts.numpy()).pvalue),
                    "prob": float(stats.binomtest(stayed, n, 0.5 + 0.5 / k).pvalue)}, ALPHA)


def test_symmetry_move_rejects_bad_input():
    with pytest.raises(ValueError, match="orthogonal"):
        SymmetryMove(torch.tensor([[[2.0, 0.0], [0.0, 1.0]]]))
    with pytest.raises(ValueError, match="group"):
        SymmetryMove(torch.eye(2))
    with pytest.raises(ValueError, match="x"):
        SymmetryMove.rotations(4)(torch.zeros(3, 3), _gen(0))
    with pytest.raises(ValueError, match="sigma"):
        ElasticDeform(sigma=-1.0)
