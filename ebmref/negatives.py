"""The negative samples of one training update (paper §2.3, §5.3, §5.4.2).

:func:`sample_negatives` runs the configured sampler from the chain starts x₀ and returns the
negatives x⁻ (detached: the contrastive loss, eq. 3, must not reach θ through them) and, when
the KL loss is on, the differentiable chain ends x̃ whose last ``kl.differentiable_steps``
Langevin steps keep their graph to θ (§5.4.2; Du et al. 2020 differentiate one step).
It is the one place that chooses between ULA, MALA and the split KL chain run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ebmref.config import KLConfig, SamplerConfig
from ebmref.energy import Energy
from ebmref.samplers import Transition, langevin, mala


@dataclass
class Negatives:
    """x⁻ (B, ...) detached; ``x_diff`` x̃ with a graph to θ (KL loss on), else ``None``;
    ``acceptance`` MALA's per-chain acceptance rate (B,), else ``None``."""

    x: Tensor
    x_diff: Tensor | None = None
    acceptance: Tensor | None = None


def sample_negatives(energy: Energy, x0: Tensor, sampler: SamplerConfig,
                     kl: KLConfig | None = None, *, generator: torch.Generator | None,
                     transition: Transition | None = None) -> Negatives:
    """Run ``sampler`` from ``x0`` on E_θ.

    * MALA: ``sampler.n_steps`` Metropolis-adjusted steps (no KL chains: it is not
      differentiated).
    * ULA: ``sampler.n_steps`` Langevin steps (eq. 1, or Du's decoupled step when
      ``sampler.noise`` is set), with ``transition`` every ``sampler.transition_every`` steps.
      With the KL loss on (``kl.weight > 0``) the last k = ``kl.differentiable_steps`` steps keep
      their graph and x̃ = x⁻ with that graph. With ``kl.n_chains`` = m, 0 < m < B (Du et al.
      2020), all B chains run detached and the last k steps are rerun with a graph, with fresh
      noise, on the first m chains only: x̃ then has m rows and memory is bounded by m (for an
      ensemble, :mod:`ebmref.ensemble`, B and m count per member).
    """
    # The training loop checks x⁻ itself, over all ranks at once (a rank raising alone would
    # leave the others waiting).
    if sampler.kind == "mala":
        out = mala(energy, x0, sampler.n_steps, sampler.step_size, generator=generator,
                   check_finite=False)
        return Negatives(out.x.detach(), acceptance=out.acceptance)
    kwargs = {"generator": generator, "grad_clip": sampler.grad_clip, "clamp": sampler.clamp,
              "transition": transition if sampler.transition_every else None,
              "transition_every": sampler.transition_every, "check_finite": False}

    def run(x: Tensor, n: int, differentiable: int = 0) -> Tensor:
        return langevin(energy, x, n, sampler.step_size, sampler.noise,
                        differentiable_steps=differentiable, **kwargs).x

    k = kl.differentiable_steps if kl is not None and kl.enabled else 0
    members = energy.n_members  # the first m chains of each member (ebmref.ensemble)
    if k and 0 < kl.n_chains < x0.shape[0] // members:
        x_mid = run(x0, sampler.n_steps - k)
        subset = x_mid.view(members, -1, *x_mid.shape[1:])[:, :kl.n_chains].flatten(0, 1)
        return Negatives(run(x_mid, k), x_diff=run(subset, k, k))
    x = run(x0, sampler.n_steps, k)
    return Negatives(x.detach(), x_diff=x if k else None)
