"""Energy networks for the MNIST experiments (paper §8.3).

``arch="igebm"`` is the library's :class:`ebmref.nets.IGEBMEnergy` (the paper's network,
64→64→128→256 channels). ``arch="igebm_narrow"`` keeps its topology (3×3 conv, three 4×4
stride-2 convs with SAME padding 28→14→7→4, linear →128 → 1, leaky ReLU 0.2) with the channel
widths scaled to (w, w, 2w, 4w): at w = 16 one Langevin step costs ~1/16 of the full net, which
is what makes a CPU run of section 6 possible at all. Which one a run used is in its config.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from ebmref.energy import Energy
from ebmref.nets import IGEBMEnergy, MultiScaleEnergy
from ebmref.validation import check_choice, check_int_range

ARCHS = ("igebm", "igebm_narrow", "multiscale_narrow")


def _same_pad(size: int, kernel: int = 4, stride: int = 2) -> tuple[int, int, int, int]:
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    lo, hi = total // 2, total - total // 2
    return lo, hi, lo, hi


class NarrowIGEBMEnergy(Energy):
    """IGEBM topology with channels (w, w, 2w, 4w) for (B, 1, S, S) images."""

    def __init__(self, width: int = 16, spectral_norm: bool = False, image_size: int = 28):
        super().__init__()
        check_int_range(width, "width", 1)
        check_int_range(image_size, "image_size", 1)
        wrap = _spectral_norm if spectral_norm else (lambda m: m)
        w = width
        self.conv0 = wrap(nn.Conv2d(1, w, 3, padding=1))
        self.convs = nn.ModuleList([wrap(nn.Conv2d(a, b, 4, stride=2))
                                    for a, b in ((w, w), (w, 2 * w), (2 * w, 4 * w))])
        sizes = [image_size]
        for _ in self.convs:
            sizes.append(math.ceil(sizes[-1] / 2))
        self._sizes = sizes
        self.fc1 = wrap(nn.Linear(4 * w * sizes[-1] ** 2, 128))
        self.fc2 = wrap(nn.Linear(128, 1))
        self.event_shape = (1, image_size, image_size)

    def forward(self, x: Tensor) -> Tensor:
        self._check_batch(x)
        h = F.leaky_relu(self.conv0(x), 0.2)
        for conv, size in zip(self.convs, self._sizes):
            h = F.leaky_relu(conv(F.pad(h, _same_pad(size))), 0.2)
        h = F.leaky_relu(self.fc1(h.flatten(1)), 0.2)
        return self.fc2(h).squeeze(-1)


def build_energy(arch: str = "igebm", width: int = 64, spectral_norm: bool = False) -> Energy:
    """The energy named by a run's config (``arch``, ``width``, ``spectral_norm``)."""
    check_choice(arch, "arch", ARCHS)
    if arch == "igebm":
        if width != 64:
            raise ValueError(f"width: the igebm arch has fixed width 64, got {width}; "
                             "use arch='igebm_narrow' for other widths")
        return IGEBMEnergy(spectral_norm=spectral_norm, in_channels=1)
    if arch == "igebm_narrow":
        return NarrowIGEBMEnergy(width, spectral_norm)
    return MultiScaleEnergy(lambda s: NarrowIGEBMEnergy(width, spectral_norm, image_size=s),
                            scales=(28, 14, 7))
