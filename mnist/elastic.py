"""Batched elastic deformation on the chains' device with ``grid_sample`` (paper §5.3.2, §6.3).

Same model as ``elasticdeform`` (and :class:`ebmref.transitions.ElasticDeform`, which calls it
image by image on the CPU): each image gets a coarse ``points``×``points`` grid of
displacements d ~ N(0, sigma²) pixels per axis, interpolated smoothly (bicubic, control points
at the image corners) to a dense field, and the output is out(p) = x(p + d(p)) (bilinear,
border values repeated = elasticdeform's ``mode="nearest"``). Here the whole batch is one
``grid_sample`` call on the device of ``x``: no host round trip inside a sampling loop on a GPU.
verification/test_mnist_elastic.py checks it against elasticdeform on rigid shifts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ebmref.validation import check_int_range, check_nonnegative, check_probability


@dataclass
class GridElasticDeform:
    """Callable ``(x, generator) -> x`` for images (B, C, H, W); ``prob`` per image."""

    sigma: float = 1.0
    points: int = 3
    prob: float = 1.0

    def __post_init__(self):
        check_nonnegative(self.sigma, "sigma")
        check_int_range(self.points, "points", 2)
        check_probability(self.prob, "prob")

    def displacement(self, n: int, size: tuple[int, int], generator, device, dtype) -> Tensor:
        """Dense field (n, 2, H, W) in pixels, channel 0 = rows, channel 1 = columns."""
        gdev = generator.device if generator is not None else device
        coarse = self.sigma * torch.randn((n, 2, self.points, self.points), generator=generator,
                                          device=gdev, dtype=dtype).to(device)
        return F.interpolate(coarse, size=size, mode="bicubic", align_corners=True)

    def warp(self, x: Tensor, disp: Tensor) -> Tensor:
        """out(p) = x(p + disp(p)) by bilinear interpolation, border pixels repeated."""
        h, w = x.shape[-2:]
        rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1)
        cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w)
        r, c = rows + disp[:, 0], cols + disp[:, 1]
        # grid_sample's normalised coordinates with align_corners=True: -1 ↔ 0, +1 ↔ size-1
        grid = torch.stack([2 * c / max(w - 1, 1) - 1, 2 * r / max(h - 1, 1) - 1], dim=-1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"x: expected images (B, C, H, W), got shape {tuple(x.shape)}")
        disp = self.displacement(x.shape[0], tuple(x.shape[-2:]), generator, x.device, x.dtype)
        y = self.warp(x, disp)
        if self.prob >= 1.0:
            return y
        gdev = generator.device if generator is not None else x.device
        u = torch.rand(x.shape[0], generator=generator, device=gdev).to(x.device)
        return torch.where((u < self.prob).view(-1, 1, 1, 1), y, x)
