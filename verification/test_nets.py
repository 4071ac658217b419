"""Software tests of the neural energies (ebmref/nets.py): shapes, the IGEBM architecture as
read from IGEBM's code (Du & Mordatch, 2019), spectral normalisation on every layer, the
multi-scale sum."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ebmref.energy import Energy
from ebmref.nets import IGEBMEnergy, MLPEnergy, MultiScaleEnergy


def test_mlp_shapes_and_gradient(rng):
    e = MLPEnergy(2, hidden=8, depth=3).double()
    assert isinstance(e, Energy) and e.event_shape == (2,)
    x = torch.randn(5, 2, generator=rng, dtype=torch.float64)
    assert e(x).shape == (5,)
    _, g = e.energy_and_grad(x)
    # central differences against autograd (float64)
    h = 1e-6
    for j in range(2):
        dx = torch.zeros_like(x)
        dx[:, j] = h
        fd = (e(x + dx) - e(x - dx)) / (2 * h)
        torch.testing.assert_close(g[:, j], fd, rtol=1e-6, atol=1e-8)
    assert len([m for m in e.net if isinstance(m, nn.Linear)]) == 4
    assert len([m for m in e.net if isinstance(m, nn.SiLU)]) == 3
    with pytest.raises(ValueError, match="x"):
        e(torch.randn(5, 3, dtype=torch.float64))
    one_d = MLPEnergy(1)
    assert one_d(torch.randn(4, 1)).shape == (4,)


@pytest.mark.parametrize("kwargs,field", [
    ({"dim": 0}, "dim"), ({"dim": 2, "hidden": 0}, "hidden"), ({"dim": 2, "depth": 0}, "depth"),
    ({"dim": 2, "activation": "gelu2"}, "activation"),
])
def test_mlp_rejects_bad_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        MLPEnergy(**kwargs)


def test_igebm_architecture_matches_peers():
    """3×3 conv 1→64, 4×4/2 convs 64→64→128→256 with maps 28→14→7→4, linear 4096→128→1."""
    e = IGEBMEnergy()
    assert (e.conv0.in_channels, e.conv0.out_channels, e.conv0.kernel_size) == (1, 64, (3, 3))
    chans = [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in e.convs]
    assert chans == [(64, 64, (4, 4), (2, 2)), (64, 128, (4, 4), (2, 2)),
                     (128, 256, (4, 4), (2, 2))]
    assert (e.fc1.in_features, e.fc1.out_features) == (4096, 128)
    assert (e.fc2.in_features, e.fc2.out_features) == (128, 1)
    sizes = []
    hooks = [c.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1])) for c in e.convs]
    x = torch.rand(3, 1, 28, 28)
    assert e(x).shape == (3,)
    for h in hooks:
        h.remove()
    assert sizes == [14, 7, 4]
    n_params = sum(p.numel() for p in e.parameters())
    expected = (64 * 9 + 64) + (64 * 64 * 16 + 64) + (64 * 128 * 16 + 128) \
        + (128 * 256 * 16 + 256) + (4096 * 128 + 128) + (128 + 1)
    assert n_params == expected


def test_igebm_uses_leaky_relu_02():
    """Replacing the body's nonlinearity reproduces the forward pass exactly only with
    leaky ReLU(0.2) — the check fails for slope 0.1 or plain ReLU."""
    torch.manual_seed(0)
    e = IGEBMEnergy().double()
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)

    def manual(slope):
        h = F.leaky_relu(e.conv0(x), slope)
        for conv, size in zip(e.convs, (28, 14, 7)):
            pad = (1, 1, 1, 1) if size != 7 else (1, 2, 1, 2)
            h = F.leaky_relu(conv(F.pad(h, pad)), slope)
        return e.fc2(F.leaky_relu(e.fc1(h.flatten(1)), slope)).squeeze(-1)

    torch.testing.assert_close(e(x), manual(0.2), rtol=0, atol=1e-12)
    assert not torch.allclose(e(x), manual(0.1), atol=1e-9)


def test_spectral_norm_on_every_layer_and_other_sizes():
    e = IGEBMEnergy(spectral_norm=True, in_channels=3, image_size=32)
    layers = [m for m in e.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 6
    assert all(parametrize.is_parametrized(m, "weight") for m in layers)
    assert e.fc1.in_features == 256 * 4 * 4
    assert e(torch.rand(2, 3, 32, 32)).shape == (2,)
    small = IGEBMEnergy(image_size=7)
    assert small.fc1.in_features == 256 and small(torch.rand(2, 1, 7, 7)).shape == (2,)
    mlp = MLPEnergy(2, spectral_norm=True)
    assert all(parametrize.is_parametrized(m, "weight") for m in mlp.net
               if isinstance(m, nn.Linear))
    with pytest.raises(ValueError, match="in_channels"):
        IGEBMEnergy(in_channels=0)


def test_multiscale_is_sum_of_experts_on_downsampled_images(rng):
    torch.manual_seed(0)
    ms = MultiScaleEnergy(lambda s: IGEBMEnergy(image_size=s), scales=(28, 14, 7)).double()
    x = torch.rand(4, 1, 28, 28, generator=rng, dtype=torch.float64)
    per = ms.expert_energies(x)
    assert per.shape == (4, 3)
    torch.testing.assert_close(ms(x), per.sum(-1), rtol=0, atol=1e-12)
    # each expert sees the average-pooled image of its own size
    torch.testing.assert_close(per[:, 1], ms.experts[1](F.avg_pool2d(x, 2)), rtol=0, atol=1e-12)
    torch.testing.assert_close(per[:, 2], ms.experts[2](F.avg_pool2d(x, 4)), rtol=0, atol=1e-12)
    # a non-divisor size uses antialiased interpolation and still gives (B,)
    ms2 = MultiScaleEnergy(lambda s: IGEBMEnergy(image_size=s), scales=(28, 10)).double()
    assert ms2(x).shape == (4,)
    g = ms.grad(x)
    assert g.shape == x.shape and torch.isfinite(g).all()
    with pytest.raises(ValueError, match="scales"):
        MultiScaleEnergy(lambda s: IGEBMEnergy(image_size=s), scales=())
