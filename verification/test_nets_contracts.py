"""Contracts of ebmref.nets beyond test_nets.py: IGEBMEnergy's exact argument errors and its
smallest images (S = 1: one pixel, flatten width 4w·⌈S/8⌉²); MultiScaleEnergy's exact argument
errors, the event shape (channels × the largest scale, or () for shapeless experts), a scale of
1, and the non-divisor downsampling checked against an independent antialiased bilinear filter
(the triangle filter of PIL's resize with support widened by the scale factor)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ebmref.energy import Energy
from ebmref.nets import IGEBMEnergy, MultiScaleEnergy

DT = torch.float64


class _Linear(Energy):
    """E_s(y) = ⟨w_s, y⟩ with fixed weights, for images (channels, s, s); ``shaped=False``
    leaves the event shape empty."""

    def __init__(self, s: int, channels: int = 1, shaped: bool = True):
        super().__init__()
        gen = torch.Generator().manual_seed(s)
        self.w = torch.randn(channels * s * s, generator=gen, dtype=DT)
        self.event_shape = (channels, s, s) if shaped else ()

    def forward(self, x):
        self._check_batch(x)
        return x.flatten(1) @ self.w


def _aa_bilinear(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) antialiased bilinear resampling matrix: output pixel i averages the input
    pixels with a triangle of half-width `scale` = n_in/n_out centred at (i + ½)·scale (pixel
    centres at j + ½, half-pixel convention), weights normalised to sum 1."""
    scale = n_in / n_out
    centres = (np.arange(n_out) + 0.5) * scale
    t = (np.arange(n_in)[None, :] + 0.5 - centres[:, None]) / scale
    w = np.clip(1.0 - np.abs(t), 0.0, None)
    return w / w.sum(1, keepdims=True)


@pytest.mark.parametrize("kwargs,message", [
    ({"in_channels": 0}, r"^in_channels: must be an integer in \[1, ∞\], got 0$"),
    ({"image_size": 0}, r"^image_size: must be an integer in \[1, ∞\], got 0$"),
    ({"width": 0}, r"^width: must be an integer in \[1, ∞\], got 0$"),
])
def test_igebm_argument_errors_are_exact(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IGEBMEnergy(**kwargs)


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_igebm_takes_the_smallest_images(size):
    """Any S ≥ 1 (the 7, 14, … of a multi-scale model, down to one pixel): the SAME-padded
    stride-2 convs give ⌈S/8⌉ × ⌈S/8⌉ = 1 × 1 maps here, so fc1 reads 4w inputs."""
    e = IGEBMEnergy(in_channels=2, image_size=size, width=2).double()
    assert e.event_shape == (2, size, size) and e.fc1.in_features == 4 * 2
    x = torch.rand(3, 2, size, size, dtype=DT, generator=torch.Generator().manual_seed(size))
    assert e(x).shape == (3,)


def test_multiscale_argument_errors_are_exact():
    make = _Linear
    with pytest.raises(ValueError, match=r"^scales: need at least one resolution, got an "
                                         r"empty sequence$"):
        MultiScaleEnergy(make, scales=())
    with pytest.raises(ValueError, match=r"^scales: must be an integer in \[1, ∞\], got 0$"):
        MultiScaleEnergy(make, scales=(4, 0))


def test_event_shape_is_channels_by_the_largest_scale():
    """(C, max s, max s) whatever the order of the scales; one scale alone works; experts
    without an event shape give an ensemble without one (no shape check)."""
    ms = MultiScaleEnergy(lambda s: _Linear(s, channels=3), scales=(2, 6, 3))
    assert ms.event_shape == (3, 6, 6)
    with pytest.raises(ValueError, match=r"^x: expected shape \(B, 3, 6, 6\), got "
                                         r"\(2, 3, 4, 4\)$"):
        ms(torch.zeros(2, 3, 4, 4, dtype=DT))
    assert MultiScaleEnergy(lambda s: _Linear(s, channels=2), scales=(5,)).event_shape == (2, 5, 5)
    shapeless = MultiScaleEnergy(lambda s: _Linear(s, shaped=False), scales=(4, 2))
    assert shapeless.event_shape == ()
    x = torch.rand(3, 1, 4, 4, dtype=DT, generator=torch.Generator().manual_seed(0))
    assert shapeless(x).shape == (3,)


def test_scale_one_sees_the_image_mean():
    """s = 1 is a valid resolution (it divides every size): its expert sees the mean of each
    channel (average pooling over the whole image)."""
    ms = MultiScaleEnergy(lambda s: _Linear(s, channels=2), scales=(4, 1))
    x = torch.rand(5, 2, 4, 4, dtype=DT, generator=torch.Generator().manual_seed(1))
    per = ms.expert_energies(x)
    want = x.mean(dim=(2, 3)) @ ms.experts[1].w
    torch.testing.assert_close(per[:, 1], want, rtol=0, atol=1e-12)
    torch.testing.assert_close(ms(x), x.flatten(1) @ ms.experts[0].w + want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_in,n_out", [(7, 3), (28, 10), (9, 4)])
def test_non_divisor_downsampling_is_antialiased_bilinear(n_in, n_out):
    """down_s for s not dividing the size is M x Mᵀ per channel with M the antialiased
    bilinear matrix above (plain bilinear, or corners aligned, would give other numbers)."""
    ms = MultiScaleEnergy(lambda s: _Linear(s, channels=2), scales=(n_in, n_out))
    x = torch.rand(3, 2, n_in, n_in, dtype=DT, generator=torch.Generator().manual_seed(n_in))
    m = _aa_bilinear(n_in, n_out)
    want = np.einsum("ij,bcjk,lk->bcil", m, x.numpy(), m)
    got = ms.downsample(x, n_out)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)
    # Broken variant the check catches: plain bilinear sampling of the same image.
    plain = torch.nn.functional.interpolate(x, size=(n_out, n_out), mode="bilinear",
                                            align_corners=False)
    assert not np.allclose(plain.numpy(), want, atol=1e-6)
