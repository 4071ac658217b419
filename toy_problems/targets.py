"""Toy data distributions with exact densities and exact samplers (1-D and 2-D).

Every target knows its true log-density (so the test NLL of a model can be compared with the
data entropy, paper §4: L_NLL = KL[p_data ‖ p_θ] + H(p_data)), a box ``bounds`` that covers the
data with a margin (for quadrature of log Z_θ), and its *modes*:

* ``mode_of(x)``: index of the data mode a point lies in (−1: in no mode). For mixtures a mode
  is the ball of Mahalanobis radius r₉₉ around a component mean, holding 99 % of that
  component's mass; for the checkerboard it is a black square.
* ``in_support(x)``: the region where the data lives, holding ≥ 99.9 % of p_data (balls of
  radius r₉₉.₉ for mixtures; black squares for the checkerboard). Model mass outside it is mass
  on spurious regions (claim C16).
* ``core_of(x)``: a smaller, well-separated core of each mode (Mahalanobis radius 1 / the inner
  half of a square). Mode switches of a chain are counted between cores, so that a chain
  jittering on a boundary does not count as mixing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy import stats
from torch import Tensor

from ebmref.energy import Energy, GaussianMixture
from ebmref.validation import check_choice, check_positive


@dataclass
class Target:
    """Base class: subclasses fill ``name``, ``dim``, ``bounds``, ``mode_weights``."""

    name: str
    dim: int
    bounds: tuple[tuple[float, float], ...]
    mode_weights: Tensor  # (K,) true probability of each mode region (normalised)
    symmetry: str  # group name understood by toy_problems.methods (teleport moves)
    # Share of the step budget this target trains for: 8 modes / 8 squares need the full
    # budget to break the rotational symmetry of the first (annulus-like) fit; 2 modes do not.
    steps_factor: float = 1.0
    # Coordinate blocks of a factorised model (toy_problems.fit.BlockSumEnergy): the model is
    # a sum of one network per block, so log Z is a sum of low-dimensional quadratures.
    blocks: tuple[tuple[int, ...], ...] | None = None

    @property
    def n_modes(self) -> int:
        return int(self.mode_weights.shape[0])

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def mode_of(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def in_support(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def core_of(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def distance_to_support(self, x: Tensor) -> Tensor:
        """Euclidean distance from each point to the support region (0 inside it)."""
        raise NotImplementedError

    def true_energy(self) -> Energy:
        """A differentiable energy of p_data (up to a constant) for control chains."""
        raise NotImplementedError


class MixtureTarget(Target):
    """An isotropic Gaussian mixture Σₖ πₖ N(μₖ, s²I) (analytic via ebmref's GaussianMixture)."""

    def __init__(self, name: str, weights, means, std: float, margin: float, symmetry: str,
                 steps_factor: float = 1.0):
        check_positive(std, "std")
        w = torch.as_tensor(weights, dtype=torch.float64)
        mu = torch.as_tensor(means, dtype=torch.float64)
        self.mixture = GaussianMixture(torch.log(w / w.sum()), mu, std**2, dtype=torch.float64)
        self.means, self.std = mu, float(std)
        d = mu.shape[1]
        # Radii holding 99 % and 99.9 % of one component: ‖z‖² ~ χ²(d).
        self.r_mode = math.sqrt(stats.chi2.ppf(0.99, d))
        self.r_support = math.sqrt(stats.chi2.ppf(0.999, d))
        lo = (mu.min(0).values - margin).tolist()
        hi = (mu.max(0).values + margin).tolist()
        # A square box in 2-D keeps pictures undistorted.
        if d == 2:
            a, b = min(lo), max(hi)
            lo, hi = [a, a], [b, b]
        super().__init__(name=name, dim=d, bounds=tuple(zip(lo, hi)),
                         mode_weights=w / w.sum(), symmetry=symmetry,
                         steps_factor=steps_factor)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return self.mixture.sample(n, generator)

    def log_prob(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.mixture.log_prob(x.to(torch.float64))

    def _nearest(self, x: Tensor) -> tuple[Tensor, Tensor]:
        dist = torch.cdist(x.to(torch.float64), self.means) / self.std  # Mahalanobis (B, K)
        return dist.min(-1)

    def mode_of(self, x: Tensor) -> Tensor:
        d, k = self._nearest(x)
        return torch.where(d < self.r_mode, k, torch.full_like(k, -1))

    def in_support(self, x: Tensor) -> Tensor:
        return self._nearest(x)[0] < self.r_support

    def core_of(self, x: Tensor) -> Tensor:
        d, k = self._nearest(x)
        return torch.where(d < 1.0, k, torch.full_like(k, -1))

    def distance_to_support(self, x: Tensor) -> Tensor:
        d = torch.cdist(x.to(torch.float64), self.means).min(-1).values
        return (d - self.r_support * self.std).clamp_min(0.0)

    def true_energy(self) -> Energy:
        return self.mixture


class CheckerboardTarget(Target):
    """Uniform density on the 8 black unit squares of a 4×4 board on [−2, 2]²
    (square (i, j) is black when i + j is even); p = 1/8 there, 0 elsewhere, H = log 8."""

    def __init__(self, margin: float = 1.0):
        ij = [(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0]
        self.corners = torch.tensor(ij, dtype=torch.float64) - 2.0  # lower-left corners (8, 2)
        super().__init__(name="checkerboard", dim=2,
                         bounds=((-2.0 - margin, 2.0 + margin),) * 2,
                         mode_weights=torch.full((8,), 1 / 8, dtype=torch.float64),
                         symmetry="checkerboard")

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        idx = torch.randint(0, 8, (n,), generator=generator)
        u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        return self.corners[idx] + u

    def _square(self, x: Tensor, shrink: float) -> Tensor:
        rel = x.to(torch.float64)[:, None, :] - self.corners[None]  # (B, 8, 2)
        inside = ((rel >= shrink) & (rel <= 1.0 - shrink)).all(-1)  # (B, 8)
        idx = inside.to(torch.int64).argmax(-1)
        return torch.where(inside.any(-1), idx, torch.full_like(idx, -1))

    def mode_of(self, x: Tensor) -> Tensor:
        return self._square(x, 0.0)

    def in_support(self, x: Tensor) -> Tensor:
        return self._square(x, 0.0) >= 0

    def core_of(self, x: Tensor) -> Tensor:
        return self._square(x, 0.25)

    def distance_to_support(self, x: Tensor) -> Tensor:
        rel = x.to(torch.float64)[:, None, :] - self.corners[None]  # (B, 8, 2)
        gap = (-rel).clamp_min(0) + (rel - 1.0).clamp_min(0)  # per-axis distance to square
        return gap.norm(dim=-1).min(-1).values

    def true_energy(self) -> Energy:
        return SmoothedCheckerboard(self.corners, CHECKERBOARD_SMOOTHING)

    def log_prob(self, x: Tensor) -> Tensor:
        inside = self.in_support(x)
        return torch.where(inside, torch.tensor(-math.log(8.0), dtype=torch.float64),
                           torch.tensor(-math.inf, dtype=torch.float64))


CHECKERBOARD_SMOOTHING = 0.15
"""Gaussian blur (sd) of the checkerboard's true energy for control chains: p_data has no
gradient inside a square and is 0 outside, so chains run on p_data * N(0, s²I). s = 0.15 keeps
ULA at λ = 0.02 stable (curvature ≤ 1/s² outside the squares, λ/(2s²) = 0.44 < 1)."""


def _log_interval_mass(x: Tensor, a: Tensor, s: float) -> Tensor:
    """log P(a ≤ x + sZ ≤ a + 1) = log[Φ((a + 1 − x)/s) − Φ((a − x)/s)], computed on the side
    of the interval's midpoint where both terms are upper tails (no cancellation)."""
    u, v = (a + 1.0 - x) / s, (a - x) / s
    right = x > a + 0.5  # left of the midpoint Φ(u) − Φ(v) = Φ(−v) − Φ(−u) (lower tails)
    hi = torch.where(right, u, -v)
    lo = torch.where(right, v, -u)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return log_hi + torch.log1p(-torch.exp((log_lo - log_hi).clamp(max=-1e-12)))


class SmoothedCheckerboard(Energy):
    """E(x) = −log[p_checkerboard * N(0, s²I)](x): the true density of the checkerboard
    blurred by a Gaussian of sd s (a product of 1-D interval probabilities per square)."""

    def __init__(self, corners: Tensor, smoothing: float):
        super().__init__()
        check_positive(smoothing, "smoothing")
        self.register_buffer("corners", corners.to(torch.float64))
        self.smoothing = float(smoothing)
        self.event_shape = (2,)

    def forward(self, x: Tensor) -> Tensor:
        x64 = x.to(torch.float64)[:, None, :]  # (B, 1, 2)
        per_axis = _log_interval_mass(x64, self.corners[None], self.smoothing)  # (B, 8, 2)
        log_p = torch.logsumexp(per_axis.sum(-1), -1) - math.log(8.0)
        return (-log_p).to(x.dtype)


def ring8() -> MixtureTarget:
    """8 equal Gaussians (s = 0.2) on a circle of radius 2: symmetric under rotation by 45°."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = 2.0 * torch.stack([torch.cos(angles), torch.sin(angles)], -1)
    return MixtureTarget("ring8", torch.ones(8), means, std=0.2, margin=1.5, symmetry="rot8")


def two_modes() -> MixtureTarget:
    """Two well-separated Gaussians (s = 0.4, 10 s apart) with weights 0.75 / 0.25."""
    return MixtureTarget("two_modes", [0.75, 0.25], [[-2.0, 0.0], [2.0, 0.0]], std=0.4,
                         margin=2.0, symmetry="flip_x", steps_factor=0.4)


def bimodal_1d() -> MixtureTarget:
    """1-D mixture 0.3 N(−1, 0.4²) + 0.7 N(1, 0.4²): a low barrier (≈ 2 nats), so chains at
    T = 1 do switch modes, and the tempered law p^{1/T} visibly favours the heavier mode."""
    return MixtureTarget("bimodal_1d", [0.3, 0.7], [[-1.0], [1.0]], std=0.4, margin=2.0,
                         symmetry="flip_x", steps_factor=0.4)


def bimodal_1d_equal() -> MixtureTarget:
    """bimodal_1d with equal weights 0.5 N(−1, 0.4²) + 0.5 N(1, 0.4²): no mode is heavier, so
    the tempered law p^{1/T} of a correct model favours neither (C28's control)."""
    return MixtureTarget("bimodal_1d_equal", [0.5, 0.5], [[-1.0], [1.0]], std=0.4, margin=2.0,
                         symmetry="flip_x", steps_factor=0.4)


HD_DIM = 6


def ring8_hd() -> MixtureTarget:
    """ring8 in (x₁, x₂) times independent N(0, 0.2²) extra coordinates x₃ … x₆ (d = 6): the
    same 8 modes, now with 4 empty directions where a network can place spurious modes (C16).
    Box: the ring's square in (x₁, x₂), ±1.5 (7.5 sd) in the extra coordinates. Models of it
    are factorised, E = MLP(x₁, x₂) + Σⱼ MLPⱼ(xⱼ) (``blocks``), so the likelihood stays exact
    (a 2-D and four 1-D quadratures)."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = torch.zeros(8, HD_DIM, dtype=torch.float64)
    means[:, 0], means[:, 1] = 2.0 * torch.cos(angles), 2.0 * torch.sin(angles)
    t = MixtureTarget("ring8_hd", torch.ones(8), means, std=0.2, margin=1.5, symmetry="rot8")
    lo, hi = min(b[0] for b in t.bounds[:2]), max(b[1] for b in t.bounds[:2])
    t.bounds = ((lo, hi), (lo, hi), *t.bounds[2:])
    t.blocks = ((0, 1), *((j,) for j in range(2, HD_DIM)))
    return t


def checkerboard() -> CheckerboardTarget:
    return CheckerboardTarget()


TARGETS = {"ring8": ring8, "two_modes": two_modes, "checkerboard": checkerboard,
           "bimodal_1d": bimodal_1d, "bimodal_1d_equal": bimodal_1d_equal,
           "ring8_hd": ring8_hd}


def make_target(name: str) -> Target:
    check_choice(name, "target", tuple(TARGETS))
    return TARGETS[name]()


def train_test_split(target: Target, n_train: int, n_test: int,
                     generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Independent exact draws (float64) for training and for the test NLL."""
    data = target.sample(n_train + n_test, generator)
    return data[:n_train], data[n_train:]
