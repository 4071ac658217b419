"""Measurements of the claims study (C7, C16, C26, C27, C28), exact wherever a grid allows.

* :func:`validated_grid` — p_θ of one model on a quadrature grid whose box is widened until the
  mass beyond it is below a tolerance (else the model is flagged ``"leak"`` and not scored);
  non-finite energies flag it ``"diverged"``.
* Laws on bins (:func:`law_of_points`, :func:`tv`): the law of chain ends against p_θ's exact
  bin masses (C7, C27).
* :func:`run_chains_tv` — ULA chains (eq. 1) of every ensemble member at once, with the total
  variation to each member's reference law recorded at given chain lengths.
* Far field (C16): :func:`far_mass` (p_θ mass beyond a distance from the support),
  :func:`outside_box_mass`; :func:`descend`, :func:`is_local_minimum` and :func:`local_minima`
  (steepest descent with a line search from a grid of starts; end points that are local minima
  at a probe radius merged into minima, each with its energy and the p_θ mass of its basin).
* :class:`GridKernel` — one ULA step as a transition matrix on a grid, so that the law
  q = K^t q₀ of t steps, and KL[q ‖ p_θ], are computed without sampling (C26).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ebmref.analytic import grid as make_grid
from ebmref.samplers import langevin, langevin_coefficients
from ebmref.validation import check_int_range, check_positive
from toy_problems import metrics as M
from toy_problems.targets import Target

# --------------------------------------------------------------------------- quadrature


@dataclass
class GridCheck:
    """A model's grid and whether it may be scored: status "ok", "leak" (mass beyond the
    widest box tried above tolerance: not scored) or "diverged" (non-finite energies)."""

    grid: M.DensityGrid | None
    status: str
    leak: float
    expand: int


def validated_grid(energy: Callable[[Tensor], Tensor], bounds, n_points: int, *,
                   expand: int = 2, max_expand: int = 8, tol: float = 1e-3) -> GridCheck:
    """p_θ on ``bounds`` widened ``expand`` times, then doubled (2×, 4×, … ``max_expand``×,
    same spacing) until ``leak`` (log Z on a box twice as wide minus log Z: the mass beyond is
    1 − e^{−leak}) is below ``tol`` nats; a model still above it at ``max_expand`` is flagged
    "leak". Non-finite energies anywhere: "diverged"."""
    check_positive(tol, "tol")
    check_int_range(max_expand, "max_expand", expand)
    factors = [expand]
    while factors[-1] * 2 <= max_expand:
        factors.append(factors[-1] * 2)
    for k in factors:
        g = M.density_grid(energy, bounds, n_points, k)
        if not (math.isfinite(g.log_z) and bool(torch.isfinite(g.energy).all())
                and math.isfinite(g.leak)):
            return GridCheck(None, "diverged", math.nan, k)
        if g.leak < tol:
            return GridCheck(g, "ok", g.leak, k)
    return GridCheck(g, "leak", g.leak, factors[-1])


# --------------------------------------------------------------------------- laws on bins


def bin_index(x: Tensor, box, bins: int) -> Tensor:
    """Bin of each point: ``bins`` per axis over ``box`` (row-major), ``bins^d`` outside."""
    lo = torch.tensor([b[0] for b in box], dtype=torch.float64)
    hi = torch.tensor([b[1] for b in box], dtype=torch.float64)
    u = (x.to(torch.float64) - lo) / (hi - lo)
    inside = ((u >= 0) & (u < 1)).all(-1)
    ij = (u.clamp(0, 1 - 1e-12) * bins).to(torch.int64)
    idx = torch.zeros(x.shape[0], dtype=torch.int64)
    for k in range(ij.shape[1]):
        idx = idx * bins + ij[:, k]
    return torch.where(inside, idx, torch.full_like(idx, bins ** len(box)))


def law_of_points(x: Tensor, box, bins: int, weights: Tensor | None = None) -> Tensor:
    """Bin masses (bins^d + 1,) of points (weights: a distribution over them; default 1/n)."""
    n_bins = bins ** len(box) + 1
    w = (torch.full((x.shape[0],), 1.0 / x.shape[0], dtype=torch.float64) if weights is None
         else weights.to(torch.float64))
    return torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bin_index(x, box, bins), w)


def grid_law(g: M.DensityGrid, box, bins: int) -> Tensor:
    """p_θ's bin masses from its grid by the midpoint rule: each grid point carries the mass
    of its cell (∝ exp(−E), cells of equal volume), split between the bins the cell overlaps
    in proportion to the overlap (bins are at least one cell wide), so bin edges need not fall
    between grid points. Accurate to O(h²) in the spacing h."""
    d = len(box)
    mass = torch.softmax(-g.energy, 0)
    per_axis = []  # for each axis: (bin of the cell's left part, its fraction, right bin)
    for k in range(d):
        lo, hi = box[k]
        width = (hi - lo) / bins
        h = (g.bounds[k][1] - g.bounds[k][0]) / (g.n_points - 1)
        if h > width:
            raise ValueError(f"bins: {bins} bins are narrower than the grid spacing {h:g}")
        left = (g.points[:, k] - h / 2 - lo) / width
        k0 = torch.floor(left)
        frac = ((k0 + 1 - left) * width / h).clamp(0, 1)
        per_axis.append((k0.to(torch.int64), frac))
    out = torch.zeros(bins ** d + 1, dtype=torch.float64)
    for corner in range(2 ** d):
        idx = torch.zeros_like(per_axis[0][0])
        w = mass.clone()
        inside = torch.ones_like(mass, dtype=torch.bool)
        for k, (k0, frac) in enumerate(per_axis):
            right = (corner >> k) & 1
            kk = k0 + right
            w = w * (1 - frac if right else frac)
            inside &= (kk >= 0) & (kk < bins)
            idx = idx * bins + kk.clamp(0, bins - 1)
        out.index_add_(0, torch.where(inside, idx, torch.full_like(idx, bins ** d)), w)
    return out


def tv(p: Tensor, q: Tensor) -> Tensor:
    """Total variation ½ Σ |p − q| over the last axis."""
    return 0.5 * (p - q).abs().sum(-1)


def kl_bins(q: Tensor, p: Tensor) -> float:
    """KL[q ‖ p] = Σ q log(q/p) between bin masses (a lower bound on the KL of the laws)."""
    nz = q > 0
    return float((q[nz] * (q[nz].log() - p[nz].clamp_min(1e-300).log())).sum())


def run_chains_tv(energy, x0: Tensor, lengths: Sequence[int], step_size: float,
                  generator: torch.Generator, reference: Tensor, box, bins: int,
                  noise: float | None = None) -> tuple[Tensor, Tensor]:
    """ULA chains from x0 (G blocks of n, one per member) with the TV of each block's law of
    chain ends to ``reference[g]`` (G, bins^d + 1) recorded at each length in ``lengths``
    (ascending, 0 allowed). Returns (TV (G, len(lengths)), final states)."""
    if list(lengths) != sorted(lengths) or lengths[0] < 0:
        raise ValueError(f"lengths: expected ascending non-negative lengths, got {lengths}")
    g_count = reference.shape[0]
    n = x0.shape[0] // g_count
    x, done, out = x0, 0, []
    for length in lengths:
        if length > done:
            x = langevin(energy, x, length - done, step_size, noise, generator=generator).x
            done = length
        blocks = x.detach().view(g_count, n, -1)
        out.append(torch.stack([tv(law_of_points(blocks[g], box, bins), reference[g])
                                for g in range(g_count)]))
    return torch.stack(out, 1), x.detach()


# --------------------------------------------------------------------------- far field


def far_mass(g: M.DensityGrid, target: Target, distance: float) -> float:
    """p_θ mass farther than ``distance`` from the data's support (C16's spurious regions)."""
    return float(g.mass[target.distance_to_support(g.points) > distance].sum())


def outside_box_mass(g: M.DensityGrid, box) -> float:
    """p_θ mass outside the data box (the box of the target, before widening)."""
    lo = torch.tensor([b[0] for b in box], dtype=torch.float64)
    hi = torch.tensor([b[1] for b in box], dtype=torch.float64)
    inside = ((g.points >= lo) & (g.points <= hi)).all(-1)
    return float(g.mass[~inside].sum())


def _grad(energy, x: Tensor) -> Tensor:
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        return torch.autograd.grad(energy(xr).sum(), xr)[0]


MOVES = (0.5, 0.15, 0.05, 0.015, 5e-3, 1.5e-3, 5e-4, 1.5e-4)
"""Step lengths tried along −∇E/‖∇E‖ at every descent step (the best one is taken)."""


def descend(energy, x0: Tensor, n_steps: int, chunk: int = 200_000) -> Tensor:
    """Steepest descent with a line search over fixed step lengths: at every step each point
    moves along −∇E/‖∇E‖ by the length in :data:`MOVES` that lowers E most (or stays if none
    does), so flat far-field regions are crossed fast and minima are located to ~1e-4."""
    check_int_range(n_steps, "n_steps", 1)
    dtype = next(energy.parameters()).dtype
    x = x0.to(dtype).clone()
    for _ in range(n_steps):
        grad = _grad(energy, x)
        unit = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        with torch.no_grad():
            best_e, best_x = energy(x), x
            for length in MOVES:
                cand = x - length * unit
                e = energy(cand)
                better = (e < best_e)[:, None]
                best_x = torch.where(better, cand, best_x)
                best_e = torch.where(better[:, 0], e, best_e)
        x = best_x
    return x.detach()


def is_local_minimum(energy, x: Tensor, radius: float, n_directions: int = 8) -> Tensor:
    """E(x) < E(x + r·u) for every probe direction u (± each axis in 1-D; n_directions evenly
    spaced in the first two coordinates, ± each further axis otherwise): a local minimum at
    scale r, which rejects saddles, slopes and points that stopped short of a minimum."""
    check_positive(radius, "radius")
    d = x.shape[-1]
    dirs = []
    if d >= 2:
        ang = torch.arange(n_directions, dtype=torch.float64) * (2 * math.pi / n_directions)
        ring = torch.zeros(n_directions, d, dtype=torch.float64)
        ring[:, 0], ring[:, 1] = torch.cos(ang), torch.sin(ang)
        dirs.append(ring)
    eye = torch.eye(d, dtype=torch.float64)[(2 if d >= 2 else 0):]
    dirs += [eye, -eye]
    u = torch.cat(dirs).to(x.dtype)
    with torch.no_grad():
        e0 = energy(x)
        rise = torch.stack([energy(x + radius * v) - e0 for v in u], 1)
    return rise.min(1).values > 0


@dataclass
class Minimum:
    x: list[float]
    energy: float
    basin_mass: float  # p_θ mass of the starts that descend to it
    off_support: bool  # farther than the stated distance from the support


def local_minima(x_end: Tensor, at_minimum: Tensor, energies: Tensor, start_mass: Tensor,
                 off_support: Callable[[Tensor], bool] | None, *,
                 merge_radius: float) -> tuple[list[Minimum], float]:
    """Merge the end points that are local minima (``at_minimum``, e.g. from
    :func:`is_local_minimum`) lying within ``merge_radius`` of each other into minima, lowest
    energy first; each minimum's basin mass is the summed ``start_mass`` of its starts;
    ``off_support(x)`` classifies a minimum (None: not classified). Returns the minima and the
    mass of the starts that did not end at a minimum."""
    ok = at_minimum
    order = torch.argsort(energies.masked_fill(~ok, math.inf))
    centres: list[Tensor] = []
    minima: list[Minimum] = []
    for i in order.tolist():
        if not ok[i]:
            break
        xi = x_end[i].to(torch.float64)
        for k, c in enumerate(centres):
            if float((xi - c).norm()) < merge_radius:
                minima[k].basin_mass += float(start_mass[i])
                break
        else:
            centres.append(xi)
            far = bool(off_support(xi)) if off_support is not None else False
            minima.append(Minimum(xi.tolist(), float(energies[i]), float(start_mass[i]), far))
    return minima, float(start_mass[~ok].sum())


# --------------------------------------------------------------------------- C26: exact laws


class GridKernel:
    """One ULA step (eq. 1: x' = x − (λ/2)∇E(x) + √λ ξ) of a fixed energy as a transition
    matrix on a regular grid: row i is the Gaussian N(μᵢ, λI), μᵢ = xᵢ − (λ/2)∇E(xᵢ), evaluated
    at the grid points within ``width`` sd of μᵢ and normalised (mass that would leave the grid
    stays on it: the grid must be wide enough for that to be negligible)."""

    def __init__(self, energy, bounds, n_points: int, step_size: float, width: float = 4.0):
        self.points, _ = make_grid(bounds, n_points)
        self.n_points, self.dim = n_points, len(bounds)
        self.h = torch.tensor([(hi - lo) / (n_points - 1) for lo, hi in bounds],
                              dtype=torch.float64)
        self.lo = torch.tensor([lo for lo, _ in bounds], dtype=torch.float64)
        a, s, _ = langevin_coefficients(step_size)
        dtype = next(energy.parameters()).dtype
        grad = _grad(energy, self.points.to(dtype)).to(torch.float64)
        mu = self.points - a * grad
        r = math.ceil(width * s / float(self.h.min()))
        offs = torch.arange(-r, r + 1)
        offsets = torch.cartesian_prod(*([offs] * self.dim)).view(-1, self.dim)
        centre = torch.round((mu - self.lo) / self.h).to(torch.int64)  # (N, d)
        nb = (centre[:, None, :] + offsets[None]).clamp(0, n_points - 1)  # (N, K, d)
        pos = self.lo + nb.to(torch.float64) * self.h
        logw = -((pos - mu[:, None, :]) ** 2).sum(-1) / (2 * s * s)
        w = torch.softmax(logw, 1)
        flat = torch.zeros(nb.shape[:2], dtype=torch.int64)
        for k in range(self.dim):
            flat = flat * n_points + nb[..., k]
        self.index, self.weight = flat, w

    def step(self, q: Tensor) -> Tensor:
        """q (N,) masses → masses after one step."""
        return torch.zeros_like(q).index_add_(0, self.index.reshape(-1),
                                               (q[:, None] * self.weight).reshape(-1))

    def run(self, q: Tensor, n_steps: int) -> Tensor:
        for _ in range(n_steps):
            q = self.step(q)
        return q


def grid_masses(energy, points: Tensor) -> Tensor:
    """p_θ's masses at the points of a regular grid (∝ exp(−E), normalised over the grid)."""
    dtype = next(energy.parameters()).dtype
    with torch.no_grad():
        e = energy(points.to(dtype)).to(torch.float64)
    return torch.softmax(-e, 0)


def kl_masses(q: Tensor, p: Tensor) -> float:
    """KL[q ‖ p] between two mass vectors on the same grid."""
    return kl_bins(q, p)
