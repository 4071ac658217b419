"""Tests of the transitions (ebmref/transitions.py): reproducibility from the generator,
differentiability of the elastic deformation, torchvision augmentation without touching the
global RNG, symmetry moves drawing group elements uniformly."""

from __future__ import annotations

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
