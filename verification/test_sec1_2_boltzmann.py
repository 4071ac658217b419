"""Claims C1 and C2 (paper §1, §2.1): the Boltzmann density p = e^{−E}/Z and its max-entropy
property, checked deterministically by quadrature and closed forms (float64).

* C1  log Z of the analytic energies equals numerical quadrature within the quadrature's own
      error estimate; "E_θ ≥ 0 is required" is false: E + c gives log Z − c and the same p, and
      E ≥ 0 is not sufficient either (E ≡ 0 on ℝ has Z = ∞). What is required is Z < ∞.
* C2  among densities with the same mean energy, p_Boltzmann has the largest entropy:
      H(q) = H(p) − KL(q ‖ p) for every such q, checked on a grid and in the Gaussian family.
"""

from __future__ import annotations

import math

import pytest
import torch

from ebmref.analytic import gaussian_entropy, grid, log_partition_quadrature
from ebmref.energy import DoubleWell, Energy, Gaussian, GaussianMixture

F64 = torch.float64
ROUND_OFF = 1e-12  # logsumexp over ≤ 10⁶ float64 terms


class ShiftedEnergy(Energy):
    """E(x) + c: negative where E < −c (violates "E ≥ 0")."""

    def __init__(self, base: Energy, c: float):
        super().__init__()
        self.base, self.c = base, c
        self.event_shape = base.event_shape

    def forward(self, x):
        return self.base(x) + self.c


def _cases():
    return [
        ("gaussian_2d", Gaussian([0.5, -1.0], [[1.0, 0.6], [0.6, 0.8]], dtype=F64),
         ((-7.5, 8.5), (-9.0, 7.0))),
        ("mixture_2d", GaussianMixture([0.0, 0.5], [[-1.5, 0.0], [1.5, 0.5]],
                                       [[[0.5, 0.2], [0.2, 0.4]], [[0.3, 0.0], [0.0, 0.6]]],
                                       dtype=F64), ((-8.0, 8.0), (-8.0, 8.0))),
        ("double_well", DoubleWell(2.0, 0.5, dtype=F64), ((-3.5, 3.5),)),
        ("gaussian_1d_wide", Gaussian([3.0], [[4.0]], dtype=F64), ((-20.0, 26.0),)),
    ]


@pytest.mark.parametrize("name,energy,bounds", _cases(), ids=[c[0] for c in _cases()])
def test_c1_log_partition_matches_quadrature(name, energy, bounds):
    """C1: |log Z − log Z_quad| ≤ Simpson error estimate + round-off."""
    n = 1201 if len(bounds) == 2 else 20001
    log_z_quad, err = log_partition_quadrature(energy, bounds, n_points=n)
    log_z = float(energy.log_partition().detach())
    assert err < 1e-7, f"quadrature not resolved: error estimate {err:.2e}"
    assert abs(log_z - log_z_quad) <= err + ROUND_OFF * (1 + abs(log_z)), (log_z, log_z_quad, err)


def test_c1_log_partition_quadrature_detects_wrong_normaliser():
    """Broken variant: the same check rejects log Z off by 1e-6 (e.g. a dropped ½ log 2π term
    would be off by 0.92): the tolerance is far tighter than any real mistake."""
    g = Gaussian([0.0, 0.0], [[1.0, 0.3], [0.3, 2.0]], dtype=F64)
    log_z_quad, err = log_partition_quadrature(g, ((-12.0, 12.0), (-15.0, 15.0)), n_points=1201)
    assert abs(float(g.log_partition().detach()) + 1e-6 - log_z_quad) > err + ROUND_OFF * 10


@pytest.mark.parametrize("c", [-7.0, -0.5, 3.0])
def test_c1_energy_need_not_be_nonnegative(c):
    """C1 (refuted: E ≥ 0 is not required). E + c has log Z − c and the same p(x); with c = −7
    the energy is negative on a whole region and p is still the same normalised density."""
    base = DoubleWell(2.0, 0.5, dtype=F64)
    shifted = ShiftedEnergy(base, c)
    bounds = ((-3.5, 3.5),)
    lz, err = log_partition_quadrature(base, bounds, n_points=20001)
    lz_c, err_c = log_partition_quadrature(shifted, bounds, n_points=20001)
    assert abs((lz_c - lz) - (-c)) <= err + err_c + 1e-11
    pts, _ = grid(bounds, 2001)
    if c < 0:
        assert float(shifted(pts).detach().min()) < 0  # the energy really is negative somewhere
    torch.testing.assert_close(-shifted(pts) - lz_c, -base(pts) - lz, rtol=0, atol=1e-10)


class Flat(Energy):
    event_shape = (1,)

    def forward(self, x):
        return torch.zeros(x.shape[0], dtype=x.dtype)


def test_c1_nonnegative_energy_is_not_sufficient():
    """E ≡ 0 ≥ 0 on ℝ: ∫ e^{−E} over [−R, R] = 2R grows without bound, so Z = ∞ and p_θ does
    not exist. The condition that matters is Z < ∞."""
    vals = [log_partition_quadrature(Flat(), ((-r, r),), n_points=401)[0] for r in (10, 100, 1000)]
    for v, r in zip(vals, (10, 100, 1000)):
        assert abs(v - math.log(2 * r)) < 1e-12


# ----------------------------------------------------------------------------- C2

BOUNDS_1D = ((-3.5, 3.5),)
N_GRID = 4001


def _simpson_weights(n: int, h: float) -> torch.Tensor:
    w = torch.ones(n, dtype=F64)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return w * h / 3.0


def _entropy(q: torch.Tensor, w: torch.Tensor) -> float:
    return float(-(w * torch.xlogy(q, q)).sum())


def _admissible_directions(e: torch.Tensor, w: torch.Tensor, q: torch.Tensor,
                           raw: torch.Tensor) -> torch.Tensor:
    """Perturbations h = q·g with ∫h = 0 and ∫hE = 0: rows of ``raw`` (functions g) projected
    orthogonally to {1, E} in L²(q). Then q + εh = q(1 + εg) stays ≥ 0 for small ε."""
    basis = torch.stack([torch.ones_like(e), e])
    wq = w * q
    G = (basis * wq) @ basis.T
    coef = torch.linalg.solve(G, (basis * wq) @ raw.T)
    return (raw - coef.T @ basis) * q


def _max_entropy_gain(q: torch.Tensor, e: torch.Tensor, w: torch.Tensor,
                      gen: torch.Generator) -> float:
    """max over admissible perturbations h (random ones and the projected entropy gradient)
    and step sizes of H(q + εh) − H(q): ≤ 0 iff no admissible move raises the entropy."""
    x = torch.linspace(*BOUNDS_1D[0], N_GRID, dtype=F64)
    raw = [torch.randn(N_GRID, generator=gen, dtype=F64) for _ in range(8)]
    raw += [torch.sin(k * x) for k in (1, 2, 3)]
    raw.append(-torch.log(q))  # L²(q)-gradient of H at q (the −1 is removed by the projection)
    raw = torch.stack(raw)
    dirs = _admissible_directions(e, w, q, raw)
    h0, best = _entropy(q, w), -math.inf
    for h, r in zip(dirs, raw):
        g = h / q
        if float(g.norm()) < 1e-9 * float(r.norm()):
            continue  # r lies in span{1, E}: no admissible direction left (Lagrange condition)
        for eps in (1e-3, 1e-2, 0.1):
            step = eps / float(g.abs().max())
            best = max(best, _entropy(q + step * h, w) - h0)
    return best


def test_c2_boltzmann_is_max_entropy_at_fixed_mean_energy():
    """C2: for q = p + εh with ∫h = 0, ∫hE = 0: H(q) = H(p) − KL(q‖p) < H(p) (grid quadrature,
    checked to 1e-10); a non-Boltzmann density with the same constraints is *not* a maximum."""
    dw = DoubleWell(2.0, 0.5, dtype=F64)
    x = torch.linspace(*BOUNDS_1D[0], N_GRID, dtype=F64)
    w = _simpson_weights(N_GRID, (BOUNDS_1D[0][1] - BOUNDS_1D[0][0]) / (N_GRID - 1))
    e = dw(x[:, None]).detach()
    p = torch.exp(-e)
    p = p / (w * p).sum()
    gen = torch.Generator().manual_seed(11)
    # The identity H(q) = H(p) − KL(q‖p) for one admissible perturbation, to 1e-10.
    h = _admissible_directions(e, w, p, torch.randn(1, N_GRID, generator=gen, dtype=F64))[0]
    q = p + 0.5 * h / float((h / p).abs().max())
    assert float(q.min()) > 0
    assert abs(float((w * (q - p)).sum())) < 1e-12 and abs(float((w * (q - p) * e).sum())) < 1e-12
    kl = float((w * torch.xlogy(q, q) - w * q * torch.log(p)).sum())
    assert abs(_entropy(q, w) - (_entropy(p, w) - kl)) < 1e-10 and kl > 0
    assert _max_entropy_gain(p, e, w, gen) < 1e-13  # no admissible move gains (round-off)
    # Lagrange condition: the entropy gradient −log p − 1 lies in span{1, E} exactly.
    assert _gradient_residual(p, e, w) < 1e-10
    # Broken variant: a Gaussian-shaped density is not the maximiser; projecting its entropy
    # gradient onto the same constraint set finds a direction of higher entropy.
    qg = torch.exp(-0.5 * ((x - 0.2) / 0.9) ** 2)
    qg = qg / (w * qg).sum()
    assert _max_entropy_gain(qg, e, w, gen) > 1e-6
    assert _gradient_residual(qg, e, w) > 1e-2


def _gradient_residual(q, e, w) -> float:
    """Relative L²(q) norm of −log q after projecting out span{1, E}."""
    r = -torch.log(q)[None]
    g = _admissible_directions(e, w, q, r)[0] / q
    return float(((w * q * g * g).sum() / (w * q * r[0] ** 2).sum()).sqrt())


def test_c2_gaussian_family_max_entropy():
    """C2 in closed form: among N(m, C) with E_q[E] = ½tr(PC) + ½(m−μ)ᵀP(m−μ) = d/2 (the mean
    energy under p = N(μ, Σ)), H(q) ≤ H(p) with equality only at q = p."""
    g = Gaussian([0.5, -1.0], [[1.0, 0.6], [0.6, 0.8]], dtype=F64)
    P, mu, d = g.precision.detach(), g.mu.detach(), 2
    h_p = float(gaussian_entropy(g.covariance.detach()))
    gen = torch.Generator().manual_seed(5)
    for _ in range(200):
        a = torch.randn(d, d, generator=gen, dtype=F64)
        c = a @ a.T + 0.05 * torch.eye(d, dtype=F64)
        m = mu + 0.3 * torch.randn(d, generator=gen, dtype=F64)
        quad = 0.5 * float((m - mu) @ P @ (m - mu))
        if quad >= d / 2:
            continue
        c = c * (d / 2 - quad) / (0.5 * float(torch.trace(P @ c)))  # fix E_q[E] = d/2
        assert abs(0.5 * float(torch.trace(P @ c)) + quad - d / 2) < 1e-12
        assert float(gaussian_entropy(c)) < h_p
    # The maximiser itself meets the constraint with equality of entropies.
    assert abs(0.5 * float(torch.trace(P @ g.covariance.detach())) - d / 2) < 1e-12
