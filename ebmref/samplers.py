"""MCMC samplers for p_θ ∝ exp(−E_θ): Langevin (ULA) in both parametrisations, MALA and the
exact Ornstein–Uhlenbeck transition for Gaussian energies (paper §2.3, §5.3.1).

All samplers are vectorised over chains (the batch dimension), draw their noise from an explicit
``torch.Generator`` and return a :class:`SamplerOutput`.

Parametrisations of the Langevin step
-------------------------------------
* principled, the paper's eq. 1 (``noise=None``):   x ← x − (λ/2) ∇ₓE(x) + √λ ξ,  ξ ~ N(0, I).
  This is the Euler–Maruyama step of dX = −½∇E dt + dW with dt = λ; its stationary law tends to
  p_θ as λ → 0.
* decoupled, as in Du & Mordatch (2019) (``noise=σ``): x ← x − α ∇ₓE(x) + σ ξ.
  It is the principled step on the tempered energy E/T with λ = σ² and effective temperature
  T = σ² / (2α) (see :func:`effective_temperature`); Du's α = 10, σ = 0.005 gives T = 1.25e-6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from ebmref.energy import Energy, Gaussian, row_sum
from ebmref.transitions import Transition
from ebmref.validation import check_int_range, check_nonnegative, check_points, check_positive


@dataclass
class SamplerOutput:
    """Final states ``x`` (B, ...); ``trajectory`` (n_recorded, B, ...) when recording;
    ``acceptance`` (B,) per-chain acceptance rate for MALA."""

    x: Tensor
    trajectory: Tensor | None = None
    acceptance: Tensor | None = None


class LangevinCoefficients(NamedTuple):
    """The step x ← x − a∇ₓE(x) + s ξ: drift a, noise standard deviation s and variance s²."""

    drift: float
    noise_std: float
    noise_var: float


def langevin_coefficients(step_size: float, noise: float | None = None) -> LangevinCoefficients:
    """(a, s, s²) of either parametrisation: eq. 1 (``noise=None``) a = λ/2, s = √λ, s² = λ;
    Du's decoupled step (``noise=σ``) a = α, s = σ, s² = σ². Used by ULA, MALA and the exact
    Gaussian laws of :mod:`ebmref.analytic`."""
    check_positive(step_size, "step_size")
    if noise is None:
        return LangevinCoefficients(step_size / 2.0, math.sqrt(step_size), step_size)
    check_nonnegative(noise, "noise")
    return LangevinCoefficients(step_size, float(noise), float(noise) ** 2)


def effective_temperature(step_size: float, noise: float) -> float:
    """T = σ² / (2α) of the decoupled Langevin step x − α∇E + σξ (paper §5.3.1)."""
    check_positive(step_size, "step_size")
    check_positive(noise, "noise")
    return noise**2 / (2.0 * step_size)


def decoupled_noise(step_size: float, temperature: float) -> float:
    """σ = √(2αT): the noise of Du's step x − α∇E + σξ that samples at temperature T (the
    inverse of :func:`effective_temperature`)."""
    check_positive(step_size, "step_size")
    check_positive(temperature, "temperature")
    return math.sqrt(2.0 * step_size * temperature)


class SamplerDiverged(RuntimeError):
    """The chains left the finite numbers (a step too large for the energy's curvature)."""


def _check_common(energy: Energy, x0: Tensor, n_steps: int, record_every: int) -> None:
    if not isinstance(energy, Energy):
        raise ValueError(f"energy: expected an ebmref.energy.Energy (a torch module mapping "
                         f"(B, ...) to (B,)), got {type(energy).__name__}")
    check_points(x0, "x0")
    check_int_range(n_steps, "n_steps", 0)
    check_int_range(record_every, "record_every", 0)


def _check_output(x: Tensor, trajectory: Tensor | None, step_size: float, name: str) -> None:
    """Raise SamplerDiverged when a chain's final state or one of its recorded frames holds a
    NaN or ±inf; the message counts the chains (not the frames)."""
    bad = (~torch.isfinite(x)).flatten(1).any(-1)
    if trajectory is not None:  # (frames, B, ...): a chain is bad if any of its frames is
        bad = bad | (~torch.isfinite(trajectory)).flatten(2).any(-1).any(0)
    if bool(bad.any()):
        chains = int(bad.sum())
        raise SamplerDiverged(f"{name}: {chains} chain(s) became non-finite with step_size="
                              f"{step_size!r}; use a smaller step (or clip ∇E, clamp x)")


def _noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def langevin(
    energy: Energy,
    x0: Tensor,
    n_steps: int,
    step_size: float,
    noise: float | None = None,
    *,
    generator: torch.Generator | None = None,
    grad_clip: float | None = None,
    clamp: tuple[float, float] | None = None,
    differentiable_steps: int = 0,
    transition: Transition | None = None,
    transition_every: int = 0,
    record_every: int = 0,
    check_finite: bool = True,
) -> SamplerOutput:
    """Unadjusted Langevin algorithm (ULA), eq. 1 of the paper or Du's decoupled form.

    Args:
        energy: E_θ, batch → (B,).
        x0: chain starts (B, ...).
        n_steps: number of Langevin steps.
        step_size: λ (principled, ``noise=None``) or α (decoupled, ``noise`` given).
        noise: σ of the decoupled form; ``None`` selects eq. 1 with noise √λ.
        grad_clip: clip each entry of ∇ₓE to [−c, c] before the step (IGEBM uses 0.01).
        clamp: (low, high) bounds applied to x after each step (images: (0, 1)).
        differentiable_steps: the last k steps keep the autograd graph (create_graph=True) so
            that the output depends differentiably on θ; earlier steps are detached (§5.4.2).
        transition: a callable (x, generator) → x (e.g. an augmentation, §5.3.2) applied after
            every ``transition_every``-th step.
        record_every: keep the state every r steps (0: no trajectory).
        check_finite: raise :class:`SamplerDiverged` if a final state or recorded frame is not
            finite (one reduction at the end; the training loop checks its own, over ranks).
    """
    _check_common(energy, x0, n_steps, record_every)
    drift, noise_std, _ = langevin_coefficients(step_size, noise)
    if grad_clip is not None:
        check_positive(grad_clip, "grad_clip")
    if clamp is not None and not (len(clamp) == 2 and clamp[0] < clamp[1]):
        raise ValueError(f"clamp: expected (low, high) with low < high, got {clamp!r}")
    check_int_range(differentiable_steps, "differentiable_steps", 0, n_steps)
    check_int_range(transition_every, "transition_every", 0)
    if transition is not None and transition_every == 0:
        raise ValueError("transition_every: must be >= 1 when a transition is given, got 0")

    x = x0  # detached below unless its steps are differentiated (x0 is never written)
    frames = [x.detach()] if record_every else []
    first_graph_step = n_steps - differentiable_steps
    for t in range(n_steps):
        keep_graph = t >= first_graph_step
        if not keep_graph:
            x = x.detach()
        g = energy.grad(x, create_graph=keep_graph)  # ULA needs ∇ₓE only
        if grad_clip is not None:
            g = g.clamp(-grad_clip, grad_clip)
        if keep_graph:
            x = x - drift * g + noise_std * _noise(x, generator)
        else:  # same update, two fused passes over a fresh tensor (x0 is never written)
            x = torch.add(x, g, alpha=-drift).add_(_noise(x, generator), alpha=noise_std)
        if clamp is not None:
            x = x.clamp(clamp[0], clamp[1])
        if transition is not None and (t + 1) % transition_every == 0:
            x = transition(x, generator)
        if record_every and (t + 1) % record_every == 0:
            frames.append(x.detach())
    if differentiable_steps == 0:
        x = x.detach()
    trajectory = torch.stack(frames) if record_every else None
    if check_finite:
        _check_output(x.detach(), trajectory, step_size, "langevin")
    return SamplerOutput(x=x, trajectory=trajectory)


def mala_log_proposal(y: Tensor, x: Tensor, grad_x: Tensor, step_size: float) -> Tensor:
    """log q(y | x) up to a constant for the proposal y ~ N(x − (λ/2)∇E(x), λI), shape (B,)."""
    c = langevin_coefficients(step_size)
    diff = (y - x + c.drift * grad_x).flatten(1)
    return -(diff * diff).sum(-1) / (2.0 * c.noise_var)


_INT_OF_SIZE = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_BITWISE_MIN_NUMEL = 1 << 14  # below this, one torch.where call beats the bitwise ops' overhead


def _select(accept: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """Row-wise ``torch.where(accept, new, old)`` for a (B,) bool ``accept``, bit for bit.

    On CPU torch.where is a scalar loop that branches per element (slowest near acceptance ½)
    and is slow with a broadcast mask. For large tensors each row's last dimension is read as
    integer words, the widest of int8…int64 that divide it (a float32 pair is one int64), and
    ``old ^ ((old ^ new) & m)``, m = 0 or all ones per row, takes the bits of ``new`` or ``old``:
    vectorised, branch-free, exact, NaNs copied as they are. Small tensors (per-call overhead
    dominates) and other devices (one fused kernel) keep torch.where.
    """
    shape = (-1,) + (1,) * (new.ndim - 1)
    if not new.is_cpu or new.numel() < _BITWISE_MIN_NUMEL:
        return torch.where(accept.view(shape), new, old)
    size = new.element_size()
    word = _INT_OF_SIZE[size if new.ndim == 1 else math.gcd(new.shape[-1] * size, 8)]
    n, o = new.contiguous().view(word), old.contiguous().view(word)
    mask = accept.to(word).neg_().view(shape)  # 0 or −1 (all bits set) per row
    return (n ^ o).bitwise_and_(mask).bitwise_xor_(o).view(new.dtype)


def mala(
    energy: Energy,
    x0: Tensor,
    n_steps: int,
    step_size: float,
    *,
    generator: torch.Generator | None = None,
    record_every: int = 0,
    check_finite: bool = True,
) -> SamplerOutput:
    """Metropolis-adjusted Langevin (paper §2.3.2): propose eq. 1's step, accept with

        min(1, exp(E(x) − E(y) + log q(x | y) − log q(y | x))),

    which makes p_θ invariant for every λ > 0. The energy and gradient of the current state are
    carried over from the accept test, so each step costs one energy-and-gradient evaluation.
    Returns the per-chain acceptance rate in ``acceptance``. Rejected proposals keep chains
    finite; ``check_finite`` still raises :class:`SamplerDiverged` if a start's energy made
    them non-finite.
    """
    _check_common(energy, x0, n_steps, record_every)
    drift, sqrt_step, _ = langevin_coefficients(step_size)
    x = x0.detach()
    e_x, g_x = energy.energy_and_grad(x)
    n_accepted = torch.zeros(x.shape[0], dtype=torch.int32, device=x.device)
    frames = [x] if record_every else []
    c = 0.5 * sqrt_step
    for t in range(n_steps):
        xi = _noise(x, generator)
        y = torch.add(x, g_x, alpha=-drift).add_(xi, alpha=sqrt_step)
        e_y, g_y = energy.energy_and_grad(y)
        # log q(x|y) − log q(y|x) of mala_log_proposal without forming x − y: with
        # y − x + (λ/2)∇E(x) = √λ ξ and s = ∇E(x) + ∇E(y), c = √λ/2,
        #   log q(y|x) = −‖ξ‖²/2,  log q(x|y) = −‖ξ − c s‖²/2,  difference = c s·(ξ − (c/2) s).
        s = torch.add(g_x, g_y)
        log_ratio = torch.add(xi, s, alpha=-0.5 * c).mul_(s)
        log_alpha = (e_x - e_y).add_(row_sum(log_ratio), alpha=c)
        u = torch.rand(x.shape[0], generator=generator, dtype=x.dtype, device=x.device)
        accept = u.log_() < log_alpha  # NaN proposals compare False: rejected
        x, e_x, g_x = _select(accept, y, x), _select(accept, e_y, e_x), _select(accept, g_y, g_x)
        n_accepted += accept
        if record_every and (t + 1) % record_every == 0:
            frames.append(x)
    rate = n_accepted.to(x.dtype) / max(n_steps, 1)
    trajectory = torch.stack(frames) if record_every else None
    if check_finite:
        _check_output(x, trajectory, step_size, "mala")
    return SamplerOutput(x=x, trajectory=trajectory, acceptance=rate)


def ornstein_uhlenbeck(
    energy: Gaussian,
    x0: Tensor,
    n_steps: int,
    tau: float,
    *,
    generator: torch.Generator | None = None,
    record_every: int = 0,
) -> SamplerOutput:
    """Exact transition of the Langevin diffusion dX = −∇E dt + √2 dW on E = ½(x−μ)ᵀP(x−μ):

        X_τ = μ + e^{−τP}(X₀ − μ) + N(0, Σ − e^{−τP} Σ e^{−τP}),   Σ = P⁻¹.

    N(μ, Σ) is invariant for every τ; one principled Langevin step of size λ approximates this
    with τ = λ/2.
    """
    if not isinstance(energy, Gaussian):
        raise ValueError(f"energy: the exact OU transition needs a Gaussian, got {type(energy)}")
    _check_common(energy, x0, n_steps, record_every)
    check_positive(tau, "tau")
    with torch.no_grad():
        sigma = energy.covariance
        decay = torch.linalg.matrix_exp(-tau * energy.precision)
        cov = sigma - decay @ sigma @ decay.T
        chol = torch.linalg.cholesky(0.5 * (cov + cov.T))
        x = x0.detach()
        frames = [x] if record_every else []
        for t in range(n_steps):
            x = energy.mu + (x - energy.mu) @ decay.T + _noise(x, generator) @ chol.T
            if record_every and (t + 1) % record_every == 0:
                frames.append(x)
    return SamplerOutput(x=x, trajectory=torch.stack(frames) if record_every else None)
