"""Neural energies E_θ: (B, ...) → (B,) (paper §5.2, §8.3).

* :class:`MLPEnergy` — a fully connected net for 1-D/2-D toy data (Swish/SiLU by default).
* :class:`IGEBMEnergy` — the MNIST CNN of IGEBM (Du & Mordatch, 2019) as read from its code:
  3×3 conv 1→64, three 4×4 stride-2 convs 64→64→128→256 (28→14→7→4 with TensorFlow "SAME"
  padding), linear 4096→128, linear 128→1, leaky ReLU 0.2; optional spectral normalisation of
  every conv/linear weight (§5.2.2); ``width`` scales the channels (w, w, 2w, 4w).
* :class:`MultiScaleEnergy` — the multi-scale product of experts of Du et al. (2020), §5.2.1:
  E(x) = Σ_s E_s(down_s(x)), one energy per resolution s.

Spectral normalisation here is :func:`torch.nn.utils.parametrizations.spectral_norm`, which
divides each weight by the largest singular value of the weight *reshaped to a matrix*
(out, in·k·k). For a linear layer that bounds the layer's Lipschitz constant by 1; for a
convolution it does not bound the operator norm of the convolution itself (see
verification/test_sec5_2_2_spectral_norm.py for the measured gap).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from ebmref.energy import Energy
from ebmref.validation import check_choice, check_int_range

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "swish": nn.SiLU,
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
}


class MLPEnergy(Energy):
    """E_θ(x) = MLP(x) for x of shape (B, dim): ``depth`` hidden layers of width ``hidden``.

    Smooth activations (Swish, the default) keep ∇ₓE continuous, which Langevin needs.
    """

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, activation: str = "swish",
                 spectral_norm: bool = False):
        super().__init__()
        check_int_range(dim, "dim", 1)
        check_int_range(hidden, "hidden", 1)
        check_int_range(depth, "depth", 1)
        check_choice(activation, "activation", tuple(ACTIVATIONS))
        layers: list[nn.Module] = []
        width = dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), ACTIVATIONS[activation]()]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.activation = activation
        if spectral_norm:
            layers = [_spectral_norm(m) if isinstance(m, nn.Linear) else m for m in layers]
        self.net = nn.Sequential(*layers)
        self.event_shape = (dim,)

    def forward(self, x: Tensor) -> Tensor:
        self._check_batch(x)
        return self.net(x).squeeze(-1)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (left, right) so that out = ceil(size / stride)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class IGEBMEnergy(Energy):
    """IGEBM's MNIST energy (Du & Mordatch, 2019; paper §8.3) for square images (B, C, S, S).

    conv3×3(C→w) → [conv4×4/2: w→w, w→2w, 2w→4w] (SAME padding: 28→14→7→4) →
    flatten (4w·⌈S/8⌉²) → linear(→128) → linear(128→1); leaky ReLU(0.2) after every layer but
    the last. ``width`` w = 64 is the published network (64, 64, 128, 256 channels, a 4096-wide
    flatten at S = 28); smaller widths keep the topology at a fraction of the cost (w = 16: about
    1/16 per Langevin step, what makes CPU runs of §6 possible). ``spectral_norm=True`` wraps
    every conv and linear weight; ``image_size`` other than 28 (e.g. the 14 and 7 of a
    multi-scale model) changes only the flattened width.
    """

    def __init__(self, spectral_norm: bool = False, in_channels: int = 1, image_size: int = 28,
                 width: int = 64):
        super().__init__()
        check_int_range(in_channels, "in_channels", 1)
        check_int_range(image_size, "image_size", 1)
        check_int_range(width, "width", 1)
        wrap = _spectral_norm if spectral_norm else (lambda m: m)
        w = width
        self.conv0 = wrap(nn.Conv2d(in_channels, w, 3, padding=1))
        self.convs = nn.ModuleList([wrap(nn.Conv2d(cin, cout, 4, stride=2))
                                    for cin, cout in ((w, w), (w, 2 * w), (2 * w, 4 * w))])
        sizes = [image_size]
        for _ in self.convs:
            sizes.append(math.ceil(sizes[-1] / 2))
        self._sizes = sizes
        self.fc1 = wrap(nn.Linear(4 * w * sizes[-1] ** 2, 128))
        self.fc2 = wrap(nn.Linear(128, 1))
        self.event_shape = (in_channels, image_size, image_size)

    def forward(self, x: Tensor) -> Tensor:
        self._check_batch(x)
        h = F.leaky_relu(self.conv0(x), 0.2)
        for conv, size in zip(self.convs, self._sizes):
            lo, hi = _same_padding(size, 4, 2)
            h = F.leaky_relu(conv(F.pad(h, (lo, hi, lo, hi))), 0.2)
        h = F.leaky_relu(self.fc1(h.flatten(1)), 0.2)
        return self.fc2(h).squeeze(-1)


class MultiScaleEnergy(Energy):
    """E(x) = Σ_s E_s(down_s(x)) over resolutions s (Du et al., 2020; paper §5.2.1).

    ``make_energy(s)`` builds the expert for s×s images; ``down_s`` is average pooling when s
    divides the input size, bilinear (antialiased) interpolation otherwise. The sum of energies
    is a product of experts ∏ₛ exp(−E_s): its normaliser is ∫ exp(−Σₛ E_s), not ∏ₛ Z_s, and it
    is low only where *every* expert is low (verification/test_sec5_2_1_product_of_experts.py).
    """

    def __init__(self, make_energy: Callable[[int], Energy], scales: Sequence[int] = (28, 14, 7)):
        super().__init__()
        if len(scales) == 0:
            raise ValueError("scales: need at least one resolution, got an empty sequence")
        for s in scales:
            check_int_range(s, "scales", 1)
        self.scales = tuple(int(s) for s in scales)
        self.experts = nn.ModuleList([make_energy(s) for s in self.scales])
        first = self.experts[0].event_shape
        self.event_shape = (first[0], max(self.scales), max(self.scales)) if first else ()

    def downsample(self, x: Tensor, size: int) -> Tensor:
        h = x.shape[-1]
        if size == h:
            return x
        if h % size == 0:
            return F.avg_pool2d(x, h // size)
        return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                             align_corners=False)

    def expert_energies(self, x: Tensor) -> Tensor:
        """(B, n_scales): each expert's energy E_s(down_s(x))."""
        return torch.stack([e(self.downsample(x, s)) for e, s in zip(self.experts, self.scales)],
                           dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        self._check_batch(x)
        return self.expert_energies(x).sum(-1)
