"""check_kl_loss's design, statistics and report, fast: the model and data laws against the
design the report prints, the "energy not frozen" shift against autograd, the power assertion
(_kl_power) and its boundary, the pilot's sd bound, the detectable excess and the tolerance
p-value against their defining equations, the tolerance tol·‖g*‖∞ at its boundary, the α split,
the report's title, seed and design lines, reproducibility from the seed, and the loss's output
and argument errors.

The pilot (ebmref's kl_loss over 40 batches) takes seconds, so the report tests replace
``kl_pilot_sd`` by small fixed design sds, and the loss under test has a known constant gradient
c·∂μ₁/∂θ (its batch estimates are all equal, so each gradient row's p-value is exactly 1 or 0).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from scipy import stats

from ebmref import gaussian_cd as gcd
from ebmref.conformance import UnderpoweredError, check_kl_loss, losses
from ebmref.conformance.losses import (
    PILOT_SEED,
    _kl_power,
    detectable_excess,
    kl_expected,
    kl_setup,
    sd_upper_bound,
    tolerance_pvalue,
)

F64 = torch.float64


def design_lines(sign, w, batches):
    """The design the report prints (check_kl_loss's docstring: 250 chains, t = 5 eq.-1 steps
    of λ = 0.2 from the data, all differentiable; s = −1 for cd, +1 for du2020)."""
    return [
        ("model N(μ, LLᵀ), μ = (0.3, −0.5), L = [[1.2, 0], [0.4, 0.7]]; data N((2, −1.5), "
         "[[0.8, 0.3], [0.3, 1.5]]); x̃: 250 chains × 5 eq.-1 steps of λ = 0.2 from the data, "
         "all differentiable"),
        (f"B = {batches} batches; g* = s·∂/∂θ(E_q[E_Ω] − w·H(q)), "
         f"s = {'−1' if sign == 'cd' else '+1'}, w = {w}"),
        (f"power from a pilot of ebmref's kl_loss (Kozachenko–Leonenko, k = 5; seed {PILOT_SEED}):"
         " a flipped sign and an unfrozen energy are each detected with probability ≥ 1 − 1e-3")]


def test_setup_is_the_printed_design():
    """kl_setup's θ and data law are the numbers the report's design line states, float64."""
    mu, tril, m_d, c_d = kl_setup()
    for t, values in ((mu, [0.3, -0.5]), (tril, [[1.2, 0.0], [0.4, 0.7]]), (m_d, [2.0, -1.5]),
                      (c_d, [[0.8, 0.3], [0.3, 1.5]])):
        assert t.dtype == F64 and torch.equal(t, torch.tensor(values, dtype=F64))


def test_unfrozen_shift_is_the_expected_energy_gradient():
    """``unfrozen`` = s·E_q[∇_θ E_θ] = s·∇_θ E_q[E_θ] with q held fixed (autograd here)."""
    mu, tril, m_d, c_d = kl_setup()
    mq, cq = gcd.chain_law(mu, tril, m_d, c_d, 5, "ula", 0.2)
    m, lo = mu.clone().requires_grad_(), tril.clone().requires_grad_()
    g_mu, g_l = torch.autograd.grad(gcd.expected_energy(m, lo, mq.detach(), cq.detach()), (m, lo))
    flat = torch.stack([g_mu[0], g_mu[1], g_l[0, 0], g_l[1, 0], g_l[1, 1]])
    for sign, s in (("cd", -1.0), ("du2020", 1.0)):
        assert torch.allclose(kl_expected(sign, 1.0)["unfrozen"], s * flat, rtol=1e-10, atol=1e-12)


def _power_message(name, shift, tol, delta):
    return re.escape(f"underpowered: the {name} shift {shift} exceeds tol + detectable "
                     f"{tol + delta} in no coordinate")


def test_kl_power_assertion_and_boundary():
    """The design must see a flipped sign (shift 2|g*|) and an unfrozen energy (shift
    |unfrozen|) beyond tol + detectable in at least one coordinate; a margin of exactly 0
    is enough."""
    tol = torch.tensor([0.5, 0.5], dtype=F64)
    exact = {"grad": torch.tensor([1.0, 0.1], dtype=F64),
             "unfrozen": torch.tensor([3.0, 0.0], dtype=F64)}
    _kl_power(exact, tol, np.array([1.5, 1.5]))  # 2·1 − 0.5 − 1.5 = 0: accepted
    short = {"grad": torch.tensor([0.5, 0.25], dtype=F64),
             "unfrozen": torch.tensor([3.0, 0.0], dtype=F64)}
    tol, delta = torch.tensor([0.1, 0.1], dtype=F64), np.array([0.95, 0.45])
    with pytest.raises(UnderpoweredError, match=_power_message(
            "flipped sign", np.array([1.0, 0.5]), np.array([0.1, 0.1]), delta)):
        _kl_power(short, tol, delta)
    frozen = {"grad": torch.tensor([3.0, 3.0], dtype=F64),
              "unfrozen": torch.tensor([0.5, 0.25], dtype=F64)}
    with pytest.raises(UnderpoweredError, match=_power_message(
            "energy not frozen", np.array([0.5, 0.25]), np.array([0.1, 0.1]), delta)):
        _kl_power(frozen, tol, delta)


def test_sd_upper_bound_formula():
    """s·√((B − 1)/χ²_{1−c}(B − 1)) per column of a (B, k) pilot."""
    est = np.random.default_rng(1).normal(size=(7, 3))
    s = est.std(axis=0, ddof=1)
    np.testing.assert_allclose(sd_upper_bound(est), s * np.sqrt(6 / stats.chi2.isf(0.999, 6)),
                               rtol=1e-12)
    np.testing.assert_allclose(sd_upper_bound(est, 0.9), s * np.sqrt(6 / stats.chi2.isf(0.9, 6)),
                               rtol=1e-12)


@pytest.mark.parametrize("sd, reps, alpha_per", [(0.3, 12, 1e-4), (0.05, 5, 2.5e-7)])
def test_detectable_excess_solves_the_power_equation(sd, reps, alpha_per):
    """δ with P(noncentral t(B − 1, δ√B/sd) > t_{α/2}(B − 1)) = 1 − β, β = 1e-3."""
    crit = stats.t.isf(alpha_per / 2, reps - 1)
    power = lambda d: stats.nct.sf(crit, reps - 1, d * math.sqrt(reps) / sd)
    delta = detectable_excess(sd, reps, alpha_per)
    assert power(delta) == pytest.approx(0.999, abs=1e-9)
    assert power(0.99 * delta) < 0.999
    assert detectable_excess(0.0, reps, alpha_per) == 0.0


def test_tolerance_pvalue_computes_in_float64():
    """float32 estimates give the p-value of their float64 values."""
    est = np.float32([0.1, 0.25, 0.4, 0.3, 0.33])
    assert tolerance_pvalue(est, 0.2, 0.01) == tolerance_pvalue(est.astype(np.float64), 0.2, 0.01)


class LinearLoss:
    """c·μ₁ + mean(x̃) (x̃ detached): gradient exactly c along μ₁, a value that depends on the
    samples; records the dtypes it is given."""

    def __init__(self, c):
        self.c, self.dtypes = c, set()

    def __call__(self, model, x_diff):
        self.dtypes |= {model.mu.dtype, x_diff.dtype}
        return self.c * model.mu[0] + x_diff.detach().mean()


@pytest.fixture
def fixed_pilot(monkeypatch):
    monkeypatch.setattr(losses, "kl_pilot_sd", lambda sign, w, b: (np.full(5, 1e-3), 1e-3))


def test_report_tolerance_alpha_and_design(fixed_pilot):
    """Rows: 5 gradients with null |E ĝ − g*| ≤ tol·‖g*‖∞ (float64; here at a gap between that
    tolerance and its float32 rounding) and the value (value_tol 0.1); α/6 each."""
    g_star = kl_expected("cd", 1.0)["grad"]
    t64 = 0.1 * float(g_star.abs().max())
    t32 = float(np.float32(t64))
    gap = 0.5 * (t64 + t32)
    loss = LinearLoss(float(g_star[0]) + gap)
    report = check_kl_loss(loss, alpha=1e-3, batches=5, seed=3)
    assert loss.dtypes == {F64}
    assert (report.title, report.alpha, report.seed) == (
        "check_kl_loss(sign='cd', entropy_weight=1)", 1e-3, 3)
    assert [r.alpha for r in report.rows] == [1e-3 / 6] * 6
    assert report.rows[0].p_value == (1.0 if gap <= t64 else 0.0)
    assert f"|E ĝ − g*| ≤ {t64:.3g}, t(B − 1)" in report.rows[0].statistic
    assert report.rows[5].statistic == "batch mean of the loss; |E v − v*| ≤ 0.1, t(B − 1)"
    assert report.design == design_lines("cd", 1, 5)
    du = check_kl_loss(loss, sign="du2020", entropy_weight=0.5, batches=6, seed=3)
    assert du.design == design_lines("du2020", 0.5, 6)


def test_report_is_a_function_of_the_seed(fixed_pilot):
    """Same seed, same batches (the value row averages the samples); no seed means 0."""
    runs = [check_kl_loss(LinearLoss(1.0), batches=5, **kw) for kw in ({}, {"seed": 0})]
    assert runs[0].seed == runs[1].seed == 0
    assert [r.value for r in runs[0].rows] == [r.value for r in runs[1].rows]


@pytest.mark.parametrize("output, message", [
    (lambda m, x: 1.0, r"^loss_fn: must return a scalar tensor, got float of shape None$"),
    (lambda m, x: torch.zeros(2, dtype=F64),
     r"^loss_fn: must return a scalar tensor, got Tensor of shape torch\.Size\(\[2\]\)$"),
])
def test_loss_output_errors(output, message, fixed_pilot):
    with pytest.raises(ValueError, match=message):
        check_kl_loss(output, batches=5)


@pytest.mark.parametrize("kwargs, message", [
    ({"alpha": 2.0}, r"^alpha: must lie in \[0, 1\], got 2\.0$"),
    ({"tol": -1.0}, r"^tol: must be a finite number >= 0, got -1\.0$"),
    ({"value_tol": -1.0}, r"^value_tol: must be a finite number >= 0, got -1\.0$"),
    ({"batches": 4}, r"^batches: must be an integer >= 5, got 4$"),
    ({"loss_fn": 5}, r"^loss_fn: expected a callable loss, got int$"),
])
def test_argument_errors(kwargs, message):
    kwargs = {"loss_fn": LinearLoss(1.0)} | kwargs
    with pytest.raises(ValueError, match=message):
        check_kl_loss(kwargs.pop("loss_fn"), **kwargs)
