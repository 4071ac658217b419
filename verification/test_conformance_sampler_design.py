"""check_sampler's standard targets and the rows of its "exact" kind, fast: the targets as
their docstrings define them (energies, weights, ULA start, the smallest sd that sets the
movement guard's δ, the mixture's projected CDF), the per-target n_steps override, the
movement guard (strict ‖x_n − x₀‖ > δ, NaN fails, its detectable fraction against an
independent inversion of the binomial CDF), and the mixture's KS rows (e₁ and two random unit
directions from the seed, the statistic and detectable effect of each).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from scipy import fft, special, stats

from ebmref.conformance import UnderpoweredError, check_sampler
from ebmref.conformance.sampler import _movement_detectable, _movement_row, run_sampler
from ebmref.conformance.targets import (
    TARGETS,
    dct_orthogonal,
    double_well,
    gauss2d,
    gauss20d,
    mixture2d,
    mixture_projected_cdf,
    ula_start,
)
from ebmref.stats import BETA, chi2_detectable_rel_error, ks_min_detectable

F64 = torch.float64


class Identity:
    """A kernel that returns its start (exact samples for kind="exact"), recording calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, energy, x0, n_steps, step_size, generator):
        self.calls.append((x0.clone(), n_steps, step_size))
        return x0


# ---------------------------------------------------------------- targets


@pytest.mark.parametrize("d", [5, 20])
def test_dct_orthogonal_is_the_orthonormal_dct_ii(d):
    """Q x = DCT-II(x) with orthonormal scaling (scipy.fft), so Q Qᵀ = I."""
    q = dct_orthogonal(d)
    assert q.dtype == F64
    expected = fft.dct(np.eye(d), type=2, norm="ortho", axis=0)
    np.testing.assert_allclose(q.numpy(), expected, rtol=0, atol=1e-14)


def test_gaussian_targets():
    """gauss2d: μ = (0.5, −1), Σ = [[1, 0.6], [0.6, 0.8]]; gauss20d: μ evenly spaced in
    [−1, 1], Σ = Q diag(s) Qᵀ with s evenly spaced in [0.5, 2] and Q the orthonormal DCT-II."""
    g2 = gauss2d()
    assert torch.equal(g2.mu.detach(), torch.tensor([0.5, -1.0], dtype=F64))
    assert torch.allclose(g2.covariance.detach(),
                          torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=F64), rtol=0, atol=1e-14)
    g20 = gauss20d()
    np.testing.assert_allclose(g20.mu.detach().numpy(), np.linspace(-1.0, 1.0, 20), rtol=0,
                               atol=1e-15)
    q = fft.dct(np.eye(20), type=2, norm="ortho", axis=0)
    cov = q @ np.diag(np.linspace(0.5, 2.0, 20)) @ q.T
    np.testing.assert_allclose(g20.covariance.detach().numpy(), cov, rtol=0, atol=1e-12)


def test_double_well_energy():
    """E(x) = 2(x² − 1)²."""
    x = torch.tensor([[-1.5], [-1.0], [0.0], [0.5], [2.0]], dtype=F64)
    expected = 2.0 * (x[:, 0] ** 2 - 1.0) ** 2
    assert torch.allclose(double_well()(x).detach(), expected, rtol=1e-14, atol=1e-14)


def test_mixture_weights():
    """Weights ∝ e⁰, e^0.5."""
    w = np.array([1.0, math.exp(0.5)])
    np.testing.assert_allclose(mixture2d().weights.detach().numpy(), w / w.sum(), rtol=1e-12)


@pytest.mark.parametrize("make, name", [(gauss2d, "gauss2d"), (gauss20d, "gauss20d")])
def test_ula_start_is_offset_from_the_target(make, name):
    """ULA chains start at N(μ + 1.5·1, 0.3·I)."""
    energy = make()
    m0, c0 = ula_start(energy, TARGETS[name])
    assert torch.allclose(m0, energy.mu.detach() + 1.5, rtol=0, atol=1e-15)
    assert torch.equal(c0, 0.3 * torch.eye(energy.dim, dtype=F64))


def _smallest_sd(name):
    energy = TARGETS[name].make()
    if name == "double_well":  # the sd of a well: 1/√E''(1)
        x = torch.tensor([[1.0]], dtype=F64, requires_grad=True)
        (g,) = torch.autograd.grad(energy(x).sum(), x, create_graph=True)
        (h,) = torch.autograd.grad(g.sum(), x)
        return float(h) ** -0.5
    if name == "mixture2d":  # of a component
        cov = energy.scale_trils.detach() @ energy.scale_trils.detach().transpose(-1, -2)
    else:
        cov = energy.covariance.detach()
    return float(torch.linalg.eigvalsh(cov).min()) ** 0.5


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_sd_min_is_the_targets_smallest_standard_deviation(name):
    """sd_min (the unit of the movement guard's δ) is the smallest sd of the target (of a
    component for the mixture, of a well for the double well), to the 2 % it is rounded to."""
    assert TARGETS[name].sd_min == pytest.approx(_smallest_sd(name), rel=0.02)


def test_mixture_projected_cdf_shapes_and_values():
    """t ↦ Σ πₖ Φ((t − uᵀμₖ)/√(uᵀΣₖu)) elementwise, for a scalar and for a 2-D array of t."""
    gm = mixture2d()
    u = torch.tensor([0.6, 0.8], dtype=F64)
    w = gm.weights.detach().numpy()
    cov = (gm.scale_trils @ gm.scale_trils.transpose(-1, -2)).detach().numpy()
    mean = gm.means.detach().numpy() @ u.numpy()
    sd = np.sqrt(np.einsum("i,kij,j->k", u.numpy(), cov, u.numpy()))
    t = np.array([[-2.0, 0.1], [0.7, 3.0], [1.0, -0.5]])
    expected = sum(w[k] * stats.norm.cdf((t - mean[k]) / sd[k]) for k in range(2))
    cdf = mixture_projected_cdf(gm, u)
    np.testing.assert_allclose(cdf(t), expected, rtol=1e-12)
    scalar = cdf(0.7)
    assert np.shape(scalar) == () and float(scalar) == pytest.approx(expected[1, 0], rel=1e-12)


# ---------------------------------------------------------------- n_steps


def test_n_steps_and_step_size_overrides():
    """n_steps = 1 (the smallest allowed) and a step size reach the sampler, as a number or
    per target; a bool is refused; the default seed is 0."""
    for n_steps, step in ((1, 0.3), ({"gauss2d": 1}, {"gauss2d": 0.3})):
        fn = Identity()
        report = check_sampler(fn, kind="ula", targets=["gauss2d"], n_steps=n_steps,
                               step_size=step, scale=0.1, rel_error=0.15)
        assert [c[1:] for c in fn.calls] == [(1, 0.3)]
        assert "1 steps of step size 0.3" in report.design[0] and report.seed == 0
    with pytest.raises(ValueError, match=r"^n_steps: must be an integer >= 1, got True$"):
        check_sampler(Identity(), kind="ula", n_steps=True)
    with pytest.raises(ValueError, match=r"^min_moved: must lie in \[0, 1\], got 2\.0$"):
        check_sampler(Identity(), kind="exact", min_moved=2.0)


def test_chi2_power_boundary():
    """A design whose χ² row detects exactly rel_error is accepted; one ulp less is not."""
    r = chi2_detectable_rel_error(4000, 2, 1e-6 / 3)
    kwargs = {"kind": "ula", "targets": ["gauss2d"], "scale": 0.1}
    assert len(check_sampler(Identity(), rel_error=r, **kwargs).rows) == 3
    with pytest.raises(UnderpoweredError, match=r"^underpowered: gauss2d with 4000 chains"):
        check_sampler(Identity(), rel_error=float(np.nextafter(r, 0.0)), **kwargs)


def test_run_sampler_returns_float64_states():
    """The states come back detached and in float64 whatever the sampler returns (a float32
    tensor, or an object with it in .x)."""
    energy = gauss2d()
    x0 = torch.zeros(3, 2, dtype=F64)

    class Out:
        def __init__(self, x):
            self.x = x

    for fn in (lambda e, x, n, s, g: x.float() + 0.5, lambda e, x, n, s, g: Out(x.float() + 0.5)):
        x = run_sampler(fn, energy, x0, 1, 0.1, torch.Generator())
        assert x.dtype == F64 and torch.equal(x, torch.full((3, 2), 0.5, dtype=F64))


# ---------------------------------------------------------------- movement guard


def test_movement_row_counts_strictly_and_nan_fails():
    """A chain moved by exactly δ does not count as moved; value = moved fraction, p =
    P(Bin(M, f₀) ≤ count); a non-finite state makes p NaN (the row fails)."""
    x0 = torch.zeros(4, 2, dtype=F64)
    x = x0.clone()
    x[0, 0], x[1, 1], x[2, 0] = 0.5, 1.0, -1.0  # moved by δ, 2δ, 2δ; chain 3 not moved
    row = _movement_row("t", x, x0, 0.5, 0.1, 1e-3)
    assert row.value == 0.5
    assert row.p_value == pytest.approx(stats.binom.cdf(2, 4, 0.1), rel=1e-12)
    x[3, 0] = math.nan
    row = _movement_row("t", x, x0, 0.5, 0.1, 1e-3)
    assert math.isnan(row.p_value) and not row.passed


def _detectable_reference(m, f0, alpha_per):
    """Largest true moved fraction f with P(fail) ≥ 1 − β, by scanning the failing counts
    and inverting the binomial CDF in p (scipy.special.bdtri)."""
    counts = np.arange(m + 1)
    failing = counts[stats.binom.cdf(counts, m, f0) < alpha_per]
    if failing.size == 0:
        return 0.0
    return float(special.bdtri(failing.max(), m, 1 - BETA))


@pytest.mark.parametrize("m, f0, alpha_per", [
    (100, 0.1, 1e-6),  # no count fails: nothing is detectable
    (100, 0.1, 1e-4),  # only count 0 fails
    (1000, 0.5, 1e-3),
    (40_000, 0.1, 1e-6 / 4),
    (100_000, 0.1, 1e-7),
])
def test_movement_detectable_fraction(m, f0, alpha_per):
    expected = _detectable_reference(m, f0, alpha_per)
    got = _movement_detectable(m, f0, alpha_per)
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-300)
    assert (expected == 0.0) == (m == 100 and alpha_per == 1e-6)


# ---------------------------------------------------------------- KS rows


def _exact_run(targets, seed):
    fn = Identity()
    report = check_sampler(fn, kind="exact", targets=targets, scale=0.02, rel_error=0.5,
                           seed=seed)
    return fn, report


def test_mixture_ks_rows():
    """The mixture: KS of x₁ (u = e₁) against the exact marginal, then two random unit
    directions (labelled with their coordinates); each row's statistic and detectable
    effect; the double well: KS against its exact CDF."""
    fn, report = _exact_run(["mixture2d", "double_well"], seed=5)
    m, alpha_per = 3000, 1e-6 / 6
    rows = report.rows[:3]
    assert rows[0].target == f"mixture2d (M={m}), uᵀx on e₁"
    gm = mixture2d()
    w = gm.weights.detach().numpy()
    mean1 = gm.means.detach().numpy()[:, 0]
    sd1 = gm.scale_trils.detach().numpy()[:, 0, 0]  # first row of L: √Σₖ₁₁
    x1 = fn.calls[0][0][:, 0].numpy()
    d = stats.kstest(x1, lambda t: sum(w[k] * stats.norm.cdf((t - mean1[k]) / sd1[k])
                                       for k in range(2))).statistic
    assert rows[0].value == pytest.approx(d, abs=1e-12)
    for i, row in enumerate(rows[1:], start=1):
        match = re.fullmatch(rf"mixture2d \(M={m}\), uᵀx on u{i} = \((-?\d\.\d\d), (-?\d\.\d\d)\)",
                             row.target)
        assert match is not None, row.target
        assert float(match[1]) ** 2 + float(match[2]) ** 2 == pytest.approx(1.0, abs=0.02)
    d_min = f"KS distance ≥ {ks_min_detectable(m, alpha_per):.4f}"
    assert rows[0].detectable.startswith(d_min + " (")
    assert [r.detectable for r in rows[1:]] == [d_min, d_min]
    assert {r.statistic for r in rows} == {"KS distance to the exact projected CDF; Kolmogorov"}
    well = [r for r in report.rows if r.target == "double_well (M=2000)"]
    assert next(r.statistic for r in well) == "KS distance to the exact CDF; Kolmogorov"
    # the random directions come from the seed
    _, again = _exact_run(["mixture2d"], seed=5)
    assert [r.target for r in again.rows[:3]] == [r.target for r in rows]
