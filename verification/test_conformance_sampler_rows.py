"""check_sampler's rows and design, fast, with a sampler that returns its start: the ULA and
decoupled starts N(μ + 1.5·1, 0.3·I) drawn from the seed's generator, the rows against the
closed-form ULA law after n steps (ebmref.analytic.ula_gaussian_law, with Du's σ for
"decoupled"), the rows' labels, statistics, α = α/m and detectable effects from the design
(ebmref.stats' power functions), the "exact" kind's exact start and movement row, the floor of
100 chains, the dilation effect of the double well, the Bonferroni split over all 14 rows of
the standard "exact" check, and the title, α, seed and design lines of the report.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from scipy import stats

from ebmref.analytic import ula_gaussian_law
from ebmref.conformance import UnderpoweredError, check_sampler
from ebmref.conformance.sampler import _movement_detectable
from ebmref.conformance.targets import double_well, gauss2d, gauss20d, mixture2d
from ebmref.stats import (
    chi2_detectable_rel_error,
    ks_min_detectable,
    whitened_gaussian_tests,
    z_detectable,
)

F64 = torch.float64
STATS = ["Σ‖z‖²/(M·d), z = L⁻¹(x − m); M·d × it ~ χ²(M·d)",
         "maxⱼ √M|z̄ⱼ|; √M z̄ⱼ ~ N(0, 1), Bonferroni over d",
         "KS distance of ‖z‖² to χ²(d); Kolmogorov"]


class Identity:
    """Returns its start; records (x0, n_steps, step_size)."""

    def __init__(self):
        self.calls = []

    def __call__(self, energy, x0, n_steps, step_size, generator):
        self.calls.append((x0.clone(), n_steps, step_size))
        return x0


def _expected_gaussian_rows(energy, x, m, n_steps, step, noise, alpha_per):
    """(label, statistic, value, p, α, detectable) of the three rows, computed here."""
    d = energy.dim
    mean, cov = ula_gaussian_law(energy.mu.detach(), energy.precision.detach(),
                                 energy.mu.detach() + 1.5, 0.3 * torch.eye(d, dtype=F64),
                                 n_steps, step, noise)
    tests = whitened_gaussian_tests(x, mean, cov)
    r = chi2_detectable_rel_error(m, d, alpha_per)
    z = float(z_detectable(1 / math.sqrt(m), alpha_per / d))
    det = [f"covariance ×(1 ± {r:.2%})", f"mean shift ≥ {z:.3g} sd",
           f"KS distance ≥ {ks_min_detectable(m, alpha_per):.4f}"]
    name = "gauss2d" if d == 2 else "gauss20d"
    return [(f"{name} (M={m})", s, v, p, alpha_per, e)
            for s, (v, p), e in zip(STATS, tests.values(), det)]


def _rows(report):
    return [(r.target, r.statistic, r.value, r.p_value, r.alpha, r.detectable)
            for r in report.rows]


@pytest.mark.parametrize("kind, noise, step, tail", [
    ("ula", None, 0.4, ""), ("decoupled", 0.3, 0.2, ", noise σ = 0.3")])
def test_gaussian_kinds_test_the_closed_form_law_from_a_seeded_start(kind, noise, step, tail):
    """Starts m₀ + ξL₀ᵀ (ξ from the seed's generator, gauss2d's then gauss20d's), rows =
    whitened tests against the ULA law after the default steps, α/6 per row."""
    fn = Identity()
    report = check_sampler(fn, kind=kind, noise=noise, scale=0.1, rel_error=0.3, alpha=1e-5,
                           seed=3)
    g = torch.Generator().manual_seed(3)
    expected = []
    for energy, m, n_steps, call in ((gauss2d(), 4000, 15, fn.calls[0]),
                                     (gauss20d(), 1000, 10, fn.calls[1])):
        d = energy.dim
        x0 = energy.mu.detach() + 1.5 + torch.randn(m, d, generator=g, dtype=F64) * math.sqrt(0.3)
        assert torch.allclose(call[0], x0, rtol=0, atol=1e-14)
        assert call[1:] == (n_steps, step)
        expected += _expected_gaussian_rows(energy, call[0], m, n_steps, step, noise, 1e-5 / 6)
    assert _rows(report) == expected
    assert report.title == f"check_sampler(kind={kind!r})"
    assert (report.alpha, report.seed) == (1e-5, 3)
    assert report.design == [f"gauss2d: M = 4000 chains, 15 steps of step size {step:g}" + tail,
                             f"gauss20d: M = 1000 chains, 10 steps of step size {step:g}" + tail]


def test_exact_kind_starts_at_exact_samples_and_guards_movement():
    """"exact": the chains start at energy.sample(M, generator); the three Gaussian rows test
    the target itself; the movement row uses δ = 0.1·sd_min and f₀ = min_moved."""
    fn = Identity()
    report = check_sampler(fn, targets=["gauss2d"], scale=0.05, rel_error=0.5, min_moved=0.25,
                           seed=2)  # kind="exact" is the default
    assert report.title == "check_sampler(kind='exact')"
    energy, m, alpha_per = gauss2d(), 2000, 1e-6 / 4
    x0 = energy.sample(m, torch.Generator().manual_seed(2))
    assert torch.equal(fn.calls[0][0], x0) and fn.calls[0][1:] == (5, 0.6)
    tests = whitened_gaussian_tests(x0, energy.mu.detach(), energy.covariance.detach())
    assert [(r.value, r.p_value) for r in report.rows[:3]] == list(tests.values())
    assert [r.statistic for r in report.rows[:3]] == STATS
    move = report.rows[3]
    assert move.target == "gauss2d (M=2000)" and move.alpha == alpha_per
    assert move.statistic == "moved fraction (‖x_n − x₀‖ > 0.054); count ~ Bin(M, f ≥ 0.25)"
    assert move.value == 0.0 and move.p_value == stats.binom.cdf(0, m, 0.25)
    assert move.detectable == f"moved fraction ≤ {_movement_detectable(m, 0.25, alpha_per):.1%}"
    assert report.design == ["gauss2d: M = 2000 chains, 5 steps of step size 0.6"]


def test_floor_of_100_chains_and_the_double_well_dilation_effect():
    """M = max(round(n·scale), 100); the double well's KS row states the KS distance between
    its law and the law dilated about 0 to variance ×(1 + rel_error), computed here on a grid
    from its exact CDF."""
    report = check_sampler(Identity(), kind="exact", targets=["double_well"], scale=1e-9,
                           alpha=0.9, rel_error=10.0, seed=2)
    assert [r.target for r in report.rows] == ["double_well (M=100)"] * 2
    assert report.design == ["double_well: M = 100 chains, 6 steps of step size 0.15"]
    match = re.fullmatch(r"KS distance ≥ (\d\.\d{4}) \(1000% variance dilation: (\d\.\d{4})\)",
                         report.rows[0].detectable)
    assert match is not None, report.rows[0].detectable
    assert float(match[1]) == round(ks_min_detectable(100, 0.45), 4)
    well, t = double_well(), torch.linspace(-8.0, 8.0, 160_001, dtype=F64)
    dist = float((well.cdf(t) - well.cdf(t / math.sqrt(11.0))).abs().max())
    assert float(match[2]) == pytest.approx(dist, abs=2e-4)


def test_mixture_dilation_effect_is_along_the_axis_of_the_modes():
    """The mixture's first KS row (u = e₁) states the KS distance between the law of x₁ and
    that law dilated about its mean to variance ×(1 + rel_error), from the exact marginal
    Σₖ πₖ Φ((t − μₖ₁)/σₖ₁) computed here."""
    report = check_sampler(Identity(), kind="exact", targets=["mixture2d"], scale=0.02,
                           rel_error=0.5, seed=1)
    match = re.fullmatch(r"KS distance ≥ \d\.\d{4} \(50% variance dilation: (\d\.\d{4})\)",
                         report.rows[0].detectable)
    assert match is not None, report.rows[0].detectable
    gm = mixture2d()
    w = gm.weights.detach().numpy()
    mean1 = gm.means.detach().numpy()[:, 0]
    sd1 = gm.scale_trils.detach().numpy()[:, 0, 0]
    cdf = lambda t: sum(w[k] * stats.norm.cdf((t - mean1[k]) / sd1[k]) for k in range(2))
    c, t = float(w @ mean1), np.linspace(-10.0, 10.0, 200_001)
    dist = float(np.abs(cdf(t) - cdf(c + (t - c) / math.sqrt(1.5))).max())
    assert float(match[1]) == pytest.approx(dist, abs=2e-4)


def test_exact_check_splits_alpha_over_its_fourteen_rows():
    """The standard "exact" check has 4 + 4 + 4 + 2 rows (Gaussian rows or KS rows, plus a
    movement row per target): each row gets α/14."""
    report = check_sampler(Identity(), kind="exact", scale=0.02, rel_error=0.5, alpha=1e-4)
    names = [r.target.split(" (")[0] for r in report.rows]
    assert names == ["gauss2d"] * 4 + ["gauss20d"] * 4 + ["mixture2d"] * 4 + ["double_well"] * 2
    assert {r.alpha for r in report.rows} == {1e-4 / 14}
    assert np.isfinite([r.p_value for r in report.rows]).all()


@pytest.mark.parametrize("kind, noise", [("ula", None), ("decoupled", 0.5), ("exact", None)])
def test_the_sampler_draws_from_the_checks_generator(kind, noise):
    """fn gets the torch.Generator given as seed (the object itself), so that all of its
    randomness comes from the check's seed."""
    seen = []

    def fn(energy, x0, n_steps, step_size, generator):
        seen.append(generator)
        return x0

    g = torch.Generator().manual_seed(5)
    report = check_sampler(fn, kind=kind, noise=noise, targets=["gauss2d"], scale=0.05,
                           rel_error=0.5, seed=g)
    assert seen == [g] and report.seed == 5


def test_documented_defaults_scale_one_alpha_and_five_percent():
    """Defaults: scale 1 (gauss2d's 40,000 chains, 15 × 0.4 for "ula"), α = 1e-6, seed 0, and
    rel_error = 5 %, which a tenth of the chains cannot see (UnderpoweredError naming 5.0 %)."""
    report = check_sampler(Identity(), kind="ula", targets=["gauss2d"])
    assert report.design == ["gauss2d: M = 40000 chains, 15 steps of step size 0.4"]
    assert (report.alpha, report.seed) == (1e-6, 0)
    assert {r.alpha for r in report.rows} == {1e-6 / 3}
    assert report.rows[0].target == "gauss2d (M=40000)"
    with pytest.raises(UnderpoweredError, match=r"need 5\.0% \(raise scale or rel_error\)$"):
        check_sampler(Identity(), kind="ula", targets=["gauss2d"], scale=0.1)
