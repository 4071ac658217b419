"""Transitions applied to chain states: data-augmentation moves for images (paper §5.3.2, §6.3)
and symmetry moves for toy energies.

Every transition is a callable ``(x, generator) → x`` on a batch, drawing all of its randomness
from ``generator`` so a run is reproducible; use them on buffer reads or every N sampler steps
(``samplers.langevin(..., transition=..., transition_every=N)``).

A transition T leaves p_θ invariant only when p_θ is invariant under it: for a random group
element g applied to x ~ p_θ, p_θ(g⁻¹x)|det g⁻¹| must equal p_θ(x). For an orthogonal group
this holds exactly when E_θ(gx) = E_θ(x) for every g in the group (C21; tested in
verification/test_sec5_3_2_transitions.py). Augmentations of images (deformations, crops,
blur) are not volume-preserving bijections and change p_θ in general: they are proposals that
let chains "teleport", not p_θ-invariant kernels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ebmref.validation import check_int_range, check_nonnegative, check_probability

Transition = Callable[[Tensor, torch.Generator | None], Tensor]
"""A move on a batch of chain states, ``(x, generator) → x``."""


def _seed_from(generator: torch.Generator | None) -> int:
    """A 63-bit seed drawn from ``generator`` (for code that uses torch's global RNG)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator,
                             device=generator.device if generator is not None else "cpu"))


def _apply_prob(x: Tensor, y: Tensor, prob: float, generator) -> Tensor:
    """Per-chain: keep y with probability ``prob``, x otherwise."""
    if prob >= 1.0:
        return y
    dev = generator.device if generator is not None else x.device
    u = torch.rand(x.shape[0], generator=generator, device=dev).to(x.device)
    return torch.where((u < prob).view(-1, *([1] * (x.ndim - 1))), y, x)


@dataclass
class ElasticDeform:
    """Random elastic deformation of images (B, C, H, W) with ``elasticdeform.torch.deform_grid``
    (differentiable; runs on CPU through NumPy/C, so GPU batches make a round trip).

    Each image gets its own coarse ``points``×``points`` displacement grid with N(0, sigma²)
    entries (in pixels), interpolated with cubic splines (``order``). ``prob`` is the per-image
    probability of being deformed. Used by the paper's §6.3 experiment (C29).
    """

    sigma: float = 1.0
    points: int = 3
    order: int = 3
    mode: str = "nearest"
    prob: float = 1.0

    def __post_init__(self):
        check_nonnegative(self.sigma, "sigma")
        check_int_range(self.points, "points", 2)
        check_int_range(self.order, "order", 0, 4)
        check_probability(self.prob, "prob")

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        import elasticdeform.torch as etorch

        if x.ndim != 4:
            raise ValueError(f"x: expected images (B, C, H, W), got shape {tuple(x.shape)}")
        dev = generator.device if generator is not None else x.device
        disp = self.sigma * torch.randn((x.shape[0], 2, self.points, self.points),
                                        generator=generator, device=dev, dtype=torch.float64)
        xc = x.cpu()
        disp = disp.cpu().to(xc.dtype)
        out = torch.stack([
            etorch.deform_grid(xc[i], disp[i], order=self.order, mode=self.mode, axis=(1, 2))
            for i in range(x.shape[0])
        ]).to(x.device)
        return _apply_prob(x, out, self.prob, generator)


@dataclass
class GridElasticDeform:
    """Batched elastic deformation on the chains' device with one ``grid_sample`` call.

    Same model as :class:`ElasticDeform` (which calls ``elasticdeform`` image by image on the
    CPU): a coarse ``points``×``points`` grid of N(0, sigma²) pixel displacements per image,
    interpolated bicubically (control points at the corners) to a dense field d, and
    out(p) = x(p + d(p)) by bilinear interpolation with border pixels repeated (elasticdeform's
    ``mode="nearest"``). No host round trip, so it suits GPU sampling loops; checked against
    elasticdeform on rigid shifts in verification/test_transitions_grid_elastic.py.
    """

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
        return _apply_prob(x, self.warp(x, disp), self.prob, generator)


@dataclass
class Augment:
    """Per-image random crops, flips, colour jitter and blur with ``torchvision.transforms.v2``
    (Du et al. 2020's buffer-read augmentation, §5.3.2), on images (B, C, H, W).

    torchvision draws its random parameters from torch's *global* RNG; to stay reproducible
    this class forks that RNG (``torch.random.fork_rng``) and seeds it from ``generator``,
    so the caller's global RNG is untouched and the same generator state gives the same output.
    """

    crop_scale: tuple[float, float] | None = (0.7, 1.0)
    hflip: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    blur_sigma: tuple[float, float] | None = None
    blur_kernel: int = 3
    prob: float = 1.0
    _pipeline: object = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        check_probability(self.hflip, "hflip")
        check_nonnegative(self.brightness, "brightness")
        check_nonnegative(self.contrast, "contrast")
        check_probability(self.prob, "prob")
        if self.crop_scale is not None and not (0 < self.crop_scale[0] <= self.crop_scale[1] <= 1):
            raise ValueError(f"crop_scale: need 0 < low <= high <= 1, got {self.crop_scale!r}")
        if self.blur_kernel % 2 == 0 or self.blur_kernel < 1:
            raise ValueError(f"blur_kernel: must be an odd integer >= 1, got {self.blur_kernel}")

    def _build(self, size: tuple[int, int]):
        from torchvision.transforms import v2

        ops = []
        if self.crop_scale is not None:
            ops.append(v2.RandomResizedCrop(size, scale=tuple(self.crop_scale), antialias=True))
        if self.hflip > 0:
            ops.append(v2.RandomHorizontalFlip(self.hflip))
        if self.brightness > 0 or self.contrast > 0:
            ops.append(v2.ColorJitter(brightness=self.brightness, contrast=self.contrast))
        if self.blur_sigma is not None:
            ops.append(v2.GaussianBlur(self.blur_kernel, sigma=tuple(self.blur_sigma)))
        return v2.Compose(ops)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"x: expected images (B, C, H, W), got shape {tuple(x.shape)}")
        pipeline = self._build(tuple(x.shape[-2:]))
        seed = _seed_from(generator)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = torch.stack([pipeline(x[i]) for i in range(x.shape[0])])
        return _apply_prob(x, out, self.prob, generator)


def _nearest_element_distance(products: Tensor, group: Tensor) -> Tensor:
    """Frobenius distance ‖A − B‖ of each matrix in ``products`` (P, d, d) to the nearest
    element of ``group`` (G, d, d), from the differences themselves (2d − 2⟨A, B⟩ holds only for
    exactly orthogonal matrices and turned a float32 group's rounding into ~4e-4)."""
    return torch.cdist(products.flatten(1), group.flatten(1),
                       compute_mode="donot_use_mm_for_euclid_dist").amin(1)


def _check_is_group(group: Tensor, tol: float) -> None:
    """ValueError unless the orthogonal matrices ``group`` contain I and are closed under
    products (a finite set of invertible matrices closed under products is a group)."""
    g = group.to(torch.float64)
    n, d = g.shape[0], g.shape[1]
    if float(_nearest_element_distance(torch.eye(d, dtype=g.dtype)[None], g)[0]) > tol:
        raise ValueError("group: the identity must be an element")
    block = max(1, (1 << 22) // max(1, n * max(n, d * d)))
    for start in range(0, n, block):
        prods = (g[start:start + block, None] @ g[None]).reshape(-1, d, d)
        dist = _nearest_element_distance(prods, g)
        if float(dist.max()) > tol:
            flat = int(dist.argmax())
            i, j = start + flat // n, flat % n
            raise ValueError(f"group: not closed under products (group[{i}] @ group[{j}] is "
                             f"not an element, distance {float(dist.max()):.2g})")


class SymmetryMove:
    """Apply a uniformly drawn element of a finite group of orthogonal maps to each chain:
    x ↦ G_k x, k ~ U{0..|G|−1} (per chain), with probability ``prob``.

    The move leaves p_θ invariant iff E_θ(G_k x) = E_θ(x) for all k (orthogonal maps preserve
    volume), e.g. rotations by 2πk/8 for an 8-Gaussian ring with equal weights (C21).

    ``group`` (G, d, d) must hold orthogonal matrices that form a group: the identity is an
    element and every product G_i G_j is an element (to 1e-6; to 64 ε of the dtype for a float32
    group, whose entries are rounded to ~6e-8); a ValueError naming ``group``
    says which check failed. The check costs O(|G|³ d²); the built-in constructors
    (:meth:`rotations`, :meth:`sign_flips`, :meth:`reflections`) build groups by construction
    and skip it (``check_group=False``).
    """

    def __init__(self, group: Tensor, prob: float = 1.0, *, check_group: bool = True):
        g = torch.as_tensor(group)
        if g.ndim != 3 or g.shape[1] != g.shape[2] or g.shape[0] < 1:
            raise ValueError(f"group: expected matrices (G, d, d), got shape {tuple(g.shape)}")
        eye = torch.eye(g.shape[1], dtype=g.dtype).expand_as(g)
        if not torch.allclose(g @ g.transpose(1, 2), eye, atol=1e-6):
            raise ValueError("group: every element must be an orthogonal matrix")
        check_probability(prob, "prob")
        if check_group:
            eps = torch.finfo(g.dtype).eps if g.is_floating_point() else 0.0
            _check_is_group(g, tol=max(1e-6, 64 * eps))
        self.group = g
        self.prob = float(prob)

    @classmethod
    def rotations(cls, n: int, dtype: torch.dtype = torch.float64, prob: float = 1.0):
        """The cyclic group of planar rotations by 2πk/n, k = 0..n−1."""
        check_int_range(n, "n", 1)
        a = 2 * math.pi * torch.arange(n, dtype=dtype) / n
        c, s = torch.cos(a), torch.sin(a)
        return cls(torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2), prob,
                   check_group=False)

    @classmethod
    def sign_flips(cls, dim: int, dtype: torch.dtype = torch.float64, prob: float = 1.0):
        """{I, −I}: x ↦ ±x."""
        check_int_range(dim, "dim", 1)
        eye = torch.eye(dim, dtype=dtype)
        return cls(torch.stack([eye, -eye]), prob, check_group=False)

    @classmethod
    def reflections(cls, dim: int, dtype: torch.dtype = torch.float64, prob: float = 1.0):
        """All 2^dim coordinate sign patterns diag(±1, …, ±1)."""
        check_int_range(dim, "dim", 1, 16)
        signs = torch.tensor([[1 - 2 * ((k >> i) & 1) for i in range(dim)]
                              for k in range(2**dim)], dtype=dtype)
        return cls(torch.diag_embed(signs), prob, check_group=False)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.group.shape[1]:
            raise ValueError(f"x: expected shape (B, {self.group.shape[1]}), got {tuple(x.shape)}")
        dev = generator.device if generator is not None else x.device
        k = torch.randint(0, self.group.shape[0], (x.shape[0],), generator=generator,
                          device=dev).to(x.device)
        return _apply_prob(x, self.apply(x, k), self.prob, generator)

    def apply(self, x: Tensor, k: Tensor) -> Tensor:
        """Row i of ``x`` mapped by the group element ``k[i]``: y_i = G_{k_i} x_i."""
        mats = self.group.to(dtype=x.dtype, device=x.device)[k]
        return (mats @ x[..., None])[..., 0]

    def __repr__(self) -> str:
        return f"SymmetryMove(group of {self.group.shape[0]} maps in R^{self.group.shape[1]}, " \
               f"prob={self.prob})"


class Clamped:
    """transition followed by clamping to the (low, high) box: chain states live in the clamp
    box, and a transition (e.g. a cubic-spline elastic deformation, which overshoots) must not
    carry them out of it."""

    def __init__(self, transition: Transition, clamp: tuple[float, float]):
        self.transition, self.clamp = transition, clamp

    def __call__(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        return self.transition(x, generator).clamp(self.clamp[0], self.clamp[1])
