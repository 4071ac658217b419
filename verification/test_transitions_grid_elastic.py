"""The batched grid_sample elastic deformation (paper §6.3) against elasticdeform."""

from __future__ import annotations

import pytest
import torch

from ebmref.transitions import GridElasticDeform


def _image(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((1, 1, 12, 12), generator=g, dtype=torch.float64)


@pytest.mark.parametrize("shift", [(1.0, 0.0), (0.0, -2.0), (2.0, 1.0)])
def test_rigid_shift_matches_elasticdeform(shift):
    etorch = pytest.importorskip("elasticdeform.torch")
    x = _image()
    coarse = torch.empty(2, 3, 3, dtype=torch.float64)
    coarse[0], coarse[1] = shift
    ref = etorch.deform_grid(x[0], coarse, order=1, mode="nearest", axis=(1, 2))
    deform = GridElasticDeform(sigma=1.0, points=3)
    dense = torch.nn.functional.interpolate(coarse[None], size=(12, 12), mode="bicubic",
                                            align_corners=True)
    ours = deform.warp(x, dense)[0]
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=0)
    # a wrong sign convention (out(p) = x(p − d)) does not match
    wrong = deform.warp(x, -dense)[0]
    assert (wrong - ref).abs().max() > 0.1


def test_zero_sigma_is_identity_and_batches_are_independent():
    x = _image().repeat(4, 1, 1, 1)
    torch.testing.assert_close(GridElasticDeform(sigma=0.0)(x, torch.Generator().manual_seed(0)),
                               x, atol=1e-12, rtol=0)
    y = GridElasticDeform(sigma=1.5, points=4)(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape
    diffs = (y[1:] - y[:1]).flatten(1).abs().amax(1)
    assert bool((diffs > 1e-3).all())  # each image gets its own field
    same = GridElasticDeform(sigma=1.5, points=4)(x, torch.Generator().manual_seed(1))
    assert torch.equal(same, y)  # reproducible from the generator


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="sigma"):
        GridElasticDeform(sigma=-1.0)
    with pytest.raises(ValueError, match="points"):
        GridElasticDeform(points=1)
    with pytest.raises(ValueError, match="x"):
        GridElasticDeform()(torch.zeros(3, 28, 28))
