"""Annealed importance sampling (ebmref/ais.py; Neal, 2001; Grosse et al., 2015), checked against
exact log Z on analytic energies and against quadrature on a trained 2-D model.

With r = Ẑ/Z_θ for one particle (w·Z₀/Z_θ), forward AIS has E[r] = 1 exactly, and for any run
of n particles P(log Ẑ − log Z > b) ≤ e^{−b} (Markov); reverse AIS from exact samples has
E[w'] = Z₀/Z_θ and P(log Z − log Ẑ_rev > b) ≤ e^{−b}. The tests:

(a) unbiasedness: two-sided z-test of mean(r) = 1 over M independent single-particle runs
    (CLT: r ≥ 0 is light-tailed in these designs, max r = 5.6 of 10,000 (2-D) and 7.6 of 2,000
    (64-D) in fixed-seed runs; over 200 / 60 fresh seeds the z-scores had sd 1.03 / 1.09 and
    a KS p-value against N(0, 1) of 0.72 / 0.69);
(b) lower bound: the number of runs (n particles each) with log Ẑ − log Z > b, one-sided
    binomial test against Bin(R, e^{−b}) — exact, distribution-free;
(c) upper bound: the same for reverse runs, log Z − log Ẑ_rev > b.

Each p-value is tested at α/3 (Bonferroni, α = 1e-6 per test). Power is asserted from the design:
the spread of r and the effect of each broken variant come from quadrature or from a pilot run
with its own fixed seed (never the sample under test), and each broken variant fails the
assertion designed for it: wrong endpoint β_K < 1, ULA instead of MALA and a weight update at the
new state fail (a); cold (Du-style, T ≪ 1) transitions overestimate log Z and fail (b); ULA in
the reverse direction underestimates it and fails (c); a box base that does not confine MALA fails
(a) on a truncated target.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import pytest
import torch
from scipy import stats
from torch import Tensor

from ebmref.ais import (
    AISResult,
    AnnealedEnergy,
    UniformBox,
    ais,
    fit_gaussian,
    mala_kernel,
    reverse_ais,
    schedule,
    summarise_log_weights,
)
from ebmref.analytic import log_partition_quadrature
from ebmref.config import TrainConfig, with_overrides
from ebmref.energy import Gaussian, GaussianMixture, SumEnergy
from ebmref.nets import MLPEnergy
from ebmref.samplers import langevin
from ebmref.training import train
from verification.stats import (
    ALPHA,
    UnderpoweredError,
    assert_pvalues,
    normal_pvalues,
    seed_for,
    z_detectable,
    z_test_power,
)

F64 = torch.float64
ALPHA3 = ALPHA / 3  # level of each of the three p-values (a), (b), (c)
MISS = ALPHA  # miss probability allowed to a broken variant: its test fails at most at rate α


# --------------------------------------------------------------------------- designs


def mixture_2d() -> GaussianMixture:
    """Two unequal, well-separated modes (weights 0.23/0.77, a wide tilted one and a narrow one
    5.9 apart; log Z = 1.863)."""
    return GaussianMixture([0.4, 1.6], [[-3.0, 0.0], [2.5, 1.5]],
                           [[[0.6, 0.25], [0.25, 0.4]], [[0.12, 0.0], [0.0, 0.2]]], dtype=F64)


def mixture_64d() -> GaussianMixture:
    """64-D: weights 0.23/0.77, means ±4 e₁ (8 standard deviations apart), diagonal
    covariances with variances drawn in [0.5, 1.5] (log det −4.6 and −6.0)."""
    gen = torch.Generator().manual_seed(12)
    var = 0.5 + torch.rand(2, 64, generator=gen, dtype=F64)
    means = torch.zeros(2, 64, dtype=F64)
    means[0, 0], means[1, 0] = -4.0, 4.0
    return GaussianMixture([0.3, 1.5], means, torch.diag_embed(var), dtype=F64)


@dataclass(frozen=True)
class Design:
    """An AIS test design: target, base fitted to exact samples, path, the step sizes adapted
    on a fixed-seed pilot, sample sizes, and the pilot's spread of r."""

    target: GaussianMixture
    base: Gaussian
    log_z: float
    betas: Tensor
    steps: Tensor
    n_fwd: int  # forward particles (= single-particle runs for (a))
    run: int  # particles per forward run for (b)
    n_rev: int
    rev_run: int  # particles per reverse run for (c)
    effect: float  # the bias of E[Ẑ/Z] that (a) must detect
    sd_r: float  # pilot's standard deviation of r
    b: float = 1.0  # Markov threshold of (b) and (c); ≥ 16 runs make e^{−bR} < α/3 reachable


def _fixed(tag: str) -> torch.Generator:
    """A generator with a fixed seed, for design and pilot runs (independent of the test's rng
    and of the seed sweep)."""
    return torch.Generator().manual_seed(seed_for(f"test_ais:{tag}"))


DESIGNS = {  # target, path, n_fwd, run, n_rev, rev_run, effect, pilot particles
    "2d": (mixture_2d, ("geometric", 50), 10_000, 25, 4_000, 25, 0.10, 4_000),
    "64d": (mixture_64d, ("linear", 100), 2_000, 50, 1_000, 25, 0.15, 500),
}


@functools.cache
def design(name: str) -> Design:
    make, (kind, n_temps), n_fwd, run, n_rev, rev_run, effect, n_pilot = DESIGNS[name]
    target = make()
    base = fit_gaussian(target.sample(20_000, _fixed(f"{name}:data")))
    betas = schedule(n_temps, kind)
    log_z = float(target.log_partition().detach())
    pilot = ais(target, base, n_pilot, betas, 0.3, adapt=True, generator=_fixed(f"{name}:pilot"))
    sd_r = float(torch.exp(pilot.log_weights + pilot.log_z0 - log_z).std())
    return Design(target, base, log_z, betas, pilot.step_sizes, n_fwd, run, n_rev, rev_run,
                  effect, sd_r)


# --------------------------------------------------------------------------- statistics


def log_ratio(res: AISResult, log_z: float) -> Tensor:
    """Per particle log(w Z₀/Z): forward, log r with E[r] = 1."""
    return res.log_weights + res.log_z0 - log_z


def run_excess(res: AISResult, log_z: float, run: int) -> Tensor:
    """Per run of ``run`` particles: log Ẑ − log Z (forward) or log Z − log Ẑ_rev (reverse);
    the bound says P(excess > b) ≤ e^{−b} in both directions."""
    lme = torch.logsumexp(res.log_weights.view(-1, run), 1) - math.log(run)
    return lme + res.log_z0 - log_z if not res.reverse else lme - res.log_z0 + log_z


def unbiased_pvalue(log_r: Tensor) -> float:
    """(a) two-sided z-test of mean(r) = 1 over iid single-particle runs."""
    r = torch.exp(log_r)
    return float(normal_pvalues(r.mean(), 1.0, r.std() / math.sqrt(r.numel())))


def bound_pvalue(excess: Tensor, b: float) -> float:
    """(b), (c): P(Bin(R, e^{−b}) ≥ #{excess > b}), exact under the Markov bound."""
    count = int((excess > b).sum())
    return float(stats.binom.sf(count - 1, excess.numel(), math.exp(-b)))


def bound_power(n_runs: int, b: float, p_exceed: float, alpha: float) -> float:
    """Probability that (b)/(c) at level α rejects when each run exceeds b w.p. p_exceed."""
    counts = range(n_runs + 1)
    crit = next((c for c in counts if stats.binom.sf(c - 1, n_runs, math.exp(-b)) < alpha), None)
    return 0.0 if crit is None else float(stats.binom.sf(crit - 1, n_runs, p_exceed))


def require(ok: bool, what: str) -> None:
    """Power check: an UnderpoweredError (not an AssertionError, so pytest.raises around a
    broken variant cannot be satisfied by it)."""
    if not ok:
        raise UnderpoweredError(what)


# --------------------------------------------------------------------------- (a), (b), (c)


@pytest.mark.stochastic(alpha=ALPHA)
@pytest.mark.parametrize("name", ["2d", "64d"])
def test_ais_unbiased_and_sandwiches_log_z(rng, name):
    """On mixtures with exact log Z: E[Ẑ/Z] = 1 (a), log Ẑ_fwd ≤ log Z (b) and log Z ≤ log Ẑ_rev
    (c), each in the calibrated sense above; α = 1e-6 over the 3 p-values. The runs adapt their
    step sizes on their own pilot (``adapt=True``), which must keep (a) exact.
    Power (β = 1e-3): (a) detects a bias of Ẑ/Z of 10 % (2-D, M = 10,000, pilot sd(r) = 0.94)
    or 15 % (64-D, M = 2,000, sd(r) = 0.68); (b) and (c) have ≥ 40 runs, so e^{−b·R} < α/3 is
    reachable; their power against broken variants is asserted in the tests below."""
    d = design(name)
    require(z_test_power(d.effect, d.sd_r / math.sqrt(d.n_fwd), ALPHA3),
            f"{name}: {d.n_fwd} runs detect only {z_detectable(d.sd_r / d.n_fwd**0.5, ALPHA3)}")
    fwd = ais(d.target, d.base, d.n_fwd, d.betas, 0.3, adapt=True, generator=rng)
    rev = reverse_ais(d.target, d.base, d.target.sample(d.n_rev, rng), d.betas, 0.3, adapt=True,
                      generator=rng)
    assert_pvalues({"a_unbiased": unbiased_pvalue(log_ratio(fwd, d.log_z)),
                    "b_lower_bound": bound_pvalue(run_excess(fwd, d.log_z, d.run), d.b),
                    "c_upper_bound": bound_pvalue(run_excess(rev, d.log_z, d.rev_run), d.b)},
                   ALPHA)


# --------------------------------------------------------------------------- broken variants


def ula_transition(energy, x, step_size, n_steps, generator):
    """Broken: MALA's proposal without its accept/reject step (ULA, eq. 1)."""
    out = langevin(energy, x, n_steps, step_size, generator=generator)
    return out.x, torch.ones(x.shape[0], dtype=x.dtype)


def cold_transition(energy, x, step_size, n_steps, generator):
    """Broken: Du & Mordatch's decoupled step, drift λ/2 and noise σ = 0.005 (T = σ²/λ ≪ 1):
    particles sit near the modes of each p_β, where E_θ − E₀ is below its p_β average."""
    out = langevin(energy, x, n_steps, step_size / 2, noise=0.005, generator=generator)
    return out.x, torch.ones(x.shape[0], dtype=x.dtype)


def ais_weight_after_move(target, base, n, betas, steps, generator) -> AISResult:
    """Broken: the increment for β_{k−1} → β_k is taken at x_k (after the move at β_k) instead
    of x_{k−1}. Same loop as ebmref.ais otherwise."""
    path = AnnealedEnergy(base, target)
    x = base.sample(n, generator)
    log_w = torch.zeros(n, dtype=F64)
    for k in range(1, betas.numel()):
        path.beta = float(betas[k])
        x, _ = mala_kernel(path, x, float(steps[k]), 1, generator)
        log_w -= float(betas[k] - betas[k - 1]) * path.log_ratio_increment(x)
    lme, se, ess = summarise_log_weights(log_w)
    log_z0 = float(base.log_partition().detach())
    return AISResult(log_z0 + lme, se, ess, log_w, x, torch.empty(0), steps, betas, log_z0)


def endpoint_target(d: Design, beta_end: float = 0.9) -> AnnealedEnergy:
    """Annealing to E_{β_end} instead of E_θ: the geometric path from E₀ to E_{0.9} is the
    path of the correct code stopped at β_K = 0.9."""
    return AnnealedEnergy(d.base, d.target, beta_end)


BROKEN_FORWARD = {
    "endpoint_0.9": lambda d, n, g: ais(endpoint_target(d), d.base, n, d.betas, d.steps,
                                        generator=g),
    "ula_transitions": lambda d, n, g: ais(d.target, d.base, n, d.betas, d.steps,
                                           kernel=ula_transition, generator=g),
    "weight_after_move": lambda d, n, g: ais_weight_after_move(d.target, d.base, n, d.betas,
                                                               d.steps, g),
}


@functools.cache
def broken_effect(variant: str) -> tuple[float, float]:
    """(|E[r] − 1| lower bound, sd(r)) of a broken variant on the 2-D design, from a pilot of
    n_fwd particles with its own seed; the endpoint's E[r] = Z_{0.9}/Z is exact by quadrature."""
    d = design("2d")
    log_r = log_ratio(BROKEN_FORWARD[variant](d, d.n_fwd, _fixed(f"pilot:{variant}")), d.log_z)
    r = torch.exp(log_r)
    if variant == "endpoint_0.9":
        log_z09, err = log_partition_quadrature(endpoint_target(d), ((-15, 15), (-15, 15)), 801)
        assert err < 1e-6
        return abs(math.exp(log_z09 - d.log_z) - 1.0), float(r.std())
    # The pilot's mean is itself estimated: keep 3 of its standard errors as margin.
    return abs(float(r.mean()) - 1.0) - 3 * float(r.std()) / math.sqrt(r.numel()), float(r.std())


@pytest.mark.stochastic(alpha=ALPHA)
@pytest.mark.parametrize("variant", sorted(BROKEN_FORWARD))
def test_broken_forward_ais_fails_unbiasedness(rng, variant):
    """(a) at the same level α/3 and the same M catches each broken variant with probability
    ≥ 1 − 1e-6 (power from the variant's pilot): endpoint E[r] = Z_{0.9}/Z = 0.897
    (quadrature), ULA ≈ 0.45, weight after the move ≈ 1.14 (pilots)."""
    d = design("2d")
    effect, sd = broken_effect(variant)
    require(z_test_power(effect, sd / math.sqrt(d.n_fwd), ALPHA3, MISS),
            f"{variant}: effect {effect:.3f} vs detectable "
            f"{z_detectable(sd / math.sqrt(d.n_fwd), ALPHA3, MISS):.3f}")
    res = BROKEN_FORWARD[variant](d, d.n_fwd, rng)
    with pytest.raises(AssertionError):
        assert_pvalues({"a_unbiased": unbiased_pvalue(log_ratio(res, d.log_z))}, ALPHA3)


@functools.cache
def bound_break_probability(variant: str) -> float:
    """P(excess > b) per run for a broken variant: the Clopper–Pearson lower bound (level 1e-3)
    from the exceedances of a pilot of the test's size with its own seed."""
    d = design("2d")
    g = _fixed(f"pilot:{variant}")
    if variant == "cold_transitions":
        res = ais(d.target, d.base, d.n_fwd, d.betas, d.steps, kernel=cold_transition,
                  generator=g)
        excess = run_excess(res, d.log_z, d.run)
    else:
        res = reverse_ais(d.target, d.base, d.target.sample(d.n_rev, g), d.betas, d.steps,
                          kernel=ula_transition, generator=g)
        excess = run_excess(res, d.log_z, d.rev_run)
    k, n = int((excess > d.b).sum()), excess.numel()
    return float(stats.beta.ppf(1e-3, k, n - k + 1)) if k > 0 else 0.0


@pytest.mark.stochastic(alpha=ALPHA)
def test_cold_transitions_break_lower_bound(rng):
    """(b) catches forward AIS with Du-style cold transitions (log Ẑ − log Z ≈ +1.4 nats per run
    of 25 in the pilot): P(reject) ≥ 1 − 1e-6 at level α/3, from the pilot."""
    d = design("2d")
    n_runs = d.n_fwd // d.run
    p = bound_break_probability("cold_transitions")
    require(bound_power(n_runs, d.b, p, ALPHA3) >= 1 - MISS, f"cold: exceedance {p:.4f}")
    res = ais(d.target, d.base, d.n_fwd, d.betas, d.steps, kernel=cold_transition,
              generator=rng)
    with pytest.raises(AssertionError):
        assert_pvalues({"b_lower_bound": bound_pvalue(run_excess(res, d.log_z, d.run), d.b)},
                       ALPHA3)


@pytest.mark.stochastic(alpha=ALPHA)
def test_reverse_ula_breaks_upper_bound(rng):
    """(c) catches reverse AIS with ULA transitions (log Ẑ_rev − log Z ≈ −1.6 nats per run of 25
    in the pilot: over-dispersed particles inflate w'): P(reject) ≥ 1 − 1e-6 at level α/3."""
    d = design("2d")
    n_runs = d.n_rev // d.rev_run
    p = bound_break_probability("reverse_ula")
    require(bound_power(n_runs, d.b, p, ALPHA3) >= 1 - MISS, f"reverse ULA: exceedance {p:.4f}")
    res = reverse_ais(d.target, d.base, d.target.sample(d.n_rev, rng), d.betas, d.steps,
                      kernel=ula_transition, generator=rng)
    with pytest.raises(AssertionError):
        assert_pvalues({"c_upper_bound": bound_pvalue(run_excess(res, d.log_z, d.rev_run), d.b)},
                       ALPHA3)


# --------------------------------------------------------------------------- box base


BOX_MEAN, BOX_SD = (0.3, 0.85), (0.2, 0.15)  # 21 % of the Gaussian's mass lies outside [0, 1]²


def box_target() -> tuple[Gaussian, float]:
    """N(m, diag(s²)) restricted to [0, 1]², and its exact log Z = log Z_𝒩 + Σ log P(0 ≤ xᵢ ≤ 1)."""
    g = Gaussian(BOX_MEAN, torch.diag(torch.tensor(BOX_SD, dtype=F64) ** 2), dtype=F64)
    mass = [stats.norm.cdf((1 - m) / s) - stats.norm.cdf(-m / s) for m, s in zip(BOX_MEAN, BOX_SD)]
    return g, float(g.log_partition().detach()) + sum(math.log(p) for p in mass)


class LeakyBox(UniformBox):
    """Broken: a box base whose ``contains`` says yes everywhere, so the path energy is not +∞
    outside and MALA keeps proposals that leave the box."""

    def contains(self, x: Tensor) -> Tensor:
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)


N_BOX, BOX_BETAS, BOX_STEP = 6_000, schedule(30, "linear"), 0.05


def box_run(base_cls: type, n: int, generator: torch.Generator) -> Tensor:
    """log r per particle of AIS from U([0, 1]²) to the truncated Gaussian."""
    target, log_z = box_target()
    res = ais(target, base_cls(0.0, 1.0, (2,), dtype=F64), n, BOX_BETAS, BOX_STEP,
              generator=generator)
    return log_ratio(res, log_z)


@pytest.mark.stochastic(alpha=ALPHA)
def test_ais_uniform_box_base_estimates_truncated_log_z(rng):
    """With a UniformBox base the target is p_θ restricted to the box: E[Ẑ/Z_box] = 1 (z-test,
    α = 1e-6; r ≤ sup p_box/p₀ = 6.8 is bounded, so the CLT is safe). Power: a 10 % bias is
    detected (sd(r) from a pilot with its own seed). The leaky box (proposals outside kept)
    fails the same test; its effect, from its own pilot, is detected with prob ≥ 1 − 1e-6."""
    sd = float(torch.exp(box_run(UniformBox, N_BOX, _fixed("box:pilot"))).std())
    require(z_test_power(0.10, sd / math.sqrt(N_BOX), ALPHA), f"box: sd(r) = {sd:.3f}")
    leak = torch.exp(box_run(LeakyBox, N_BOX, _fixed("box:leaky-pilot")))
    effect = abs(float(leak.mean()) - 1) - 3 * float(leak.std()) / math.sqrt(N_BOX)
    require(z_test_power(effect, float(leak.std()) / math.sqrt(N_BOX), ALPHA, MISS),
            f"leaky box: effect {effect:.3f}")
    assert_pvalues({"a_unbiased": unbiased_pvalue(box_run(UniformBox, N_BOX, rng))}, ALPHA)
    with pytest.raises(AssertionError):
        assert_pvalues({"a_unbiased": unbiased_pvalue(box_run(LeakyBox, N_BOX, rng))}, ALPHA)


# --------------------------------------------------------------------------- trained 2-D model

TOY_R = 2.0  # the fixed quadratic ‖x‖²/(2R²) that keeps Z finite
TOY_BOX, TOY_WIDE = ((-12.0, 12.0),) * 2, ((-16.0, 16.0),) * 2
N_TOY, TOY_BETAS, TOY_INFLATE = 5_000, schedule(100, "sigmoid"), 3.0


def train_toy_model() -> tuple[SumEnergy, Tensor, float, float]:
    """An MLP energy plus ‖x‖²/(2R²), trained a few seconds (200 NLL updates, noise buffer, ULA)
    on samples of a 2-D mixture; its log Z by Simpson quadrature on [−12, 12]² (and checked on
    [−16, 16]²: no mass outside). Fixed seeds: a deterministic model, not part of the test's
    randomness. Returns (energy, data, log Z, quadrature error estimate)."""
    data = GaussianMixture([0.4, 1.6], [[-2.0, 0.0], [1.5, 1.0]],
                           [[[0.4, 0.15], [0.15, 0.3]], [[0.12, 0.0], [0.0, 0.2]]],
                           dtype=F64).sample(2000, _fixed("toy:data"))
    confine = Gaussian(torch.zeros(2), TOY_R**2 * torch.eye(2), dtype=F64)
    confine.requires_grad_(False)
    torch.manual_seed(0)  # nn.Linear initialisation
    energy = SumEnergy([MLPEnergy(2, hidden=32, depth=2), confine])
    config = with_overrides(TrainConfig(), {
        "run.n_updates": 200, "run.batch_size": 128, "run.seed": 0, "run.device": "cpu",
        "run.dtype": "float64", "run.log_every": 100, "run.ckpt_every": 0,
        "run.progress": False, "buffer.init": "noise", "buffer.size": 1000,
        "buffer.noise_low": -4.0, "buffer.noise_high": 4.0, "sampler.n_steps": 10,
        "sampler.step_size": 0.02, "sampler.noise": None, "sampler.grad_clip": None,
        "sampler.clamp": None, "optim.l2": 0.1, "optim.lr": 1e-2, "optim.betas": (0.9, 0.999),
        "optim.max_grad_norm": None})
    train(energy, data, config)
    energy.eval().requires_grad_(False)
    log_z, err = log_partition_quadrature(energy, TOY_BOX, 401)
    assert abs(log_partition_quadrature(energy, TOY_WIDE, 401)[0] - log_z) < 1e-8
    return energy, data, log_z, err


@pytest.fixture(scope="module")
def trained_toy() -> tuple[SumEnergy, Tensor, float, float]:
    return train_toy_model()


@pytest.mark.stochastic(alpha=ALPHA)
def test_ais_matches_quadrature_on_trained_toy_model(rng, trained_toy):
    """AIS (base fitted to the training data and widened 3×, 100 sigmoid temperatures, adapted
    MALA) agrees with quadrature: z = (log Ẑ − log Z_quad)/se, se the estimator's own stated
    error; α = 1e-6. The quadrature error (≲ 1e-11) is asserted below 1 % of se. Power: a
    0.1-nat error of log Z is detected (se from a pilot with its own seed).

    The 3× widening: with the base fitted as is, the model's far field (the fixed quadratic,
    scale R = 2, against the data's minor variance 0.2) is heavier than the base's, and rare
    particles there carried up to 160× the mean weight in a pilot, making se unreliable."""
    energy, data, log_z, quad_err = trained_toy
    base = fit_gaussian(data, inflate=TOY_INFLATE)
    pilot = ais(energy, base, 1000, TOY_BETAS, 0.1, adapt=True, generator=_fixed("toy:pilot"))
    se = float(torch.exp(log_ratio(pilot, log_z)).std()) / math.sqrt(N_TOY)
    require(z_test_power(0.10, se, ALPHA), f"toy: se {se:.4f}")
    require(quad_err < 0.01 * se, f"quadrature error {quad_err:.2g} vs se {se:.2g}")
    res = ais(energy, base, N_TOY, TOY_BETAS, 0.1, adapt=True, generator=rng)
    assert_pvalues({"z": float(normal_pvalues(res.log_z, log_z, res.log_z_se))}, ALPHA)


# --------------------------------------------------------------------------- deterministic


@pytest.mark.parametrize("kind", ["linear", "geometric", "sigmoid"])
def test_schedule_runs_from_zero_to_one(kind):
    b = schedule(40, kind)
    assert b.shape == (41,) and b.dtype == F64
    assert float(b[0]) == 0.0 and float(b[-1]) == 1.0 and bool((b[1:] > b[:-1]).all())


def test_schedule_closed_forms():
    torch.testing.assert_close(schedule(8, "linear"), torch.arange(9, dtype=F64) / 8)
    geo = schedule(4, "geometric", beta_min=1e-3)
    torch.testing.assert_close(geo, torch.tensor([0.0, 1e-3, 1e-2, 1e-1, 1.0], dtype=F64))
    sig = schedule(10, "sigmoid", sharpness=4.0)
    torch.testing.assert_close(sig + sig.flip(0), torch.ones(11, dtype=F64))  # symmetric
    s = torch.sigmoid(4.0 * (2.0 * torch.arange(11, dtype=F64) / 10 - 1.0))
    torch.testing.assert_close(sig, (s - s[0]) / (s[-1] - s[0]))


def test_summarise_log_weights_matches_direct_formulas():
    log_w = torch.randn(50, generator=torch.Generator().manual_seed(0), dtype=F64) * 2 - 300
    lme, se, ess = summarise_log_weights(log_w)
    w = torch.exp(log_w + 300)  # shifted: exact in float64, unshifted it would underflow
    assert lme == pytest.approx(math.log(float(w.mean())) - 300, rel=0, abs=1e-12)
    assert se == pytest.approx(float((w / w.mean()).std()) / math.sqrt(50), rel=1e-12)
    assert ess == pytest.approx(float(w.sum() ** 2 / (w * w).sum()), rel=1e-12)
    assert summarise_log_weights(torch.full((7,), 3.0, dtype=F64)) == (3.0, 0.0, 7.0)


def _delta(target, base, x) -> Tensor:
    return (target(x) - base(x)).detach()


def test_one_temperature_without_moves_is_importance_sampling():
    """K = 1, no kernel: forward log w = −(E_θ − E₀)(x₀) at the base samples, reverse
    log w' = +(E_θ − E₀)(x) at the given samples (plain importance sampling both ways)."""
    target = mixture_2d()
    base = fit_gaussian(target.sample(500, _fixed("is:data")))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    res = ais(target, base, 64, schedule(1, "linear"), n_mcmc=0, generator=g1)
    x0 = base.sample(64, g2)
    torch.testing.assert_close(res.log_weights, -_delta(target, base, x0), rtol=0, atol=1e-12)
    torch.testing.assert_close(res.x, x0, rtol=0, atol=0)
    assert res.log_z == pytest.approx(res.log_z0 + summarise_log_weights(res.log_weights)[0])
    rev = reverse_ais(target, base, x0, schedule(1, "linear"), n_mcmc=0)
    torch.testing.assert_close(rev.log_weights, _delta(target, base, x0), rtol=0, atol=1e-12)
    assert rev.log_z == pytest.approx(rev.log_z0 - summarise_log_weights(rev.log_weights)[0])


@pytest.mark.parametrize("beta", [0.0, 0.37, 1.0])
def test_annealed_energy_and_gradient(beta):
    """E_β = (1 − β)E₀ + βE_θ and its gradient equal autograd of the same sum (1e-10)."""
    target = mixture_2d()
    base = Gaussian([0.5, 0.2], [[3.0, 0.4], [0.4, 1.0]], dtype=F64)
    path = AnnealedEnergy(base, target, beta)
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(1), dtype=F64).requires_grad_()
    ref = (1 - beta) * base(x) + beta * target(x)
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    e, g = path.energy_and_grad(x.detach())
    torch.testing.assert_close(e, ref.detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(g, g_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(path(x.detach()), ref.detach(), rtol=0, atol=1e-10)


def test_uniform_box_energy_and_partition():
    box = UniformBox(torch.tensor([0.0, -1.0]), torch.tensor([2.0, 3.0]), (2,), dtype=F64)
    assert float(box.log_partition()) == pytest.approx(math.log(8.0), abs=1e-15)
    x = torch.tensor([[1.0, 0.0], [2.5, 0.0], [1.0, -1.5], [2.0, 3.0]], dtype=F64)
    assert box.contains(x).tolist() == [True, False, False, True]
    assert box(x).tolist() == [0.0, math.inf, math.inf, 0.0]
    s = box.sample(1000, torch.Generator().manual_seed(0))
    assert bool(box.contains(s).all())


def test_box_path_rejects_every_proposal_outside_the_box():
    """With a UniformBox base, E_β = +∞ outside the box at every β (0, intermediate, 1), so
    MALA never accepts a proposal there: all particles stay in the box, by construction of
    the accept test (not a rare event), with a step (proposal sd 0.32) that often proposes
    outside."""
    target, _ = box_target()
    base = UniformBox(0.0, 1.0, (2,), dtype=F64)
    x = torch.tensor([[0.5, 0.5], [1.5, 0.5]], dtype=F64)
    for beta in (0.0, 0.5, 1.0):
        e, g = AnnealedEnergy(base, target, beta).energy_and_grad(x)
        assert math.isfinite(float(e[0])) and float(e[1]) == math.inf
        assert bool(torch.isfinite(g).all())
    res = ais(target, base, 500, schedule(5, "linear"), 0.1, n_mcmc=5,
              generator=torch.Generator().manual_seed(0))
    assert bool(base.contains(res.x).all())
    assert 0.0 < float(res.acceptance[1:].min()) and float(res.acceptance[1:].max()) < 1.0


def _fixed_acceptance(rate: float, used: list[float]):
    """A fake kernel: records the step it was given, does not move, reports ``rate``."""
    def transition(energy, x, step_size, n_steps, generator):
        used.append(step_size)
        return x, torch.full((x.shape[0],), rate, dtype=x.dtype)
    return transition


def test_adapted_steps_follow_the_rule_and_come_from_the_pilot():
    """adapt: the step at β_{k+1} is the step at β_k times exp(a_k − target); the main run
    uses the pilot's steps unchanged (no adaptation on its own particles)."""
    target = mixture_2d()
    base = fit_gaussian(target.sample(500, _fixed("adapt:data")))
    used: list[float] = []
    res = ais(target, base, 8, schedule(4, "linear"), 0.1, adapt=True, target_acceptance=0.6,
              n_pilot=5, kernel=_fixed_acceptance(1.0, used))
    expected = [0.1 * math.exp(0.4 * k) for k in range(4)]
    assert used == pytest.approx(expected * 2, rel=1e-12)  # pilot, then the main run
    torch.testing.assert_close(res.step_sizes, torch.tensor([0.1] + expected, dtype=F64))
    assert math.isnan(float(res.acceptance[0])) and res.acceptance[1:].tolist() == [1.0] * 4
    rev = reverse_ais(target, base, target.sample(6, _fixed("adapt:x")), schedule(4, "linear"),
                      res.step_sizes, kernel=_fixed_acceptance(0.5, used := []))
    assert used == pytest.approx(expected[::-1][1:] + [0.1], rel=1e-12)  # β₃, β₂, β₁, β₀
    assert math.isnan(float(rev.acceptance[-1])) and rev.acceptance[:-1].tolist() == [0.5] * 4


# --------------------------------------------------------------------------- validation


def _bad_calls():
    target = mixture_2d()
    base = Gaussian([0.0, 0.0], torch.eye(2), dtype=F64)
    b = schedule(3, "linear")
    x = target.sample(4, torch.Generator().manual_seed(0))
    return [
        ("target", lambda: ais(lambda x: x, base, 4, b)),
        ("base", lambda: ais(target, mixture_2d(), 4, b)),
        ("base", lambda: ais(target, Gaussian([0.0], [[1.0]], dtype=F64), 4, b)),
        ("n_particles", lambda: ais(target, base, 1, b)),
        ("betas", lambda: ais(target, base, 4, torch.tensor([0.0, 0.5, 0.9], dtype=F64))),
        ("betas", lambda: ais(target, base, 4, torch.tensor([0.0, 0.6, 0.4, 1.0], dtype=F64))),
        ("betas", lambda: ais(target, base, 4, torch.tensor([0.0, float("nan"), 1.0]))),
        ("betas", lambda: ais(target, base, 4, [0.0, 1.0])),
        ("step_size", lambda: ais(target, base, 4, b, -0.1)),
        ("step_size", lambda: ais(target, base, 4, b, torch.ones(3))),
        ("n_mcmc", lambda: ais(target, base, 4, b, n_mcmc=-1)),
        ("adapt", lambda: ais(target, base, 4, b, adapt=1)),
        ("target_acceptance", lambda: ais(target, base, 4, b, adapt=True, target_acceptance=1.0)),
        ("n_pilot", lambda: ais(target, base, 4, b, adapt=True, n_pilot=0)),
        ("kernel", lambda: ais(target, base, 4, b, kernel="mala")),
        ("samples", lambda: reverse_ais(target, base, x[:1], b)),
        ("samples", lambda: reverse_ais(target, base, x[:, :1], b)),
        ("samples", lambda: reverse_ais(target, UniformBox(0.0, 1.0, (2,), dtype=F64),
                                        x + 5.0, b)),
        ("kind", lambda: schedule(4, "cosine")),
        ("n_steps", lambda: schedule(0)),
        ("beta_min", lambda: schedule(4, "geometric", beta_min=0.0)),
        ("data", lambda: fit_gaussian(torch.zeros(1, 2))),
        ("inflate", lambda: fit_gaussian(x, inflate=0.0)),
        ("high", lambda: UniformBox(1.0, 0.0, (2,))),
        ("shape", lambda: UniformBox(0.0, 1.0, 2)),
    ]


@pytest.mark.parametrize("i", range(len(_bad_calls())))
def test_bad_arguments_raise_value_error_naming_them(i):
    name, call = _bad_calls()[i]
    with pytest.raises(ValueError, match=rf"^{name}:"):
        call()
