"""check_sampler: does a user's MCMC kernel produce the law it should, at a stated α?

The sampler under test is any callable ``fn(energy, x0, n_steps, step_size, generator)``
returning the chain states after ``n_steps`` steps, shape (B, d) like ``x0`` (a tensor, or an
object with the tensor in ``.x`` such as :class:`ebmref.samplers.SamplerOutput`). ``energy`` is
an :class:`ebmref.energy.Energy` (a torch module, (B, d) → (B,), float64); ``generator`` is the
``torch.Generator`` all of the sampler's randomness should come from.

Kinds
-----
* ``"ula"``: eq. 1, x ← x − (λ/2)∇E(x) + √λ ξ, with ``step_size`` = λ. On a Gaussian target
  the law after n steps from N(m₀, C₀) is Gaussian and known in closed form
  (:func:`ebmref.analytic.ula_gaussian_law`); the chains are tested against it exactly.
* ``"decoupled"``: Du & Mordatch's x ← x − α∇E(x) + σξ with ``step_size`` = α and the σ the
  sampler uses given as ``noise``: the same closed form with (a, s²) = (α, σ²).
* ``"exact"``: a kernel that leaves p ∝ e^{−E} invariant (MALA, HMC, an exact diffusion):
  M chains start at exact samples of the target, run n steps and are tested against the target
  (target conservation), with a movement guard (a kernel that does nothing conserves every
  law).

Statistics (each p-value exact or conservative under its null)
---------------------------------------------------------------
Gaussian targets, z = L⁻¹(x − m) with C = LLᵀ the law the chains should have:
Σᵢ‖zᵢ‖² ~ χ²(M·d) (two-sided), √M·z̄ⱼ ~ N(0, 1) (Bonferroni over the d coordinates inside),
and the KS distance of ‖zᵢ‖² to χ²(d). The mixture: one-sample KS of uᵀxᵢ against the exact
projected CDF, for u = e₁ (the axis of the modes) and two random unit directions. The double
well: KS against its exact CDF. Movement: the number of chains with ‖x_n − x₀‖ > δ (δ = 0.1 ×
the target's smallest standard deviation) is Binomial(M, f) with f ≥ f₀ = ``min_moved`` under
"the kernel moves at least a fraction f₀ of chains"; p = P(Bin(M, f₀) ≤ count).

α and power
-----------
The total α (default 1e-6) is split evenly over the m rows of the table (Bonferroni). Before
any sampling, the design's power is asserted (:class:`ebmref.stats.UnderpoweredError`
otherwise): on every Gaussian target the χ² row detects a covariance scaled by 1 ± ``rel_error``
(default 5 %) with probability ≥ 1 − β (β = 1e-3); on the mixture (along e₁) and the double
well the KS row detects a dilation of the target about its mean that raises its variance by
``rel_error``; the movement row detects a kernel that moves fewer than f₀/2 of the chains.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from scipy import optimize, stats
from torch import Tensor

from ebmref.analytic import ula_gaussian_law
from ebmref.conformance.report import Report, Row, make_generator
from ebmref.conformance.targets import (
    F64,
    KIND_TARGETS,
    TARGETS,
    Target,
    mixture_centre,
    mixture_projected_cdf,
    ula_start,
)
from ebmref.energy import Energy, Gaussian, GaussianMixture
from ebmref.stats import (
    ALPHA,
    BETA,
    UnderpoweredError,
    chi2_detectable_rel_error,
    dilation_ks_distance,
    ks_min_detectable,
    ks_test,
    random_directions,
    whitened_gaussian_tests,
    z_detectable,
)
from ebmref.validation import check_choice, check_positive, check_probability

SAMPLER_KINDS = ("exact", "ula", "decoupled")
SamplerFn = Callable[[Energy, Tensor, int, float, torch.Generator], object]
N_RANDOM_PROJECTIONS = 2
MOVE_DELTA = 0.1  # δ of the movement guard, in units of the target's smallest sd

GAUSS_STATS = {
    "chi2": "Σ‖z‖²/(M·d), z = L⁻¹(x − m); M·d × it ~ χ²(M·d)",
    "mean": "maxⱼ √M|z̄ⱼ|; √M z̄ⱼ ~ N(0, 1), Bonferroni over d",
    "ks": "KS distance of ‖z‖² to χ²(d); Kolmogorov",
}


def _resolve(value, default: Mapping[str, float], kind: str, name: str, what: str,
             check: Callable) -> float:
    """A per-target parameter: None → the target's default, a number → it, a mapping →
    its entry for the target (falling back to the default)."""
    if value is None:
        return default[kind]
    if isinstance(value, Mapping):
        value = value.get(name, default[kind])
    check(value, what)
    return value


def _check_n_steps(value, name: str) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")


def run_sampler(fn: SamplerFn, energy: Energy, x0: Tensor, n_steps: int, step: float,
                generator: torch.Generator) -> Tensor:
    """Call the user's sampler on a copy of ``x0`` and return its final states (float64,
    detached); ValueError naming ``fn`` when the result is not (B, d) like ``x0``."""
    out = fn(energy, x0.clone(), n_steps, step, generator)
    x = getattr(out, "x", out)
    if not isinstance(x, Tensor) or tuple(x.shape) != tuple(x0.shape):
        raise ValueError(f"fn: must return the chain states, a tensor of shape "
                         f"{tuple(x0.shape)} (or an object with it in .x), got "
                         f"{type(x).__name__} of shape {getattr(x, 'shape', None)}")
    return x.detach().to(device="cpu", dtype=F64)


def _plan(kind: str, targets, scale: float) -> list[tuple[Target, int, int]]:
    """[(target, chains M, number of rows)] of the check."""
    if isinstance(targets, str):
        if targets != "standard":
            raise ValueError(f"targets: 'standard' or a list of names from "
                             f"{KIND_TARGETS[kind]}, got {targets!r}")
        targets = KIND_TARGETS[kind]
    names = list(targets)
    if not names or any(t not in KIND_TARGETS[kind] for t in names) or \
            len(set(names)) != len(names):
        raise ValueError(f"targets: distinct names from {KIND_TARGETS[kind]} for "
                         f"kind={kind!r}, got {targets!r}")
    plan = []
    for name in names:
        t = TARGETS[name]
        m = max(round(t.n * scale), 100)
        if name == "mixture2d":
            rows = 1 + N_RANDOM_PROJECTIONS
        elif name == "double_well":
            rows = 1
        else:
            rows = 3
        plan.append((t, m, rows + (kind == "exact")))
    return plan


def _movement_detectable(m: int, f0: float, alpha_per: float, beta: float = BETA) -> float:
    """Largest moved fraction f that the guard (fail iff P(Bin(M, f₀) ≤ count) < α/m) catches
    with probability ≥ 1 − β; 0 when even a kernel that never moves may pass."""
    crit = int(stats.binom.ppf(alpha_per, m, f0))  # fail iff count < crit (at least)
    while crit > 0 and stats.binom.cdf(crit - 1, m, f0) >= alpha_per:
        crit -= 1
    if crit <= 0:
        return 0.0
    # count ≤ crit − 1 fails; P(Bin(M, f) ≤ crit − 1) ≥ 1 − β for f ≤ the root.
    g = lambda f: stats.binom.cdf(crit - 1, m, f) - (1 - beta)
    return float(optimize.brentq(g, 1e-12, f0)) if g(1e-12) > 0 > g(f0) else 0.0


def _effects(target: Target, energy, m: int, alpha_per: float, rel_error: float) -> dict:
    """Design-based detectable effects of the target's rows, asserting the power for
    ``rel_error`` (UnderpoweredError when the design cannot see it)."""
    if isinstance(energy, Gaussian):
        r = chi2_detectable_rel_error(m, energy.dim, alpha_per)
        if r > rel_error:
            raise UnderpoweredError(
                f"underpowered: {target.name} with {m} chains detects only a {r:.2%} "
                f"covariance error at level {alpha_per:.2g}, need {rel_error:.1%} "
                "(raise scale or rel_error)")
        z = float(z_detectable(1 / math.sqrt(m), alpha_per / energy.dim))
        return {"chi2": f"covariance ×(1 ± {r:.2%})", "mean": f"mean shift ≥ {z:.3g} sd",
                "ks": f"KS distance ≥ {ks_min_detectable(m, alpha_per):.4f}"}
    d_min = ks_min_detectable(m, alpha_per)
    if isinstance(energy, GaussianMixture):
        u = torch.tensor([1.0, 0.0], dtype=F64)
        cdf, c = mixture_projected_cdf(energy, u), mixture_centre(energy, u)
    else:
        cdf = lambda t: energy.cdf(torch.as_tensor(t, dtype=F64)).numpy()
        c = 0.0
    effect = dilation_ks_distance(cdf, c, c - 8.0, c + 8.0, rel_error)
    if d_min > effect:
        raise UnderpoweredError(
            f"underpowered: {target.name} with {m} samples detects a KS distance ≥ "
            f"{d_min:.4f} at level {alpha_per:.2g}; a {rel_error:.1%} variance dilation is "
            f"{effect:.4f} (raise scale or rel_error)")
    return {"ks": f"KS distance ≥ {d_min:.4f} ({rel_error:.0%} variance dilation: "
                  f"{effect:.4f})"}


def _gaussian_rows(label: str, x: Tensor, mean: Tensor, cov: Tensor, alpha_per: float,
                   effects: dict) -> list[Row]:
    tests = whitened_gaussian_tests(x, mean, cov)
    return [Row(label, GAUSS_STATS[k], v, p, alpha_per, effects[k])
            for k, (v, p) in tests.items()]


def _movement_row(label: str, x: Tensor, x0: Tensor, delta: float, f0: float,
                  alpha_per: float) -> Row:
    m = x.shape[0]
    moved = int(((x - x0).flatten(1).norm(dim=1) > delta).sum())
    p = float(stats.binom.cdf(moved, m, f0)) if bool(torch.isfinite(x).all()) else math.nan
    f_det = _movement_detectable(m, f0, alpha_per)
    return Row(label, f"moved fraction (‖x_n − x₀‖ > {delta:.3g}); count ~ Bin(M, f ≥ {f0:g})",
               moved / m, p, alpha_per, f"moved fraction ≤ {f_det:.1%}")


def _ks_rows(label: str, energy, x: Tensor, alpha_per: float, effects: dict,
             generator: torch.Generator) -> list[Row]:
    if not isinstance(energy, GaussianMixture):
        d, p = ks_test(x, energy.cdf)
        return [Row(label, "KS distance to the exact CDF; Kolmogorov", d, p, alpha_per,
                    effects["ks"])]
    e1 = torch.tensor([[1.0, 0.0]], dtype=F64)
    dirs = torch.cat([e1, random_directions(N_RANDOM_PROJECTIONS, 2, generator)])
    d_min = ks_min_detectable(x.shape[0], alpha_per)
    rows = []
    for i, u in enumerate(dirs):
        d, p = ks_test((x @ u).numpy(), mixture_projected_cdf(energy, u))
        name = "e₁" if i == 0 else f"u{i} = ({float(u[0]):.2f}, {float(u[1]):.2f})"
        rows.append(Row(f"{label}, uᵀx on {name}", "KS distance to the exact projected CDF; "
                        "Kolmogorov", d, p, alpha_per,
                        effects["ks"] if i == 0 else f"KS distance ≥ {d_min:.4f}"))
    return rows


def _target_rows(fn: SamplerFn, kind: str, target: Target, m: int, step: float, n_steps: int,
                 noise: float | None, opts: dict) -> list[Row]:
    """Sample the target's chains through ``fn`` and test them (one target of the plan)."""
    g, alpha_per = opts["generator"], opts["alpha_per"]
    energy = target.make()
    effects = _effects(target, energy, m, alpha_per, opts["rel_error"])
    label = f"{target.name} (M={m})"
    if kind == "exact":
        x0 = energy.sample(m, g)
        x = run_sampler(fn, energy, x0, n_steps, step, g)
        if isinstance(energy, Gaussian):
            rows = _gaussian_rows(label, x, energy.mu.detach(), energy.covariance.detach(),
                                  alpha_per, effects)
        else:
            rows = _ks_rows(label, energy, x, alpha_per, effects, g)
        return rows + [_movement_row(label, x, x0, MOVE_DELTA * target.sd_min,
                                     opts["min_moved"], alpha_per)]
    m0, c0 = ula_start(energy, target)
    x0 = m0 + torch.randn(m, energy.dim, generator=g, dtype=F64) @ torch.linalg.cholesky(c0).T
    x = run_sampler(fn, energy, x0, n_steps, step, g)
    mean, cov = ula_gaussian_law(energy.mu.detach(), energy.precision.detach(), m0, c0,
                                 n_steps, step, noise)
    return _gaussian_rows(label, x, mean, cov, alpha_per, effects)


def check_sampler(fn: SamplerFn, kind: str = "exact", *, targets: str | Sequence[str] = "standard",
                  alpha: float = ALPHA, noise: float | None = None,
                  step_size: float | Mapping[str, float] | None = None,
                  n_steps: int | Mapping[str, int] | None = None, scale: float = 1.0,
                  rel_error: float = 0.05, min_moved: float = 0.1,
                  seed: int | torch.Generator = 0) -> Report:
    """Test the sampler ``fn`` against the exact laws of ``kind`` on the standard targets.

    Args:
        fn: ``fn(energy, x0, n_steps, step_size, generator)`` → chain states (B, d).
        kind: "ula" (eq. 1, step λ), "decoupled" (x − α∇E + σξ, step α, σ = ``noise``) or
            "exact" (a kernel that leaves p ∝ e^{−E} invariant; see the module docstring).
        targets: "standard" (gauss2d, gauss20d; for "exact" also mixture2d, double_well) or a
            subset of those names.
        alpha: total false-failure rate, split evenly over the rows (Bonferroni).
        noise: σ of a "decoupled" sampler (required there, refused otherwise).
        step_size, n_steps: override the targets' defaults (one number, or {target: value}).
        scale: multiplies every documented sample size (e.g. 0.25 for a quick run; the power
            for ``rel_error`` is still asserted).
        rel_error: the relative variance error each target's main row must detect with
            probability ≥ 1 − 1e-3 (UnderpoweredError, raised before sampling, otherwise).
        min_moved: f₀ of the movement guard ("exact"): the fraction of chains the kernel must
            move by more than δ in n steps.
        seed: an int seed or a ``torch.Generator`` (recorded in the report).

    Returns a :class:`~ebmref.conformance.report.Report`; :func:`assert_conforms` raises on it.
    """
    check_choice(kind, "kind", SAMPLER_KINDS)
    if not callable(fn):
        raise ValueError(f"fn: expected a callable sampler, got {type(fn).__name__}")
    if kind == "decoupled":
        if noise is None:
            raise ValueError("noise: kind='decoupled' needs the σ the sampler uses")
        check_positive(noise, "noise")
    elif noise is not None:
        raise ValueError(f"noise: only for kind='decoupled' (eq. 1 has noise √λ), got {noise!r}")
    check_probability(alpha, "alpha")
    check_positive(scale, "scale")
    check_positive(rel_error, "rel_error")
    check_probability(min_moved, "min_moved")
    for value, what in ((step_size, "step_size"), (n_steps, "n_steps")):
        if isinstance(value, Mapping) and not set(value) <= set(KIND_TARGETS[kind]):
            raise ValueError(f"{what}: keys must be target names of kind={kind!r} "
                             f"{KIND_TARGETS[kind]}, got {sorted(value)}")
    generator, recorded = make_generator(seed)
    plan = _plan(kind, targets, scale)
    alpha_per = alpha / sum(rows for _, _, rows in plan)
    opts = {"generator": generator, "alpha_per": alpha_per, "rel_error": rel_error,
            "min_moved": min_moved}
    report = Report(f"check_sampler(kind={kind!r})", alpha, recorded)
    for target, m, _ in plan:
        step = _resolve(step_size, target.step, kind, target.name, "step_size", check_positive)
        k = _resolve(n_steps, target.n_steps, kind, target.name, "n_steps", _check_n_steps)
        report.rows += _target_rows(fn, kind, target, m, step, k, noise, opts)
        report.design.append(f"{target.name}: M = {m} chains, {k} steps of step size {step:g}"
                             + (f", noise σ = {noise:g}" if noise is not None else ""))
    return report
