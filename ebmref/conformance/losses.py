"""check_kl_loss and check_entropy: a user's KL auxiliary loss (paper §5.4.1–5.4.2, claim C23)
and entropy estimator (§5.4.3, claim C25) against closed forms on Gaussians.

Both use batch-means tests with a tolerance: B independent batches give B iid estimates
ĝ₁ … ĝ_B of a quantity whose exact value g* is known; the composite null |E ĝ − g*| ≤ tol
(tol allows a consistent estimator's finite-sample bias) is tested by the Student statistic
T = max(|ḡ − g*| − tol, 0)/(s/√B), p = 2·P(t_{B−1} ≥ T) (valid on the whole null, exact at
its boundary up to the normal approximation of each batch mean). When all B estimates are
equal (s = 0) the test is decided exactly: p = 1 if |ḡ − g*| ≤ tol, else 0.

Power is computed from the design, never from the sample under test: a pilot run of ebmref's
own estimator (Kozachenko–Leonenko) with its own fixed seed gives an upper 1 − 1e-3
confidence bound on the batch standard deviation; the ``detectable`` column is the excess
over tol that the noncentral t detects with probability ≥ 1 − β (β = 1e-3) at that sd.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
from scipy import optimize, stats
from torch import Tensor

from ebmref import gaussian_cd as gcd
from ebmref.analytic import gaussian_entropy
from ebmref.conformance.report import Report, Row, make_generator
from ebmref.energy import Energy, Gaussian
from ebmref.entropy import kozachenko_leonenko
from ebmref.objectives import kl_loss
from ebmref.samplers import langevin
from ebmref.stats import ALPHA, BETA, UnderpoweredError
from ebmref.validation import check_choice, check_nonnegative, check_probability

F64 = torch.float64
PILOT_SEED = 20_250_118  # the pilots' own generator: fixed, independent of the tested sample
KL_SIGNS = ("cd", "du2020")
KL_T, KL_STEP, KL_CHAINS, KL_BATCHES, KL_PILOT_K = 5, 0.2, 250, 40, 5
PARAM_NAMES = ("∂/∂μ₁", "∂/∂μ₂", "∂/∂L₁₁", "∂/∂L₂₁", "∂/∂L₂₂")
ENTROPY_N, ENTROPY_REPS, SCALING_REPS = 500, 100, 10
BIAS_DIMS, SCALING_DIMS = (1, 2), (2, 10)


def tolerance_pvalue(est: np.ndarray, target: float, tol: float) -> float:
    """p of the composite null |E est − target| ≤ tol from B iid estimates (module docstring)."""
    est = np.asarray(est, dtype=np.float64)
    if not np.isfinite(est).all():
        return math.nan
    gap = abs(float(est.mean()) - target) - tol
    se = float(est.std(ddof=1)) / math.sqrt(len(est))
    if se == 0.0:
        return 1.0 if gap <= 0 else 0.0
    return float(min(1.0, 2.0 * stats.t.sf(max(gap, 0.0) / se, len(est) - 1)))


def detectable_excess(sd: float, reps: int, alpha_per: float, beta: float = BETA) -> float:
    """Smallest excess δ over tol that the tolerance t-test (level ``alpha_per``, B = ``reps``)
    detects with probability ≥ 1 − β when the estimates have standard deviation ``sd``."""
    if sd == 0.0:
        return 0.0
    crit = stats.t.isf(alpha_per / 2, reps - 1)
    power = lambda delta: stats.nct.sf(crit, reps - 1, delta * math.sqrt(reps) / sd)
    hi = sd * (crit + 10.0) / math.sqrt(reps)
    while power(hi) < 1 - beta:  # few degrees of freedom: heavy tails, widen the bracket
        hi *= 2.0
    return float(optimize.brentq(lambda d: power(d) - (1 - beta), 1e-12 * sd, hi))


def sd_upper_bound(est: np.ndarray, confidence: float = 1 - 1e-3) -> np.ndarray:
    """One-sided upper confidence bound s·√((B − 1)/χ²_{1−c}(B − 1)) on the sd of a pilot."""
    b = est.shape[0]
    return est.std(0, ddof=1) * math.sqrt((b - 1) / stats.chi2.ppf(1 - confidence, b - 1))


# ----------------------------------------------------------------------------- KL loss


def kl_setup() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """θ = (μ, L) of the model N(μ, LLᵀ) and the data law N(m_d, C_d), offset from the model
    so that the KL term is large."""
    return (torch.tensor([0.3, -0.5], dtype=F64), torch.tensor([[1.2, 0.0], [0.4, 0.7]], dtype=F64),
            torch.tensor([2.0, -1.5], dtype=F64), torch.tensor([[0.8, 0.3], [0.3, 1.5]], dtype=F64))


def _flat(g_mu: Tensor, g_l: Tensor) -> Tensor:
    rows, cols = torch.tril_indices(2, 2)
    return torch.cat([g_mu.reshape(-1), g_l[rows, cols]])


def kl_expected(sign: str, entropy_weight: float) -> dict[str, Tensor | float]:
    """Closed forms at θ (t eq.-1 steps of size λ from the data, q_θ^t Gaussian):
    ``grad`` = s·∂/∂θ(E_{q_θ}[E_Ω] − w·H(q_θ)) with s = +1 (du2020) or −1 (cd), which at w = 1
    is s·∂/∂θ KL[q_θ^t ‖ p_Ω]; ``value`` = s·(E_q[E_Ω] − w·H(q)); ``unfrozen`` = the shift a
    loss that does not freeze E adds, s·E_q[∇_θ E_θ]."""
    mu, tril, m_d, c_d = kl_setup()
    s = 1.0 if sign == "du2020" else -1.0

    def f(m: Tensor, lo: Tensor) -> Tensor:
        mq, cq = gcd.chain_law(m, lo, m_d, c_d, KL_T, "ula", KL_STEP)
        return s * (gcd.expected_energy(m.detach(), lo.detach(), mq, cq)
                    - entropy_weight * gaussian_entropy(cq))

    with torch.no_grad():
        mq, cq = gcd.chain_law(mu, tril, m_d, c_d, KL_T, "ula", KL_STEP)
        unfrozen = s * _flat(*gcd.expected_energy_grad(mu, tril, mq, cq))
        value = float(f(mu, tril))
    return {"grad": _flat(*gcd.autograd_of(f, mu, tril)), "value": value, "unfrozen": unfrozen}


def kl_batches(loss_fn: Callable[[Energy, Tensor], Tensor], batches: int,
               generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(gradients (B, 5), values (B,)) of ``loss_fn(model, x̃)`` on B independent batches of
    x̃: t eq.-1 steps of size λ on the model from data samples, every step differentiable."""
    mu, tril, m_d, c_d = kl_setup()
    model = Gaussian(mu, tril @ tril.T, dtype=F64)
    data = Gaussian(m_d, c_d, dtype=F64)
    params = (model.mu, model.scale_tril)
    grads, values = [], []
    for _ in range(batches):
        x_diff = langevin(model, data.sample(KL_CHAINS, generator), KL_T, KL_STEP,
                          generator=generator, differentiable_steps=KL_T).x
        loss = loss_fn(model, x_diff)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError(f"loss_fn: must return a scalar tensor, got "
                             f"{type(loss).__name__} of shape {getattr(loss, 'shape', None)}")
        if loss.requires_grad:
            g = torch.autograd.grad(loss.reshape(()), params, allow_unused=True)
            g = [torch.zeros_like(p) if gi is None else gi for gi, p in zip(g, params)]
        else:  # no graph to θ at all: the loss gives no gradient (a detached x̃)
            g = [torch.zeros_like(p) for p in params]
        grads.append(_flat(*g).detach())
        values.append(float(loss.detach()))
    return torch.stack(grads).numpy(), np.array(values)


@functools.cache
def kl_pilot_sd(sign: str, entropy_weight: float, batches: int) -> tuple[np.ndarray, float]:
    """Design sd bounds of the batch gradients and values: ebmref's ``kl_loss`` (Kozachenko–
    Leonenko, k = 5) over ``batches`` batches drawn with the pilot's own seed."""
    def ref(model: Energy, x: Tensor) -> Tensor:
        return kl_loss(model, x, sign=sign, entropy_weight=entropy_weight, entropy="kl",
                       k=KL_PILOT_K)
    g, v = kl_batches(ref, batches, torch.Generator().manual_seed(PILOT_SEED))
    return sd_upper_bound(g), float(sd_upper_bound(v[:, None])[0])


def _kl_design(sign: str, entropy_weight: float, batches: int) -> list[str]:
    model = ("model N(μ, LLᵀ), μ = (0.3, −0.5), L = [[1.2, 0], [0.4, 0.7]]; data "
             f"N((2, −1.5), [[0.8, 0.3], [0.3, 1.5]]); x̃: {KL_CHAINS} chains × {KL_T} eq.-1 "
             f"steps of λ = {KL_STEP} from the data, all differentiable")
    law = (f"B = {batches} batches; g* = s·∂/∂θ(E_q[E_Ω] − w·H(q)), "
           f"s = {'−1' if sign == 'cd' else '+1'}, w = {entropy_weight:g}")
    power = (f"power from a pilot of ebmref's kl_loss (Kozachenko–Leonenko, k = {KL_PILOT_K}; "
             f"seed {PILOT_SEED}): a flipped sign and an unfrozen energy are each detected "
             "with probability ≥ 1 − 1e-3")
    return [model, law, power]


def _kl_power(expected: dict, tol: Tensor, delta: np.ndarray) -> None:
    """Assert that the design catches the two errors C23 is about: a flipped sign (shift
    2|g*|) and an energy that is not frozen (shift s·E_q[∇_θE_θ]), in at least one
    coordinate each, with probability ≥ 1 − β."""
    for name, shift in (("flipped sign", 2.0 * expected["grad"].abs()),
                        ("energy not frozen", expected["unfrozen"].abs())):
        margin = (shift - tol).numpy() - delta
        if not (margin >= 0).any():
            raise UnderpoweredError(f"underpowered: the {name} shift {shift.numpy()} exceeds "
                                    f"tol + detectable {(tol.numpy() + delta)} in no coordinate")


def check_kl_loss(loss_fn: Callable[[Energy, Tensor], Tensor], *, sign: str = "cd",
                  entropy_weight: float = 1.0, alpha: float = ALPHA, tol: float = 0.1,
                  value_tol: float = 0.1, batches: int = KL_BATCHES,
                  seed: int | torch.Generator = 0) -> Report:
    """Check a KL auxiliary loss ``loss_fn(energy, x_diff) → scalar`` (claim C23).

    Design: model p_θ = N(μ, LLᵀ) (:func:`kl_setup`), data N(m_d, C_d); each of ``batches``
    (40) batches runs 250 chains from the data for t = 5 eq.-1 steps of λ = 0.2 with every step
    differentiable (``langevin(..., differentiable_steps=5)``), giving x̃ ~ q_θ^t with a graph
    to θ, and records ∇_θ loss and the loss value. The chain law is Gaussian, so the exact
    answer is known (:func:`kl_expected`): with s = −1 for ``sign="cd"`` (minimising the loss
    *maximises* KL[q_θ^t ‖ p_Ω], the term ∇L_CD needs) or +1 for ``"du2020"`` (the published
    loss), g* = s·∂/∂θ(E_q[E_Ω] − w·H(q_θ)), at w = 1 exactly s·∂/∂θ KL[q_θ^t ‖ p_Ω].

    Rows: one per coordinate of θ = (μ₁, μ₂, L₁₁, L₂₁, L₂₂), null |E ĝⱼ − g*ⱼ| ≤ tol·‖g*‖∞
    (the allowance for an entropy estimator's bias, default 10 %), and the value, null
    |E v − s·(E_q[E_Ω] − w·H(q))| ≤ ``value_tol`` nats; α split evenly over the 6 rows. Power
    (asserted, from a pilot of ebmref's ``kl_loss`` with its own seed): a flipped sign and an
    energy that is not frozen are each detected with probability ≥ 1 − 1e-3.
    """
    check_choice(sign, "sign", KL_SIGNS)
    check_nonnegative(entropy_weight, "entropy_weight")
    check_probability(alpha, "alpha")
    check_nonnegative(tol, "tol")
    check_nonnegative(value_tol, "value_tol")
    if not (isinstance(batches, int) and not isinstance(batches, bool) and batches >= 5):
        raise ValueError(f"batches: must be an integer >= 5, got {batches!r}")
    if not callable(loss_fn):
        raise ValueError(f"loss_fn: expected a callable loss, got {type(loss_fn).__name__}")
    generator, recorded = make_generator(seed)
    alpha_per = alpha / (len(PARAM_NAMES) + 1)
    expected = kl_expected(sign, float(entropy_weight))
    tol_abs = torch.full((len(PARAM_NAMES),), tol * float(expected["grad"].abs().max()), dtype=F64)
    sd_g, sd_v = kl_pilot_sd(sign, float(entropy_weight), batches)
    delta = np.array([detectable_excess(float(s), batches, alpha_per) for s in sd_g])
    _kl_power(expected, tol_abs, delta)
    grads, values = kl_batches(loss_fn, batches, generator)
    report = Report(f"check_kl_loss(sign={sign!r}, entropy_weight={entropy_weight:g})", alpha,
                    recorded)
    for j, name in enumerate(PARAM_NAMES):
        g_star, t_j = float(expected["grad"][j]), float(tol_abs[j])
        report.rows.append(Row(f"gradient {name} (g* = {g_star:.4g})",
                               f"batch mean of ĝ {name}; |E ĝ − g*| ≤ {t_j:.3g}, t(B − 1)",
                               float(grads[:, j].mean()),
                               tolerance_pvalue(grads[:, j], g_star, t_j), alpha_per,
                               f"|E ĝ − g*| ≥ {t_j:.3g} + {delta[j]:.3g}"))
    v_star = float(expected["value"])
    report.rows.append(Row(f"value (v* = {v_star:.4g} nats)",
                           f"batch mean of the loss; |E v − v*| ≤ {value_tol:g}, t(B − 1)",
                           float(values.mean()), tolerance_pvalue(values, v_star, value_tol),
                           alpha_per, f"|E v − v*| ≥ {value_tol:g} + "
                           f"{detectable_excess(sd_v, batches, alpha_per):.3g}"))
    report.design += _kl_design(sign, entropy_weight, batches)
    return report


# ----------------------------------------------------------------------------- entropy


def entropy_covariance(d: int) -> Tensor:
    """An anisotropic covariance: variances log-spaced in [0.5, 4], one correlation 0.4."""
    c = torch.diag(torch.logspace(math.log10(0.5), math.log10(4.0), d, dtype=F64))
    if d >= 2:
        c[0, 1] = c[1, 0] = 0.4 * math.sqrt(float(c[0, 0] * c[1, 1]))
    return c


def entropy_estimates(estimator: Callable[[Tensor], Tensor | float], d: int, reps: int,
                      n_scaled: int, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(Ĥ(xᵢ) for i < max(``reps``, ``n_scaled``), Ĥ(2xᵢ) for i < ``n_scaled``) over
    independent sets xᵢ of n = 500 points of N(0, C_d) (:func:`entropy_covariance`)."""
    chol = torch.linalg.cholesky(entropy_covariance(d))
    h, h2 = [], []
    for i in range(max(reps, n_scaled)):
        x = torch.randn(ENTROPY_N, d, generator=generator, dtype=F64) @ chol.T
        h.append(_entropy_value(estimator, x))
        if i < n_scaled:
            h2.append(_entropy_value(estimator, 2.0 * x))
    return np.array(h), np.array(h2)


def _entropy_value(estimator: Callable[[Tensor], Tensor | float], x: Tensor) -> float:
    value = estimator(x)
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"estimator: must return a scalar, got shape {tuple(value.shape)}")
        value = value.detach().reshape(())
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"estimator: must return a number, got {type(value).__name__}") from None


@functools.cache
def entropy_pilot_sd(d: int, reps: int, scaled: bool) -> float:
    """Design sd bound of Ĥ (``scaled=False``) or of Ĥ(2x) − Ĥ(x) (``True``) for the
    Kozachenko–Leonenko estimator (k = 1) over ``reps`` sets, from the pilot's own seed."""
    h, h2 = entropy_estimates(kozachenko_leonenko, d, reps, reps if scaled else 0,
                              torch.Generator().manual_seed(PILOT_SEED + d))
    return float(sd_upper_bound(((h2 - h) if scaled else h)[:, None])[0])


def _entropy_power(reps: int, n_scaled: int, alpha_per: float, effect: float,
                   tol: float) -> dict[tuple[str, int], float]:
    """Detectable excesses over tol per row, asserting the design's power: a bias of
    tol + ``effect`` nats in d = 1, 2, and a missing factor d in Ĥ(2x) − Ĥ(x) (a shift of
    (d − 1)·log 2) in d = 2, 10, each detected with probability ≥ 1 − 1e-3."""
    out = {}
    for d in BIAS_DIMS:
        delta = detectable_excess(entropy_pilot_sd(d, reps, False), reps, alpha_per)
        if delta > effect:
            raise UnderpoweredError(f"underpowered: the bias row in d = {d} with {reps} sets "
                                    f"detects tol + {delta:.3g} nats, need tol + {effect:g}")
        out["bias", d] = delta
    for d in SCALING_DIMS:
        delta = detectable_excess(entropy_pilot_sd(d, n_scaled, True), n_scaled, alpha_per)
        if delta > (d - 1) * math.log(2.0) - tol:
            raise UnderpoweredError(f"underpowered: the scaling row in d = {d} misses a "
                                    "missing factor d")
        out["scaling", d] = delta
    return out


def check_entropy(estimator: Callable[[Tensor], Tensor | float], *, alpha: float = ALPHA,
                  tol: float = 0.03, effect: float = 0.1, reps: int = ENTROPY_REPS,
                  seed: int | torch.Generator = 0) -> Report:
    """Check an entropy estimator ``estimator(x (N, d) float64) → Ĥ`` in nats (claim C25).

    Rows (α split evenly over 4):

    * bias, d = 1 and 2: ``reps`` (100) independent sets of n = 500 points of N(0, C_d)
      (anisotropic, :func:`entropy_covariance`), null |E Ĥ − H| ≤ ``tol`` (0.03 nats) with
      H = ½ log((2πe)^d det C_d); power asserted for a bias of tol + ``effect`` (0.1) nats;
    * scaling, d = 2 and 10: H(2X) = H(X) + d·log 2 exactly, so on 10 sets the differences
      Δ = Ĥ(2x) − Ĥ(x) are tested against d·log 2 (null |E Δ − d log 2| ≤ tol); power
      asserted for a missing factor d (an estimator scaling by log 2 in every dimension, as
      the mean log nearest-neighbour distance does, shifts Δ by (d − 1)·log 2).

    Powers come from a pilot of ebmref's Kozachenko–Leonenko estimator (k = 1, own seed).
    """
    check_probability(alpha, "alpha")
    check_nonnegative(tol, "tol")
    check_nonnegative(effect, "effect")
    if not (isinstance(reps, int) and not isinstance(reps, bool) and reps >= 5):
        raise ValueError(f"reps: must be an integer >= 5, got {reps!r}")
    if not callable(estimator):
        raise ValueError(f"estimator: expected a callable, got {type(estimator).__name__}")
    generator, recorded = make_generator(seed)
    # One call on a fixed small set first: an estimator that cannot run fails before the pilot.
    _entropy_value(estimator, torch.randn(20, 2, generator=torch.Generator().manual_seed(0),
                                          dtype=F64))
    n_scaled = min(reps, SCALING_REPS)
    alpha_per = alpha / (len(BIAS_DIMS) + len(SCALING_DIMS))
    deltas = _entropy_power(reps, n_scaled, alpha_per, effect, tol)
    report = Report("check_entropy", alpha, recorded)
    for d in sorted(set(BIAS_DIMS) | set(SCALING_DIMS)):
        h, h2 = entropy_estimates(estimator, d, reps if d in BIAS_DIMS else 0,
                                  n_scaled if d in SCALING_DIMS else 0, generator)
        if d in BIAS_DIMS:
            truth = float(gaussian_entropy(entropy_covariance(d)))
            report.rows.append(Row(f"N(0, C) in d = {d} (H = {truth:.4f})",
                                   f"mean Ĥ over {reps} sets of n = {ENTROPY_N}; |E Ĥ − H| ≤ "
                                   f"{tol:g}, t(B − 1)", float(h.mean()),
                                   tolerance_pvalue(h, truth, tol), alpha_per,
                                   f"|bias| ≥ {tol:g} + {deltas['bias', d]:.3g} nats"))
        if d in SCALING_DIMS:
            shift = d * math.log(2.0)
            diff = h2 - h[:n_scaled]
            report.rows.append(Row(f"scaling x → 2x in d = {d} (d·log 2 = {shift:.4f})",
                                   f"mean of Ĥ(2x) − Ĥ(x) over {n_scaled} sets; |E Δ − d log 2|"
                                   f" ≤ {tol:g}, t(B − 1)", float(diff.mean()),
                                   tolerance_pvalue(diff, shift, tol), alpha_per,
                                   f"|E Δ − d log 2| ≥ {tol:g} + {deltas['scaling', d]:.3g}"))
    report.design.append(f"{reps} sets for the bias rows, {n_scaled} for the scaling rows; "
                         f"pilot: Kozachenko–Leonenko k = 1, seed {PILOT_SEED} + d")
    return report
