"""ebmref.analytic against independent computations and at its argument boundaries: the
Simpson weights and the grid written out, log_partition_quadrature and its error estimate
against scipy.integrate.simpson (1-D and 2-D), its defaults (801 points, chunks of 65,536), NaN
energies counted as zero density, every refused n_points/bounds with its full message; the
ULA laws against scipy's discrete Lyapunov solver, at the stability boundary (spectral radius
exactly 1: refused by the closed form, iterated by the law), in the inputs' dtype whatever the
default dtype, and for a two-level stack of precisions."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch
from scipy import integrate, linalg

from ebmref.analytic import (
    grid,
    log_partition_quadrature,
    simpson_weights,
    ula_gaussian_law,
    ula_stationary_covariance,
)

F64 = torch.float64
P = torch.tensor([[1.4, 0.3], [0.3, 0.9]], dtype=F64)


def test_simpson_weights_written_out():
    """(1, 4, 2, 4, 2, 4, 2, 4, 1)/3 for 9 points; in 2-D the flattened outer product (row i,
    column j at i·n + j); in the requested dtype."""
    w9 = simpson_weights(9, 1)
    assert w9.dtype == F64
    assert w9.tolist() == pytest.approx([v / 3 for v in (1, 4, 2, 4, 2, 4, 2, 4, 1)], rel=1e-15)
    w5 = torch.tensor([1.0, 4.0, 2.0, 4.0, 1.0], dtype=F64) / 3
    w2 = simpson_weights(5, 2)
    assert w2.shape == (25,)
    assert w2.tolist() == pytest.approx([float(w5[i] * w5[j]) for i in range(5) for j in range(5)],
                                        rel=1e-15)
    assert simpson_weights(5, 2, torch.float32).dtype == torch.float32
    assert simpson_weights(5, 1, torch.float32).dtype == torch.float32


@pytest.mark.parametrize("n_points, dim, message", [
    (2, 1, r"^n_points: must be an integer in \[3, ∞\], got 2$"),
    (6, 1, r"^n_points: Simpson's rule needs an odd number of points, got 6$"),
    (10, 2, r"^n_points: Simpson's rule needs an odd number of points, got 10$"),
    (5, 3, r"^dim: must be 1 or 2, got 3$"),
    (5, 0, r"^dim: must be 1 or 2, got 0$"),
])
def test_simpson_weights_refuse_what_is_not_a_simpson_rule(n_points, dim, message):
    """An even number of points leaves an interval unpaired: (1, 4, 2, 4, 2, 1)/3 is no
    quadrature rule, so it is refused rather than returned; so are < 3 points and dim ∉ {1, 2}
    (the weights would be the 1-D ones)."""
    with pytest.raises(ValueError, match=message):
        simpson_weights(n_points, dim)
    assert simpson_weights(3, 1).tolist() == pytest.approx([1 / 3, 4 / 3, 1 / 3], rel=1e-15)


def test_grid_points_in_ij_order_and_cell():
    """Row i·n + j of a 2-D grid is (x_i, y_j) of the two linspaces; points are (N, d); the cell
    is Π (hi − lo)/(n − 1); no warning (the meshgrid indexing is explicit)."""
    warn_always = torch.is_warn_always_enabled()
    torch.set_warn_always(True)  # torch's warnings that fire once per process fire every time
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            pts, cell = grid(((0.0, 1.0), (-2.0, 4.0)), 5)
            pts1, cell1 = grid(((-1.0, 2.0),), 7, dtype=torch.float32)
    finally:
        torch.set_warn_always(warn_always)
    xs, ys = np.linspace(0.0, 1.0, 5), np.linspace(-2.0, 4.0, 5)
    assert pts.shape == (25, 2) and pts.dtype == F64
    assert pts.tolist() == [[x, y] for x in xs for y in ys]
    assert cell == pytest.approx(0.25 * 1.5, rel=1e-15)
    assert pts1.shape == (7, 1) and pts1.dtype == torch.float32
    assert pts1[:, 0].tolist() == pytest.approx(np.linspace(-1.0, 2.0, 7).tolist(), rel=1e-6)
    assert cell1 == pytest.approx(0.5, rel=1e-15)


def _f1(x):
    return np.exp(-np.sin(3 * x) - 0.5 * x * x)


def test_quadrature_and_error_estimate_match_scipy_simpson_1d():
    """log Z = log of scipy's Simpson sum on n points; the error estimate is its distance to
    the Simpson sum on the (n + 1)/2 points of every other node."""
    bounds, n = (-2.0, 3.0), 21
    x = np.linspace(*bounds, n)
    fine = math.log(integrate.simpson(_f1(x), x=x))
    coarse = math.log(integrate.simpson(_f1(x[::2]), x=x[::2]))
    lz, err = log_partition_quadrature(
        lambda t: torch.sin(3 * t[:, 0]) + 0.5 * t[:, 0] ** 2, (bounds,), n_points=n)
    assert lz == pytest.approx(fine, rel=1e-13)
    assert err == pytest.approx(abs(fine - coarse), rel=1e-9)
    assert err > 1e-6  # the two rules differ visibly at this resolution


def test_quadrature_and_error_estimate_match_scipy_simpson_2d():
    """2-D: nested scipy Simpson sums over the same box (fine: 13² points, coarse: 7²)."""
    bx, by, n = (-1.0, 2.0), (0.0, 1.5), 13

    def f(x, y):
        return np.exp(-np.cos(2 * x) * y - 0.3 * x * x - y)

    def simpson2(xs, ys):
        vals = f(xs[:, None], ys[None, :])
        return integrate.simpson(integrate.simpson(vals, x=ys, axis=1), x=xs)

    xs, ys = np.linspace(*bx, n), np.linspace(*by, n)
    fine, coarse = math.log(simpson2(xs, ys)), math.log(simpson2(xs[::2], ys[::2]))
    lz, err = log_partition_quadrature(
        lambda t: torch.cos(2 * t[:, 0]) * t[:, 1] + 0.3 * t[:, 0] ** 2 + t[:, 1], (bx, by), n)
    assert lz == pytest.approx(fine, rel=1e-13)
    assert err == pytest.approx(abs(fine - coarse), rel=1e-9)
    assert err > 1e-7


def test_quadrature_defaults_801_points_in_chunks_of_65536():
    """Without n_points the rule uses 801 points per axis; the energy sees chunks of at most
    ``batch`` = 65,536 points (801² = 9 · 65,536 + 51,777 in 2-D)."""
    sizes: list[int] = []

    def energy(x):
        sizes.append(x.shape[0])
        return 0.5 * (x * x).sum(-1)

    lz, _ = log_partition_quadrature(energy, ((-9.0, 9.0),))
    assert sizes == [801] and lz == pytest.approx(0.5 * math.log(2 * math.pi), abs=1e-12)
    sizes.clear()
    lz2, _ = log_partition_quadrature(energy, ((-9.0, 9.0), (-9.0, 9.0)))
    assert sizes == [65536] * 9 + [51777]
    assert lz2 == pytest.approx(math.log(2 * math.pi), abs=1e-12)


def test_quadrature_chunks_are_concatenated_in_order():
    """batch = 7 on a 9 × 9 grid: 12 chunks, the same log Z and error as one chunk."""
    def energy(x):
        return x[:, 0] ** 2 + 0.5 * x[:, 0] * x[:, 1] + x[:, 1] ** 4

    one = log_partition_quadrature(energy, ((-2.0, 2.0), (-1.0, 1.5)), 9)
    chunked = log_partition_quadrature(energy, ((-2.0, 2.0), (-1.0, 1.5)), 9, batch=7)
    assert chunked == pytest.approx(one, rel=1e-14)


def test_nan_energies_count_as_zero_density():
    """An energy that is NaN on part of the grid integrates like +∞ there (exp(−E) = 0)."""
    def energy(fill):
        return lambda x: torch.where(x[:, 0] < 0, torch.full_like(x[:, 0], fill), x[:, 0] ** 2)

    with_nan = log_partition_quadrature(energy(math.nan), ((-1.0, 1.0),), 9)
    with_inf = log_partition_quadrature(energy(math.inf), ((-1.0, 1.0),), 9)
    assert with_nan == with_inf
    x = np.linspace(-1.0, 1.0, 9)
    assert with_nan[0] == pytest.approx(
        math.log(integrate.simpson(np.where(x < 0, 0.0, np.exp(-x * x)), x=x)), rel=1e-13)


@pytest.mark.parametrize("n", [5, 9, 13])
def test_quadrature_accepts_every_n_one_mod_four_from_five(n):
    """n ≡ 1 (mod 4), n ≥ 5 (5 and 9 included): ∫₀¹ 1 dx = 1 exactly."""
    lz, err = log_partition_quadrature(lambda x: torch.zeros_like(x[:, 0]), ((0.0, 1.0),), n)
    assert abs(lz) < 1e-15 and err < 1e-15


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6, 7, 8, 10, 11, 15])
def test_quadrature_refuses_other_point_counts(n):
    """Every other count is refused with its full message."""
    with pytest.raises(ValueError, match=rf"^n_points: must be ≥ 5 with n_points ≡ 1 \(mod 4\), "
                                         rf"got {n}$"):
        log_partition_quadrature(lambda x: x[:, 0], ((0.0, 1.0),), n)


@pytest.mark.parametrize("bounds,msg", [
    ((), "bounds: quadrature supports 1-D or 2-D boxes, got 0 dimensions"),
    (((0.0, 1.0),) * 3, "bounds: quadrature supports 1-D or 2-D boxes, got 3 dimensions"),
    (((1.0, 1.0),), "bounds: each axis needs finite low < high, got (1.0, 1.0)"),
    (((0.0, 1.0), (2.0, 1.5)), "bounds: each axis needs finite low < high, got (2.0, 1.5)"),
    (((-math.inf, 1.0),), "bounds: each axis needs finite low < high, got (-inf, 1.0)"),
    (((0.0, math.nan),), "bounds: each axis needs finite low < high, got (0.0, nan)"),
])
def test_quadrature_refuses_bad_boxes_with_their_message(bounds, msg):
    """Dimensions other than 1 or 2, an empty, reversed or infinite axis: full message."""
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        log_partition_quadrature(lambda x: x[:, 0], bounds, 5)


@pytest.mark.parametrize("step,noise", [(0.5, None), (0.3, 0.4)])
def test_stationary_covariance_solves_the_discrete_lyapunov_equation(step, noise):
    """C∞ = A C∞ Aᵀ + s²I (scipy.linalg.solve_discrete_lyapunov), A = I − aP, with (a, s²) =
    (λ/2, λ) for eq. 1 and (α, σ²) for Du's step."""
    a, s2 = (step / 2, step) if noise is None else (step, noise**2)
    A = np.eye(2) - a * P.numpy()
    want = linalg.solve_discrete_lyapunov(A, s2 * np.eye(2))
    got = ula_stationary_covariance(P, step, noise)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=0)
    assert torch.equal(got, got.T)


def test_stationary_covariance_refuses_spectral_radius_one():
    """λ = 4 on P = I: A = I − 2I = −I, spectral radius exactly 1: no stationary law."""
    with pytest.raises(ValueError, match=r"^step_size: 4\.0 makes ULA unstable \(spectral radius "
                                         r"of I − aP is 1 ≥ 1\)$"):
        ula_stationary_covariance(torch.eye(2, dtype=F64), 4.0)
    with pytest.raises(ValueError, match=r"^step_size: 3\.0 makes ULA unstable \(spectral radius "
                                         r"of I − aP is 2\.6 ≥ 1\)$"):
        ula_stationary_covariance(torch.diag(torch.tensor([2.4, 0.5], dtype=F64)), 3.0)


def test_stationary_covariance_of_a_two_level_stack():
    """Precisions (2, 3, 2, 2): one C∞ per matrix (d from the last axis, not a batch axis)."""
    g = torch.Generator().manual_seed(2)
    b = torch.randn(2, 3, 2, 2, generator=g, dtype=F64)
    prec = (b @ b.mT + torch.eye(2, dtype=F64)) / 8.0
    got = ula_stationary_covariance(prec, 0.2, 0.3)
    assert got.shape == (2, 3, 2, 2)
    for i in range(2):
        for j in range(3):
            A = np.eye(2) - 0.2 * prec[i, j].numpy()
            want = linalg.solve_discrete_lyapunov(A, 0.09 * np.eye(2))
            np.testing.assert_allclose(got[i, j].numpy(), want, rtol=1e-12, atol=0)


def test_law_at_spectral_radius_one_is_iterated():
    """λ = 4 on P = I (A = −I, no C∞): after n steps the mean is μ + (−1)ⁿ(m₀ − μ) and the
    covariance C₀ + nλI (each step adds s²I = λI and A C Aᵀ = C)."""
    mu = torch.tensor([0.5, -1.0], dtype=F64)
    m0 = torch.tensor([2.0, 1.0], dtype=F64)
    c0 = torch.tensor([[0.3, 0.1], [0.1, 0.2]], dtype=F64)
    eye = torch.eye(2, dtype=F64)
    for n in (0, 1, 3):
        mean, cov = ula_gaussian_law(mu, eye, m0, c0, n, 4.0)
        torch.testing.assert_close(mean, mu + (-1) ** n * (m0 - mu), rtol=0, atol=1e-14)
        torch.testing.assert_close(cov, c0 + 4.0 * n * eye, rtol=0, atol=1e-13)


@pytest.mark.parametrize("step,noise", [(0.5, None), (0.3, 0.4), (1.5, 0.2)],
                         ids=["eq1", "decoupled", "decoupled-unstable"])
def test_law_matches_the_recursion_and_starts_at_the_start(step, noise):
    """m ← μ + A(m − μ), C ← ACAᵀ + s²I iterated n times from (m₀, C₀) (α = 1.5 with Du's
    step is unstable: the law iterates); n = 0 gives (m₀, C₀) back."""
    mu = torch.tensor([0.2, -0.4], dtype=F64)
    m0 = torch.tensor([1.0, 2.0], dtype=F64)
    c0 = torch.tensor([[0.5, -0.1], [-0.1, 0.2]], dtype=F64)
    a, s2 = (step / 2, step) if noise is None else (step, noise**2)
    A = torch.eye(2, dtype=F64) - a * P
    m, c = m0.clone(), c0.clone()
    for n in range(6):
        mean, cov = ula_gaussian_law(mu, P, m0, c0, n, step, noise)
        torch.testing.assert_close(mean, m, rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(cov, c, rtol=1e-11, atol=1e-13)
        m, c = mu + A @ (m - mu), A @ c @ A.T + s2 * torch.eye(2, dtype=F64)


@pytest.mark.parametrize("n", [-1, 2.0, True])
def test_law_refuses_a_step_count_that_is_not_a_natural_number(n):
    """n_steps must be an int ≥ 0 (0 allowed), with the validation's full message."""
    with pytest.raises(ValueError, match=rf"^n_steps: must be an integer in \[0, ∞\], "
                                         rf"got {re.escape(repr(n))}$"):
        ula_gaussian_law(torch.zeros(2, dtype=F64), P, torch.zeros(2, dtype=F64),
                         torch.eye(2, dtype=F64), n, 0.1)


def test_laws_keep_the_inputs_dtype_whatever_the_default_dtype():
    """float32 inputs give float32 results even when the default dtype is float64 (the identity
    matrices are built in the inputs' dtype)."""
    p32, z32 = P.float(), torch.zeros(2)
    old = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        c_inf = ula_stationary_covariance(p32, 0.5, 0.3)
        mean, cov = ula_gaussian_law(z32, p32, z32 + 1, torch.eye(2, dtype=torch.float32), 3,
                                     0.5, 0.3)
        mean_u, cov_u = ula_gaussian_law(z32, p32, z32 + 1, torch.eye(2, dtype=torch.float32), 2,
                                         3.0, 0.3)
    finally:
        torch.set_default_dtype(old)
    assert c_inf.dtype == torch.float32
    assert (mean.dtype, cov.dtype, mean_u.dtype, cov_u.dtype) == (torch.float32,) * 4


def test_law_after_a_billion_steps_is_the_stationary_law():
    """The law is in closed form (Aⁿ by repeated squaring, not n iterations): after 10⁹ stable
    steps the mean is μ and the covariance C∞, to round-off."""
    mu = torch.tensor([0.2, -0.4], dtype=F64)
    mean, cov = ula_gaussian_law(mu, P, torch.ones(2, dtype=F64), torch.eye(2, dtype=F64),
                                 10**9, 0.3, 0.4)
    torch.testing.assert_close(mean, mu, rtol=0, atol=1e-14)
    torch.testing.assert_close(cov, ula_stationary_covariance(P, 0.3, 0.4), rtol=1e-12, atol=0)
