"""toy_problems: the exact-likelihood metrics (unit tests) and the report end to end (--quick).

Stochastic tests state α (total false-failure rate, Bonferroni over their p-values), assert their
own power, and show a deliberately broken variant failing the same assertion (rules in
verification/stats.py).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from ebmref.energy import GaussianMixture
from toy_problems import metrics as M
from toy_problems.config import ToyConfig, build_parser, config_from_args
from toy_problems.targets import make_target
from verification.stats import ALPHA, assert_pvalues, normal_pvalues, z_test_power

# --------------------------------------------------------------------------- quadrature


def exact_entropy(mixture: GaussianMixture, bounds, n_points: int) -> float:
    """H(p) = −∫ p log p by Simpson's rule (deterministic; independent of any sample)."""
    g = M.density_grid(mixture, bounds, n_points)
    logp = -g.energy - g.log_z
    return float(-(g.mass * logp).sum())


def test_quadrature_log_z_matches_mixture_log_partition():
    # Unnormalised logits, so log Z = logsumexp(a) ≠ 0 is a non-trivial target.
    mix = GaussianMixture([0.3, 1.2, -0.4], [[-2.0, 0.0], [2.0, 0.5], [0.0, -2.0]], 0.16,
                          dtype=torch.float64)
    bounds = ((-4.5, 4.5), (-4.5, 4.5))
    g = M.density_grid(mix, bounds, 201)
    exact = float(mix.log_partition().detach())
    assert abs(g.log_z - exact) < 1e-6
    assert g.log_z_error < 1e-6 and abs(g.leak) < 1e-6
    assert abs(float(g.mass.sum()) - 1.0) < 1e-12
    # Broken variant: a box that cuts off a component loses its mass; leak reports it.
    cut = M.density_grid(mix, ((-4.5, 1.0), (-4.5, 4.5)), 201)
    assert exact - cut.log_z > 0.1 and cut.leak > 0.1
    # Widening the box (same spacing) recovers the mass a learned energy puts beyond the data.
    wide = M.density_grid(mix, ((-4.5, 1.0), (-4.5, 4.5)), 201, expand=2)
    # What is still missing (a 4.4 s tail) is what ``leak`` reports.
    assert wide.n_points == 401 and wide.leak < 1e-5
    assert abs(exact - wide.log_z - wide.leak) < 1e-8


@pytest.mark.stochastic(alpha=ALPHA)
@pytest.mark.parametrize("name", ["bimodal_1d", "two_modes"])
def test_heldout_nll_of_true_density_is_its_entropy(name, rng):
    """−(1/n)Σ log p(xᵢ) with log Z by quadrature is an unbiased estimate of H(p) (z-test)."""
    target = make_target(name)
    n_points = 2001 if target.dim == 1 else 201
    h = exact_entropy(target.mixture, target.bounds, n_points)
    g = M.density_grid(target.mixture, target.bounds, n_points)
    x = target.sample(50_000, rng)
    logp = -target.mixture(x) - g.log_z
    se = float(logp.detach().std()) / math.sqrt(x.shape[0])
    # Power: a log Z off by 0.05 nats (or a missing cell volume) must be detected.
    assert z_test_power(0.05, se, ALPHA)
    good = M.heldout_nll(target.mixture, x, g.log_z)
    broken = M.heldout_nll(target.mixture, x, g.log_z + 0.05)
    assert_pvalues({"nll": float(normal_pvalues(good, h, se))})
    with pytest.raises(AssertionError):
        assert_pvalues({"nll": float(normal_pvalues(broken, h, se))})
    # data_nll (the analytic log-density) agrees up to the box truncation of log Z.
    assert abs(M.data_nll(target, x) - good) < 1e-5  # box truncation only


# --------------------------------------------------------------------------- regions


@pytest.mark.parametrize("name", ["ring8", "two_modes", "bimodal_1d"])
def test_mass_outside_support_of_true_density(name):
    """The support holds 99.9 % of each component: p_data's mass off it is 0.001 (less where
    balls of neighbouring components overlap)."""
    target = make_target(name)
    g = M.density_grid(target.mixture, target.bounds, 401 if target.dim == 2 else 4001)
    m = M.mass_outside_support(g, target)
    assert 0.0 <= m <= 0.001 + 2e-5
    if name == "two_modes":  # components 10 s apart: no overlap, exactly 0.001
        assert abs(m - 0.001) < 2e-5
    assert M.mode_weight_error(g, target) < 0.005


def test_mass_outside_support_sees_a_spurious_mode():
    """A model with an extra component off the data (weight 0.2) has 0.2 + 0.8·0.001 off
    support — the quantity claim C16 is about."""
    target = make_target("two_modes")
    model = GaussianMixture(torch.log(torch.tensor([0.6, 0.2, 0.2])),
                            [[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]], 0.16, dtype=torch.float64)
    g = M.density_grid(model, target.bounds, 401)
    expected = 0.2 + 0.8 * 0.001
    # The spurious component at (0, 2.5) lies 5 s from both data modes: all its mass is off.
    assert abs(M.mass_outside_support(g, target) - expected) < 2e-3
    # Mode weights 0.75/0.25 of the model's in-mode mass vs true 0.75/0.25: TV ≈ 0.
    assert M.mode_weight_error(g, target) < 0.005


@pytest.mark.stochastic(alpha=ALPHA)
def test_fraction_in_modes_of_exact_samples_is_99_percent(rng):
    """Each mode region is a r₉₉ ball: exact samples land in one with probability 0.99
    (exact binomial test; components 10 s apart so regions do not overlap)."""
    target = make_target("two_modes")
    n = 40_000
    frac = M.fraction_in_modes(target.sample(n, rng), target)
    k = round(frac * n)
    p = stats.binomtest(k, n, 0.99).pvalue
    # Power: a radius computed for the wrong dimension (χ²(1) instead of χ²(2)) gives 0.9625.
    se = math.sqrt(0.99 * 0.01 / n)
    assert z_test_power(0.99 - stats.chi2.cdf(stats.chi2.ppf(0.99, 1), 2), se, ALPHA)
    assert_pvalues({"binomial": p})
    wrong_r = math.sqrt(stats.chi2.ppf(0.99, 1))
    x = target.sample(n, rng)
    dist = torch.cdist(x, target.means).min(-1).values / target.std
    k_bad = int((dist < wrong_r).sum())
    with pytest.raises(AssertionError):
        assert_pvalues({"binomial": stats.binomtest(k_bad, n, 0.99).pvalue})


def test_tempered_mode_weights_follow_p_to_the_one_over_t():
    """Two equal-shape components with weights 0.75 / 0.25: under p^{1/T} the ratio of the
    mode masses is 3^{1/T} (each tempered component is the same Gaussian of variance T s²)."""
    target = make_target("two_modes")
    g = M.density_grid(target.mixture, target.bounds, 401)
    for temp in (0.5, 1.0, 2.0):
        w = M.tempered_mode_weights(g, target, temp)
        assert abs(float(w[0] / w[1]) - 3.0 ** (1 / temp)) < 1e-3 * 3.0 ** (1 / temp)
    with pytest.raises(ValueError, match="temperature"):
        M.tempered_mode_weights(g, target, 0.0)


def test_checkerboard_regions_and_sampler(rng):
    target = make_target("checkerboard")
    x = target.sample(5000, rng)
    assert bool(target.in_support(x).all())
    assert torch.allclose(target.log_prob(x), torch.full((5000,), -math.log(8.0),
                                                         dtype=torch.float64))
    white = torch.tensor([[-1.5, -0.5], [0.5, -0.5], [2.5, 2.5]], dtype=torch.float64)
    assert bool((target.mode_of(white) == -1).all())
    assert torch.isinf(target.log_prob(white)).all()
    counts = torch.bincount(target.mode_of(x), minlength=8)
    assert int(counts.min()) > 0 and counts.shape[0] == 8


# --------------------------------------------------------------------------- mixing, KL


def test_mode_switch_counter_on_constructed_sequences():
    # Chain 0: 0 → (between) → 1 → (between) → 0: two switches in 7 steps.
    # Chain 1: jitter in and out of core 0: no switch. Chain 2: 0,1,0,1,...: a switch a step.
    seq0 = [0, 0, -1, 1, 1, -1, -1, 0]
    seq1 = [0, -1, 0, -1, 0, -1, 0, 0]
    seq2 = [0, 1, 0, 1, 0, 1, 0, 1]
    labels = torch.tensor([seq0, seq1, seq2]).T
    expected = (2 + 0 + 7) / 3 * 1000 / 7
    assert M.mode_switches_per_1000(labels) == pytest.approx(expected, rel=1e-12)
    # A chain that starts outside every core has no "last" core until it enters one.
    assert M.mode_switches_per_1000(torch.tensor([[-1, -1, 1, 1, 0]]).T) == \
        pytest.approx(1000 / 4)
    with pytest.raises(ValueError, match="labels"):
        M.mode_switches_per_1000(torch.zeros(1, 3, dtype=torch.int64))


def test_histogram_kl_is_exact_on_constructed_samples():
    target = make_target("bimodal_1d")
    g = M.density_grid(target.mixture, target.bounds, 2001)
    bins = 10
    lo, hi = target.bounds[0]
    centres = lo + (torch.arange(bins, dtype=torch.float64) + 0.5) * (hi - lo) / bins
    # All mass in one bin: KL = −log P(bin), exactly.
    x = centres[4].repeat(100)[:, None]
    p_bin = float(g.mass[((g.points[:, 0] - lo) / (hi - lo) * bins).long().clamp(max=bins - 1)
                         == 4].sum())
    assert M.histogram_kl(x, g, bins) == pytest.approx(-math.log(p_bin), rel=1e-10)
    # q equal to the binned p (counts ∝ P(bin), rounded): KL ≈ 0.
    idx = ((g.points[:, 0] - lo) / (hi - lo) * bins).long().clamp(max=bins - 1)
    p_bins = torch.zeros(bins, dtype=torch.float64).index_add_(0, idx, g.mass)
    counts = torch.round(p_bins * 1_000_000).long()
    xs = torch.repeat_interleave(centres, counts)[:, None]
    assert 0 <= M.histogram_kl(xs, g, bins) < 1e-6


# --------------------------------------------------------------------------- config, e2e


def test_command_line_maps_one_to_one_onto_the_config():
    import dataclasses
    opts = {a.dest.removeprefix("cfg:") for a in build_parser()._actions if a.dest != "help"}
    assert opts == {f.name for f in dataclasses.fields(ToyConfig)}
    cfg = config_from_args(["--seeds", "2", "--targets", "ring8", "--methods", "nll", "pcd",
                            "--step-size", "0.05"])
    assert (cfg.seeds, cfg.targets, cfg.methods, cfg.step_size) == (2, ["ring8"],
                                                                    ["nll", "pcd"], 0.05)
    with pytest.raises(ValueError, match="targets"):
        ToyConfig(targets=["moons"])
    with pytest.raises(ValueError, match="grid_points_2d"):
        ToyConfig(grid_points_2d=200)


def test_quick_report_end_to_end(tmp_path):
    """``python -m toy_problems --quick`` (in-process): every output exists, every metric is
    finite and the table has a numeric cell for every method × target."""
    from toy_problems.__main__ import run

    cfg = config_from_args(["--quick", "--out", str(tmp_path)])
    run(cfg)
    for f in ("report.md", "metrics.json", "config.json", "summary.png", "funnel.png"):
        assert (tmp_path / f).is_file(), f
    for t in cfg.targets:
        assert (tmp_path / f"landscape_{t}.png").is_file()
        assert (tmp_path / f"chains_{t}.png").is_file()
    assert ToyConfig(**json.loads((tmp_path / "config.json").read_text())) == cfg
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert len(metrics["runs"]) == len(cfg.targets) * len(cfg.methods) * cfg.seeds
    keys = ("nll_gap", "mass_outside", "mode_weight_error", "frac_noise_in_modes",
            "frac_data_in_modes", "switches_per_1000", "kl_q", "log_z")
    for r in metrics["runs"]:
        assert "diverged" not in r, r
        for k in keys:
            assert np.isfinite(r[k]), (r["target"], r["method"], k, r[k])
        assert 0.0 <= r["mass_outside"] <= 1.0 and 0.0 <= r["frac_noise_in_modes"] <= 1.0
    assert metrics["funnel"] and all(np.isfinite(f["frac_heavy"]) for f in metrics["funnel"])
    report = (tmp_path / "report.md").read_text()
    for t in cfg.targets:
        for m in cfg.methods:
            row = [ln for ln in report.splitlines() if ln.startswith(f"| {t} | {m} |")]
            assert len(row) == 1, (t, m)
            cells = [c.strip() for c in row[0].strip("|").split("|")[2:]]
            assert all(c != "–" for c in cells), (t, m, cells)
    for cid in ("C7", "C16", "C26", "C27", "C28"):
        assert f"### {cid}" in report


def test_rotational_average_gap_is_zero_for_invariant_and_large_for_the_ring(rng):
    from toy_problems.targets import MixtureTarget

    iso = MixtureTarget("iso", [1.0], [[0.0, 0.0]], std=0.5, margin=2.0, symmetry="rot8")
    assert abs(M.rotational_average_gap(iso, iso.sample(500, rng), n_angles=36)) < 1e-12
    ring = make_target("ring8")
    # Annulus vs 8 modes: ≈ log(2π·2/8) − ½ log(2πe s²) = 0.642 nats for s = 0.2 (well separated).
    gap = M.rotational_average_gap(ring, ring.sample(4000, rng), n_angles=180)
    assert 0.55 < gap < 0.75
