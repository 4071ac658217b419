"""Training objectives of MCMC-based EBM learning (paper §3, §4, §5.4).

* :func:`contrastive_loss` — positive phase L₊ = E_data[E_θ] and negative/divergence phase
  −E_neg[E_θ] (eq. 3), plus Du & Mordatch's L2 regulariser on the energies. One function serves
  maximum likelihood and contrastive divergence: what decides is where the negative chains start
  (noise / a persistent buffer → NLL, the data → CD; §5.1).
* :func:`frozen_energy` — E_Ω(θ)(x): the energy with its parameters treated as constants, so a
  loss on it reaches θ only through x (the samples' dependence on θ, §4.2 and §5.4.1).
* :func:`kl_loss` — the auxiliary KL loss of Du et al. (2020) with a sign switch:
  ``sign="du2020"`` (published) minimises KL[q_θ^t ‖ p_Ω(θ)] = E_q[E_Ω] − H(q) + log Z_Ω;
  ``sign="cd"`` is L_KL = −KL[q_θ^t ‖ p_Ω(θ)] = H(q) − E_q[E_Ω] − log Z_Ω, the term CD requires
  (§4.2, §5.4.1; claims C22, C23).

The chains themselves come from :func:`ebmref.negatives.sample_negatives` (CD-k when they start
at the data, §4.4; the differentiable chain ends x̃ the KL loss needs, §5.4.2).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import functional_call

from ebmref.energy import Energy
from ebmref.entropy import kozachenko_leonenko, nearest_neighbour_surrogate
from ebmref.validation import check_choice, check_int_range, check_nonnegative
from ebmref.validation import check_finite as _finite

KL_SIGNS = ("du2020", "cd")
ENTROPY_ESTIMATORS = ("nn", "kl")


def _check_energies(e: Tensor, name: str, finite: bool) -> None:
    if not isinstance(e, Tensor) or e.ndim != 1 or e.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D tensor of energies (B,), "
                         f"got shape {getattr(e, 'shape', None)}")
    if finite:
        _finite(e.detach(), name)


def contrastive_loss(e_pos: Tensor, e_neg: Tensor, l2: float = 0.0, *,
                     check_finite: bool = True) -> Tensor:
    """L₊ + L₋ + regulariser = mean(E(x⁺)) − mean(E(x⁻)) + l2·(mean(E(x⁺)²) + mean(E(x⁻)²)).

    Eq. 3 of the paper: with x⁺ ~ p_data and x⁻ ~ p_θ its gradient is an unbiased estimate of
    ∇_θ L_NLL (eq. 2); with x⁻ from t chain steps started at the data it is the CD* loss
    L₊ + L_d (§4.4). The negatives must be detached samples (no graph to θ through x⁻).
    ``l2`` is Du & Mordatch (2019)'s energy-magnitude penalty (1.0 in their code).
    Non-finite energies raise ValueError unless ``check_finite=False`` (the training loop
    checks them itself, over all ranks, and stops with TrainingDiverged).
    """
    _check_energies(e_pos, "e_pos", check_finite)
    _check_energies(e_neg, "e_neg", check_finite)
    check_nonnegative(l2, "l2")
    loss = e_pos.mean() - e_neg.mean()
    if l2 > 0:
        loss = loss + l2 * ((e_pos * e_pos).mean() + (e_neg * e_neg).mean())
    return loss


def frozen_energy(energy: Energy, x: Tensor) -> Tensor:
    """E_Ω(θ)(x): ``energy`` evaluated with detached copies of its parameters and buffers.

    The result depends on θ only through ``x`` (torch.func.functional_call), which is the
    Ω(θ) ("consider θ constant") of the paper's §4.2.
    """
    frozen = {name: p.detach() for name, p in energy.named_parameters()}
    frozen.update({name: b.detach() for name, b in energy.named_buffers()})
    return functional_call(energy, frozen, (x,))


def kl_loss(energy: Energy, x_diff: Tensor, *, sign: str = "du2020", entropy_weight: float = 0.0,
            reference: Tensor | None = None, entropy: str = "nn", k: int = 1,
            min_distance: float = 1e-8, groups: int = 1, check_finite: bool = True) -> Tensor:
    """The KL loss on differentiable chain outputs x̃ ~ q_θ^t (§4.2, §5.4.1).

    With Ĥ the entropy estimate of the x̃ (against ``reference`` when given) and w the
    ``entropy_weight``:

    * ``sign="du2020"``: loss = mean E_Ω(x̃) − w·Ĥ. At w = 1 this is KL[q_θ^t ‖ p_Ω] − log Z_Ω:
      minimising it *minimises* the KL (Du et al. 2020's published loss, the flipped sign, C23).
    * ``sign="cd"``:     loss = −mean E_Ω(x̃) + w·Ĥ. At w = 1 this is L_KL + log Z_Ω =
      −KL[q_θ^t ‖ p_Ω] + log Z_Ω: minimising it *maximises* the KL, as the CD gradient
      ∇L_CD = … − ∂/∂θ KL[q_θ^t ‖ p_Ω] requires (log Z_Ω has no gradient).

    Args:
        energy: E_θ; evaluated frozen (:func:`frozen_energy`), so θ is reached only via x̃.
        x_diff: chain ends with a graph to θ (``Negatives.x_diff`` of
            :func:`ebmref.negatives.sample_negatives`, or
            ``langevin(..., differentiable_steps≥1)``).
        entropy_weight: w ≥ 0 (Du et al. 2020: 0.3 with ``entropy="nn"``).
        reference: neighbours for the entropy estimate (Du: 100 replay-buffer samples);
            ``None`` uses the other points of ``x_diff``.
        entropy: ``"nn"`` Du's surrogate mean log NN distance (entropy/d up to a constant);
            ``"kl"`` the Kozachenko–Leonenko estimate in nats (:mod:`ebmref.entropy`).
        k: the neighbour order of the Kozachenko–Leonenko estimator (``entropy="kl"``), not the
            number of differentiated sampler steps (``KLConfig.differentiable_steps``).
        min_distance: floor on nearest-neighbour distances, so chains tied exactly (clamped
            to a box, or equal in float32) do not make the entropy term −∞.
        groups: for an ensemble of G members (:class:`ebmref.ensemble.EnsembleEnergy`) whose
            chains are G consecutive blocks of ``x_diff`` and ``reference``: the entropy of each
            block is estimated on its own; the loss is the mean of the members' losses.
        check_finite: non-finite chain ends raise ValueError (``False`` in the training loop,
            which checks them itself over all ranks).
    """
    check_choice(sign, "sign", KL_SIGNS)
    check_choice(entropy, "entropy", ENTROPY_ESTIMATORS)
    check_nonnegative(entropy_weight, "entropy_weight")
    check_int_range(k, "k", 1)
    if entropy == "nn" and k != 1:
        raise ValueError(f"k: the nearest-neighbour surrogate uses k = 1, got {k} "
                         "(use entropy='kl' for k > 1)")
    if not isinstance(x_diff, Tensor) or x_diff.ndim < 2 or x_diff.shape[0] == 0:
        raise ValueError(f"x_diff: expected chain states (B, ...), got shape "
                         f"{getattr(x_diff, 'shape', None)}")
    if check_finite:
        _finite(x_diff.detach(), "x_diff")
    if torch.is_grad_enabled() and not x_diff.requires_grad:
        # A detached x̃ gives the KL loss no gradient at all, silently (published code that
        # detaches the chain before the loss has this bug).
        raise ValueError("x_diff: carries no graph to θ; produce it with sample_negatives or "
                         "langevin(..., differentiable_steps >= 1)")
    e_term = frozen_energy(energy, x_diff).mean()
    if entropy_weight > 0:
        if entropy == "kl":
            h = kozachenko_leonenko(x_diff, k=k, reference=reference, min_distance=min_distance,
                                    groups=groups, check_finite=check_finite)
        else:
            h = nearest_neighbour_surrogate(x_diff, reference, min_distance=min_distance,
                                            groups=groups, check_finite=check_finite)
        value = e_term - entropy_weight * h
    else:
        value = e_term
    return value if sign == "du2020" else -value
