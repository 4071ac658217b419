"""Annealed importance sampling (AIS) for log Z_θ of p_θ ∝ exp(−E_θ) (Neal, 2001), with the
reverse direction of bidirectional Monte Carlo (Grosse, Ghahramani & Adams, 2015).

Path and weights
----------------
From a tractable base p₀ = exp(−E₀)/Z₀ (known Z₀, exact samples) to the model, along the
geometric path E_β = (1 − β)E₀ + βE_θ, 0 = β₀ < β₁ < … < β_K = 1. Particles x₀ ~ p₀; for
k = 1, …, K the log-weight gains the ratio of consecutive unnormalised densities at the
*current* state, then a kernel T_k that leaves p_{β_k} invariant moves it (here MALA,
:func:`ebmref.samplers.mala`, exact for every step size):

    log w += −(β_k − β_{k−1}) · (E_θ − E₀)(x_{k−1}),    x_k ~ T_k(x_{k−1}, ·),

so w = Πₖ exp(−(β_k − β_{k−1})(E_θ − E₀)(x_{k−1})) and E[w] = Z_θ/Z₀ exactly, for any K and
any invariant kernels (Neal, 2001). The estimate Ẑ = Z₀ · mean(w) is unbiased; log Ẑ is a
stochastic lower bound, P(log Ẑ − log Z_θ > b) ≤ e^{−b} (Markov's inequality on Ẑ/Z_θ).

Reverse AIS (:func:`reverse_ais`) starts from exact samples of p_θ and runs the same path from
β = 1 to 0. Its weights w' satisfy E[w'] = Z₀/Z_θ, so log Ẑ_rev = log Z₀ − log mean(w') is a
stochastic *upper* bound: P(log Z_θ − log Ẑ_rev > b) ≤ e^{−b}. Exact samples exist for
analytic energies and for data simulated from a known model; log Z then lies between the two
estimates (up to the slack of the two Markov bounds), so the gap log Ẑ_rev − log Ẑ bounds the
error of either (Grosse et al., 2015).

Bases: a Gaussian fitted to data (:func:`fit_gaussian`, an :class:`ebmref.energy.Gaussian`),
or :class:`UniformBox` for energies defined on a box (images in [0, 1]^d). With a box base the
target is p_θ restricted to the box: every E_β is +∞ outside it, so a MALA proposal that leaves
the box has acceptance probability exp(E_β(x) − ∞ + …) = 0 and is rejected by MALA's own test.

Example::

    base = fit_gaussian(train_x)                      # or UniformBox(0.0, 1.0, (64,))
    g = torch.Generator().manual_seed(0)
    res = ais(energy, base, 1000, schedule(500, "sigmoid"), step_size=0.1, adapt=True,
              generator=g)
    print(f"log Z = {res.log_z:.3f} ± {res.log_z_se:.3f}, ESS {res.ess:.0f}")
    rev = reverse_ais(energy, base, exact_model_samples, res.betas, res.step_sizes, generator=g)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ebmref.energy import AnalyticEnergy, Energy, Gaussian
from ebmref.samplers import mala
from ebmref.validation import (
    check_choice,
    check_finite,
    check_int_range,
    check_positive,
)

Kernel = Callable[[Energy, Tensor, float, int, "torch.Generator | None"], tuple[Tensor, Tensor]]
"""(energy, x, step_size, n_steps, generator) → (new x, per-particle acceptance rate (B,)); it
must leave exp(−energy) invariant for the estimator to be unbiased."""

SCHEDULES = ("linear", "geometric", "sigmoid")


# --------------------------------------------------------------------------- bases


class UniformBox(AnalyticEnergy):
    """Uniform law on the box [low, high]^shape: E = 0 inside, +∞ outside, log Z = Σ log(hᵢ − lᵢ).

    ``low``/``high`` are numbers or tensors broadcastable to ``shape`` (the event shape).
    """

    def __init__(self, low, high, shape: tuple[int, ...], dtype: torch.dtype | None = None):
        super().__init__()
        dt = dtype if dtype is not None else torch.get_default_dtype()
        if not (isinstance(shape, tuple) and len(shape) > 0
                and all(isinstance(s, int) and s >= 1 for s in shape)):
            raise ValueError(f"shape: expected a non-empty tuple of positive ints, got {shape!r}")
        lo = torch.as_tensor(low, dtype=dt).expand(shape).clone()
        hi = torch.as_tensor(high, dtype=dt).expand(shape).clone()
        check_finite(lo, "low")
        check_finite(hi, "high")
        if not bool((hi > lo).all()):
            raise ValueError("high: must exceed low in every coordinate")
        self.register_buffer("low", lo)
        self.register_buffer("high", hi)
        self.event_shape = tuple(shape)

    def contains(self, x: Tensor) -> Tensor:
        """(B,) bool: the rows of x inside the closed box."""
        return ((x >= self.low) & (x <= self.high)).flatten(1).all(1)

    def forward(self, x: Tensor) -> Tensor:
        self._check_batch(x)
        zero = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        return zero.masked_fill(~self.contains(x), math.inf)

    def energy_and_grad(self, x: Tensor, create_graph: bool = False) -> tuple[Tensor, Tensor]:
        return self(x), torch.zeros_like(x)

    def log_partition(self) -> Tensor:
        return torch.log(self.high - self.low).sum()

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        check_int_range(n, "n", 1)
        u = torch.rand((n, *self.event_shape), generator=generator, dtype=self.low.dtype)
        return self.low + u * (self.high - self.low)


def fit_gaussian(data: Tensor, inflate: float = 1.0, jitter: float = 1e-6) -> Gaussian:
    """N(mean, inflate² · cov + jitter·I) of the rows of ``data`` (N, d): a base close to the
    data, so the path to a model trained on it is short. ``inflate`` > 1 widens it: with a base
    whose tails are heavier than the model's, every AIS weight is bounded by sup p_θ/p₀ (the
    weights' exponents sum to one), which keeps their variance and its estimate stable."""
    if not isinstance(data, Tensor) or data.ndim != 2 or data.shape[0] < 2:
        raise ValueError(f"data: expected a tensor (N, d) with N >= 2, got "
                         f"{tuple(data.shape) if isinstance(data, Tensor) else type(data)}")
    check_finite(data, "data")
    check_positive(inflate, "inflate")
    check_positive(jitter, "jitter")
    x = data.detach()
    cov = torch.cov(x.T).reshape(x.shape[1], x.shape[1])
    cov = inflate**2 * 0.5 * (cov + cov.T) + jitter * torch.eye(x.shape[1], dtype=x.dtype)
    return Gaussian(x.mean(0), cov, dtype=x.dtype)


# --------------------------------------------------------------------------- path


def schedule(n_steps: int, kind: str = "sigmoid", *, beta_min: float = 1e-4,
             sharpness: float = 4.0) -> Tensor:
    """Inverse temperatures β₀ = 0 < … < β_K = 1 (float64, K + 1 = ``n_steps`` + 1 values).

    * ``linear``: β_k = k/K;
    * ``geometric``: 0, then K values geometrically spaced from ``beta_min`` to 1 (fine steps
      near the base, where log-weights change fastest for a broad base);
    * ``sigmoid``: β̃_k = σ(δ(2k/K − 1)), β_k = (β̃_k − β̃₀)/(β̃_K − β̃₀), δ = ``sharpness``
      (Grosse et al., 2015): fine steps at both ends.
    """
    check_int_range(n_steps, "n_steps", 1)
    check_choice(kind, "kind", SCHEDULES)
    k = torch.arange(n_steps + 1, dtype=torch.float64)
    if kind == "linear":
        b = k / n_steps
    elif kind == "geometric":
        if not (isinstance(beta_min, (int, float)) and 0 < beta_min < 1):
            raise ValueError(f"beta_min: must lie in (0, 1), got {beta_min!r}")
        b = torch.cat([torch.zeros(1, dtype=torch.float64),
                       torch.logspace(math.log10(beta_min), 0.0, n_steps, dtype=torch.float64)])
    else:
        check_positive(sharpness, "sharpness")
        s = torch.sigmoid(sharpness * (2.0 * k / n_steps - 1.0))
        b = (s - s[0]) / (s[-1] - s[0])
    b[0], b[-1] = 0.0, 1.0  # exact endpoints despite round-off
    return b


class AnnealedEnergy(Energy):
    """E_β(x) = (1 − β)E₀(x) + βE_θ(x), +∞ outside the box of a :class:`UniformBox` base.

    ``beta`` is a plain attribute, set by the AIS loop at each temperature. At β = 0 (β = 1) the
    target (base) is not evaluated, so 0 · ∞ never occurs.
    """

    def __init__(self, base: AnalyticEnergy, target: Energy, beta: float = 0.0):
        super().__init__()
        self.base, self.target, self.beta = base, target, float(beta)
        self.event_shape = base.event_shape

    def log_ratio_increment(self, x: Tensor) -> Tensor:
        """(E_θ − E₀)(x), (B,): −d log f_β / dβ, the integrand of every AIS weight."""
        with torch.no_grad():
            return self.target(x) - self.base(x)

    def forward(self, x: Tensor) -> Tensor:
        return self._combine(x, with_grad=False)[0]

    def energy_and_grad(self, x: Tensor, create_graph: bool = False) -> tuple[Tensor, Tensor]:
        if create_graph:
            raise ValueError("create_graph: AIS energies are not differentiated in θ")
        return self._combine(x, with_grad=True)

    def _combine(self, x: Tensor, with_grad: bool) -> tuple[Tensor, Tensor | None]:
        b, box = self.beta, isinstance(self.base, UniformBox)
        # A box base adds 0 inside the box (outside is handled below).
        terms = [(w, en) for w, en in ((b, self.target), (1.0 - b, self.base))
                 if w > 0.0 and not (box and en is self.base)]
        e = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        g = torch.zeros_like(x) if with_grad else None
        for w, energy in terms:
            if with_grad:
                ei, gi = energy.energy_and_grad(x)
                e, g = e + w * ei, g + w * gi
            else:
                with torch.no_grad():
                    e = e + w * energy(x)
        if box:
            inside = self.base.contains(x)
            e = e.masked_fill(~inside, math.inf)  # MALA rejects every proposal out here
            if with_grad:  # keep rejected proposals' gradients finite (they are discarded)
                g = g.masked_fill(~inside.view(-1, *([1] * (x.ndim - 1))), 0.0)
        return e, g


def mala_kernel(energy: Energy, x: Tensor, step_size: float, n_steps: int,
                    generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """The default kernel: ``n_steps`` MALA steps (:func:`ebmref.samplers.mala`)."""
    out = mala(energy, x, n_steps, step_size, generator=generator)
    return out.x, out.acceptance


# --------------------------------------------------------------------------- estimator


@dataclass
class AISResult:
    """What :func:`ais` and :func:`reverse_ais` return.

    log_z: log Ẑ; a stochastic lower bound (forward) or upper bound (reverse) of log Z_θ.
    log_z_se: its standard error from the log-weights, sd(w̃)/√N with w̃ = w/mean(w) (delta
        method: log mean(w) moves by δmean/mean).
    ess: effective sample size (Σw)²/Σw² ∈ [1, N].
    log_weights: (N,) log w (forward: E log-mean-exp = log Z_θ/Z₀ − bias; reverse: weights of
        Z₀/Z_θ).
    x: (N, ...) final particles (forward: weighted samples of p_θ; reverse: of p₀).
    acceptance: (K + 1,) mean acceptance of the kernel run at β_k (NaN where none ran: β₀
        forward, β_K reverse, or every entry when ``n_mcmc=0``).
    step_sizes: (K + 1,) the kernel's step size at β_k; betas: (K + 1,) the path, increasing.
    log_z0: log Z₀ of the base; reverse: True for :func:`reverse_ais`.
    """

    log_z: float
    log_z_se: float
    ess: float
    log_weights: Tensor
    x: Tensor
    acceptance: Tensor
    step_sizes: Tensor
    betas: Tensor
    log_z0: float
    reverse: bool = False


def summarise_log_weights(log_w: Tensor) -> tuple[float, float, float]:
    """(log mean(w), its standard error, ESS) of N ≥ 2 importance log-weights.

    With w̃ᵢ = wᵢ/mean(w) (mean 1, computed in log space, no overflow): se = sd(w̃)/√N (delta
    method for log of a mean) and ESS = N/mean(w̃²) = (Σw)²/Σw².
    """
    log_w = log_w.detach().to(torch.float64)
    n = log_w.numel()
    lme = torch.logsumexp(log_w, 0) - math.log(n)
    if not torch.isfinite(lme):  # every weight zero (or a NaN): nothing to normalise
        return float(lme), math.nan, 0.0
    wn = torch.exp(log_w - lme)
    return float(lme), float(wn.std() / math.sqrt(n)), float(n / (wn * wn).mean())


def _anneal(path: AnnealedEnergy, x: Tensor, betas: Tensor, steps: Tensor, n_mcmc: int,
            kernel: Kernel, generator: torch.Generator | None,
            target_acceptance: float | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Move particles x along ``betas`` (either direction), index k = position on this run.

    Returns (log w, final x, acceptance, steps), acceptance[k] and steps[k] belonging to the
    kernel at betas[k]. With ``target_acceptance`` (pilot runs only) the step size at betas[k+1]
    is steps[k]·exp(a_k − target), a_k the mean acceptance at betas[k].
    """
    k_max = betas.numel() - 1
    log_w = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    acc = torch.full((k_max + 1,), math.nan, dtype=torch.float64)
    steps = steps.clone()
    for k in range(1, k_max + 1):
        # The weight uses the state *before* the move at β_k: f_k(x_{k−1})/f_{k−1}(x_{k−1}).
        inc = path.log_ratio_increment(x).to(torch.float64)
        log_w -= float(betas[k] - betas[k - 1]) * inc
        path.beta = float(betas[k])
        if n_mcmc == 0:
            continue
        x, a = kernel(path, x, float(steps[k]), n_mcmc, generator)
        acc[k] = float(a.mean())
        if target_acceptance is not None and k < k_max:
            steps[k + 1] = steps[k] * math.exp(float(acc[k]) - target_acceptance)
    return log_w, x, acc, steps


def _check_path(target: Energy, base: AnalyticEnergy, betas: Tensor, step_size: float | Tensor,
                n_mcmc: int, kernel: Kernel) -> tuple[Tensor, Tensor]:
    """Validate the arguments shared by both directions; returns (betas, step sizes (K + 1,))."""
    if not isinstance(target, Energy):
        raise ValueError(f"target: expected an ebmref.energy.Energy, got {type(target)}")
    if not isinstance(base, (Gaussian, UniformBox)):
        raise ValueError(
            f"base: expected an ebmref.energy.Gaussian or ebmref.ais.UniformBox (known log Z₀ "
            f"and exact samples), got {type(base)}")
    if target.event_shape and tuple(target.event_shape) != tuple(base.event_shape):
        raise ValueError(f"base: event shape {tuple(base.event_shape)} differs from the "
                         f"target's {tuple(target.event_shape)}")
    if not isinstance(betas, Tensor) or betas.ndim != 1 or betas.numel() < 2:
        raise ValueError("betas: expected a 1-D tensor 0 = β₀ < … < β_K = 1 with K >= 1")
    betas = betas.detach().to(torch.float64).cpu()
    check_finite(betas, "betas")
    if betas[0] != 0.0 or betas[-1] != 1.0 or not bool((betas[1:] > betas[:-1]).all()):
        raise ValueError(f"betas: must increase strictly from 0 to 1, got first {float(betas[0])}"
                         f", last {float(betas[-1])}")
    n = betas.numel()
    if isinstance(step_size, Tensor):
        steps = step_size.detach().to(torch.float64).cpu().reshape(-1)
        if steps.numel() != n or not bool(torch.isfinite(steps).all() and (steps > 0).all()):
            raise ValueError(f"step_size: a tensor must hold {n} finite values > 0 (one per "
                             f"β_k), got shape {tuple(step_size.shape)}")
    else:
        check_positive(step_size, "step_size")
        steps = torch.full((n,), float(step_size), dtype=torch.float64)
    check_int_range(n_mcmc, "n_mcmc", 0)
    if not callable(kernel):
        raise ValueError(f"kernel: expected a callable, got {kernel!r}")
    return betas, steps


def _pilot_steps(path: AnnealedEnergy, base: AnalyticEnergy, betas: Tensor, steps: Tensor,
                 n_mcmc: int, kernel: Kernel, target_acceptance: float, n_pilot: int,
                 generator: torch.Generator | None) -> Tensor:
    """Step sizes per β_k adapted on a forward pilot run with its own particles and draws."""
    if not (isinstance(target_acceptance, float) and 0.0 < target_acceptance < 1.0):
        raise ValueError(f"target_acceptance: must lie in (0, 1), got {target_acceptance!r}")
    check_int_range(n_pilot, "n_pilot", 1)
    x = base.sample(n_pilot, generator)
    path.beta = 0.0
    steps = _anneal(path, x, betas, steps, n_mcmc, kernel, generator, target_acceptance)[3]
    steps[0] = steps[1]  # β₀ has a kernel only in reverse runs
    return steps


def _path_and_steps(target: Energy, base: AnalyticEnergy, betas: Tensor, steps: Tensor,
                    n_mcmc: int, adapt: bool, kernel: Kernel, target_acceptance: float,
                    n_pilot: int, generator: torch.Generator | None
                    ) -> tuple[AnnealedEnergy, Tensor]:
    """The annealed path p₀^{1−β} p_θ^β and the kernel's step per β (pilot-tuned when
    ``adapt``; the pilot always runs forward from p₀)."""
    if not isinstance(adapt, bool):
        raise ValueError(f"adapt: must be a bool, got {adapt!r}")
    path = AnnealedEnergy(base, target)
    if adapt:
        steps = _pilot_steps(path, base, betas, steps, n_mcmc, kernel, target_acceptance,
                             n_pilot, generator)
    return path, steps


def ais(target: Energy, base: AnalyticEnergy, n_particles: int, betas: Tensor,
        step_size: float | Tensor = 0.1, *, n_mcmc: int = 1, adapt: bool = False,
        target_acceptance: float = 0.6, n_pilot: int = 256,
        kernel: Kernel = mala_kernel,
        generator: torch.Generator | None = None) -> AISResult:
    """Forward AIS estimate of log Z_θ = log ∫ exp(−E_θ) (Neal, 2001; module docstring).

    Args:
        target: E_θ. base: p₀, a :class:`~ebmref.energy.Gaussian` (e.g. :func:`fit_gaussian`)
            or a :class:`UniformBox` (then p_θ is restricted to the box).
        n_particles: N ≥ 2 independent particles (vectorised).
        betas: the path 0 = β₀ < … < β_K = 1 (e.g. :func:`schedule`).
        step_size: MALA's λ, one number or a tensor (K + 1,) with one value per β_k.
        n_mcmc: kernel steps per temperature (0: plain importance sampling from p₀).
        adapt: tune the step sizes on a pilot run of ``n_pilot`` particles: starting from
            ``step_size`` at β₁, the step at β_{k+1} is the step at β_k times
            exp(a_k − ``target_acceptance``), a_k the pilot's mean acceptance at β_k. The main
            run then uses these fixed steps. Adapting on the main particles themselves would
            make the kernel at β_k depend on every particle's past, including that of the
            particle it moves, so it would no longer leave p_{β_k} invariant given the past
            and E[w] = Z_θ/Z₀ would fail (a bias of order 1/N); the pilot draws its own
            particles and noise, so the main run is exactly unbiased given the pilot's steps.
        kernel: the MCMC move (:data:`Kernel`); the default is MALA.
        generator: all randomness (pilot, base samples, kernels).

    Returns:
        :class:`AISResult`, log_z = log Z₀ + log mean(w).
    """
    betas, steps = _check_path(target, base, betas, step_size, n_mcmc, kernel)
    check_int_range(n_particles, "n_particles", 2)
    path, steps = _path_and_steps(target, base, betas, steps, n_mcmc, adapt, kernel,
                                  target_acceptance, n_pilot, generator)
    path.beta = 0.0
    x = base.sample(n_particles, generator)
    log_w, x, acc, steps = _anneal(path, x, betas, steps, n_mcmc, kernel, generator)
    log_z0 = float(base.log_partition().detach())
    lme, se, ess = summarise_log_weights(log_w)
    return AISResult(log_z0 + lme, se, ess, log_w, x, acc, steps, betas, log_z0)


def reverse_ais(target: Energy, base: AnalyticEnergy, samples: Tensor, betas: Tensor,
                step_size: float | Tensor = 0.1, *, n_mcmc: int = 1, adapt: bool = False,
                target_acceptance: float = 0.6, n_pilot: int = 256,
                kernel: Kernel = mala_kernel,
                generator: torch.Generator | None = None) -> AISResult:
    """Reverse AIS from exact samples of p_θ (bidirectional Monte Carlo, Grosse et al., 2015).

    The particles run the path from β_K = 1 down to β₀ = 0 with the weight update of the
    module docstring; E[w'] = Z₀/Z_θ, so log_z = log Z₀ − log mean(w') is a stochastic upper
    bound on log Z_θ. ``samples`` (N ≥ 2, *event) must be exact draws of p_θ (inside the box
    for a :class:`UniformBox` base): approximate samples void the bound. The other arguments
    are those of :func:`ais`; with ``adapt`` the pilot runs *forward* from p₀, so it needs no
    target samples and stays independent of ``samples``.
    """
    betas, steps = _check_path(target, base, betas, step_size, n_mcmc, kernel)
    if not isinstance(samples, Tensor) or samples.ndim < 2 or samples.shape[0] < 2 \
            or tuple(samples.shape[1:]) != tuple(base.event_shape):
        got = tuple(samples.shape) if isinstance(samples, Tensor) else type(samples)
        raise ValueError(f"samples: expected exact target samples (N >= 2, "
                         f"{', '.join(map(str, base.event_shape))}), got {got}")
    check_finite(samples, "samples")
    if isinstance(base, UniformBox) and not bool(base.contains(samples).all()):
        raise ValueError("samples: must lie inside the base's box")
    path, steps = _path_and_steps(target, base, betas, steps, n_mcmc, adapt, kernel,
                                  target_acceptance, n_pilot, generator)
    path.beta = 1.0
    log_w, x, acc, _ = _anneal(path, samples.detach(), betas.flip(0), steps.flip(0), n_mcmc,
                               kernel, generator)
    log_z0 = float(base.log_partition().detach())
    lme, se, ess = summarise_log_weights(log_w)
    return AISResult(log_z0 - lme, se, ess, log_w, x, acc.flip(0), steps, betas, log_z0,
                     reverse=True)
