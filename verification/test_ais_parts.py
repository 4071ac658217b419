"""The building blocks of ebmref.ais against their docstrings: ``schedule``'s three paths in
closed form (numpy), with their defaults (sigmoid, δ = 4, beta_min = 1e-4), K = 1 and the
validation of beta_min/sharpness/n_steps/kind; ``summarise_log_weights`` against numpy (and
when every weight is zero); ``AnnealedEnergy``'s sum (1 − β)E₀ + βE_θ, which does not evaluate
the target at β = 0 nor the base at β = 1, its box masks for multi-axis events, its float64
energy at β = 0 on a box; ``fit_gaussian`` on N = 2 rows, one column, and refused data."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from ebmref.ais import AnnealedEnergy, UniformBox, fit_gaussian, schedule, summarise_log_weights
from ebmref.energy import Energy, Gaussian

F64 = torch.float64


def _sigmoid_path(n: int, sharpness: float) -> np.ndarray:
    s = 1.0 / (1.0 + np.exp(-sharpness * (2.0 * np.arange(n + 1) / n - 1.0)))
    return (s - s[0]) / (s[-1] - s[0])


def test_schedules_in_closed_form():
    """linear k/K; geometric 0 then K values log-spaced from beta_min to 1; sigmoid σ(δ(2k/K −
    1)) rescaled to [0, 1]; float64, K + 1 values."""
    lin, geo, sig = schedule(5, "linear"), schedule(5, "geometric", beta_min=0.01), \
        schedule(6, "sigmoid", sharpness=2.5)
    for b, n in ((lin, 5), (geo, 5), (sig, 6)):
        assert b.dtype == F64 and b.shape == (n + 1,)
    assert lin.tolist() == pytest.approx([k / 5 for k in range(6)], abs=1e-15)
    assert geo.tolist() == pytest.approx([0.0, *np.logspace(-2.0, 0.0, 5)], rel=1e-13)
    assert sig.tolist() == pytest.approx(_sigmoid_path(6, 2.5).tolist(), abs=1e-14)


def test_schedule_defaults():
    """schedule(K) is the sigmoid path with δ = 4; the geometric path starts at 1e-4."""
    assert schedule(8).tolist() == pytest.approx(_sigmoid_path(8, 4.0).tolist(), abs=1e-14)
    assert schedule(4, "geometric").tolist() == pytest.approx(
        [0.0, *np.logspace(-4.0, 0.0, 4)], rel=1e-13)


@pytest.mark.parametrize("kind", ["linear", "geometric", "sigmoid"])
def test_one_step_schedule_is_zero_then_one(kind):
    """K = 1 is allowed for every kind: exactly [0, 1]."""
    assert schedule(1, kind).tolist() == [0.0, 1.0]


@pytest.mark.parametrize("kind", ["linear", "geometric", "sigmoid"])
def test_schedule_endpoints_are_exact(kind):
    """β₀ = 0 and β_K = 1 exactly, the inner values strictly between, for a long path."""
    b = schedule(997, kind)
    assert float(b[0]) == 0.0 and float(b[-1]) == 1.0
    assert bool((b[1:] > b[:-1]).all())


@pytest.mark.parametrize("call,msg", [
    (lambda: schedule(4, "geometric", beta_min=0.0), "beta_min: must lie in (0, 1), got 0.0"),
    (lambda: schedule(4, "geometric", beta_min=1.5), "beta_min: must lie in (0, 1), got 1.5"),
    (lambda: schedule(4, "geometric", beta_min=-0.1), "beta_min: must lie in (0, 1), got -0.1"),
    (lambda: schedule(4, "geometric", beta_min="0.1"), "beta_min: must lie in (0, 1), got '0.1'"),
    (lambda: schedule(4, "sigmoid", sharpness=-1.0),
     "sharpness: must be a finite number > 0, got -1.0"),
    (lambda: schedule(-2), "n_steps: must be an integer in [1, ∞], got -2"),
    (lambda: schedule(3.0), "n_steps: must be an integer in [1, ∞], got 3.0"),
    (lambda: schedule(3, "Linear"),
     "kind: must be one of ('linear', 'geometric', 'sigmoid'), got 'Linear'"),
])
def test_schedule_refusals_with_their_message(call, msg):
    """Each refused argument of schedule, with the full message."""
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        call()


def test_schedule_checks_only_the_options_of_its_kind():
    """beta_min is read by the geometric path only, sharpness by the sigmoid path only."""
    assert schedule(2, "linear", beta_min=5.0, sharpness=-1.0).tolist() == [0.0, 0.5, 1.0]
    assert schedule(2, "sigmoid", beta_min=5.0).tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert schedule(1, "geometric", sharpness=-1.0).tolist() == [0.0, 1.0]


def test_summarise_log_weights_against_numpy():
    """log mean w, sd(w/mean w)/√N (sample sd) and (Σw)²/Σw², for unequal weights."""
    lw = np.array([0.3, -1.2, 2.5, 0.0, -0.7, 1.1])
    w = np.exp(lw)
    wn = w / w.mean()
    lme, se, ess = summarise_log_weights(torch.tensor(lw, dtype=torch.float32))
    lme64, se64, ess64 = summarise_log_weights(torch.tensor(lw))
    assert lme64 == pytest.approx(math.log(w.mean()), rel=1e-14)
    assert se64 == pytest.approx(wn.std(ddof=1) / math.sqrt(6), rel=1e-13)
    assert ess64 == pytest.approx(w.sum() ** 2 / (w * w).sum(), rel=1e-13)
    assert (lme, se, ess) == pytest.approx((lme64, se64, ess64), rel=1e-6)


def test_summarise_when_every_weight_is_zero():
    """All log-weights −∞: log mean = −∞, no standard error (NaN) and an ESS of 0."""
    lme, se, ess = summarise_log_weights(torch.full((4,), -math.inf, dtype=F64))
    assert lme == -math.inf and math.isnan(se) and ess == 0.0


class _Exploding(Energy):
    """An energy that must not be called."""

    event_shape = (2,)

    def forward(self, x):
        raise AssertionError("evaluated")


def _mix():
    target = Gaussian([1.0, -0.5], [[0.6, 0.1], [0.1, 0.3]], dtype=F64)
    base = Gaussian([0.0, 0.2], [[2.0, 0.3], [0.3, 1.5]], dtype=F64)
    x = torch.tensor([[0.1, 0.2], [1.5, -1.0], [-2.0, 0.7]], dtype=F64)
    return target, base, x


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_annealed_energy_is_the_weighted_sum(beta):
    """E_β = (1 − β)E₀ + βE_θ and ∇E_β = (1 − β)∇E₀ + β∇E_θ, with the closed-form Gaussian
    gradients P(x − μ); the increment is E_θ − E₀ at every β."""
    target, base, x = _mix()
    path = AnnealedEnergy(base, target, beta)
    e0, et = base(x).detach(), target(x).detach()
    g0 = (x - base.mu.detach()) @ torch.linalg.inv(base.covariance.detach())
    gt = (x - target.mu.detach()) @ torch.linalg.inv(target.covariance.detach())
    e, g = path.energy_and_grad(x)
    torch.testing.assert_close(path(x), (1 - beta) * e0 + beta * et, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(e, (1 - beta) * e0 + beta * et, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(g, (1 - beta) * g0 + beta * gt, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(path.log_ratio_increment(x), et - e0, rtol=1e-13, atol=1e-13)


def test_annealed_energy_starts_at_the_base():
    """Without beta the path is at β = 0: its energy is the base's."""
    target, base, x = _mix()
    path = AnnealedEnergy(base, target)
    assert path.beta == 0.0
    torch.testing.assert_close(path(x), base(x).detach(), rtol=0, atol=0)


def test_annealed_energy_skips_the_energy_of_weight_zero():
    """At β = 0 the target is not evaluated, at β = 1 the base is not (so 0 · ∞ never
    occurs); the energy and gradient are those of the other end."""
    target, base, x = _mix()
    at0 = AnnealedEnergy(base, _Exploding(), 0.0)
    at1 = AnnealedEnergy(_ExplodingBase(base), target, 1.0)
    torch.testing.assert_close(at0(x), base(x).detach(), rtol=0, atol=0)
    torch.testing.assert_close(at0.energy_and_grad(x)[1], base.grad(x), rtol=0, atol=0)
    torch.testing.assert_close(at1(x), target(x).detach(), rtol=0, atol=0)
    torch.testing.assert_close(at1.energy_and_grad(x)[1], target.grad(x), rtol=0, atol=0)


class _ExplodingBase(Gaussian):
    """A Gaussian base whose energy must not be called."""

    def __init__(self, like: Gaussian):
        super().__init__(like.mu.detach(), like.covariance.detach(), dtype=F64)

    def forward(self, x):
        raise AssertionError("evaluated")

    def energy_and_grad(self, x, create_graph=False):
        raise AssertionError("evaluated")


def test_box_path_at_beta_zero_is_zero_inside_infinite_outside():
    """With a box base and β = 0 no energy is evaluated: E = 0 inside, +∞ outside, in the
    dtype of x, gradient 0."""
    box = UniformBox(0.0, 1.0, (2,), dtype=F64)
    path = AnnealedEnergy(box, _Exploding(), 0.0)
    x = torch.tensor([[0.5, 0.5], [1.5, 0.5], [0.0, 1.0]], dtype=F64)
    e, g = path.energy_and_grad(x)
    for out in (e, path(x)):
        assert out.dtype == F64 and out.tolist() == [0.0, math.inf, 0.0]
    assert torch.equal(g, torch.zeros_like(x))


def test_box_path_masks_rows_of_a_multi_axis_event():
    """Event (2, 2), three particles, the middle one outside: its energy is +∞ and its whole
    gradient 0; the others get β∇E_θ (E_θ = ½‖x − 0.3‖²)."""
    class Quad(Energy):
        event_shape = (2, 2)

        def forward(self, x):
            return 0.5 * ((x - 0.3) ** 2).flatten(1).sum(1)

    box = UniformBox(0.0, 1.0, (2, 2), dtype=F64)
    x = torch.tensor([[[0.1, 0.9], [0.5, 0.2]], [[0.1, 1.9], [0.5, 0.2]],
                      [[0.8, 0.0], [1.0, 0.4]]], dtype=F64)
    e, g = AnnealedEnergy(box, Quad(), 0.4).energy_and_grad(x)
    want_e = 0.4 * 0.5 * ((x - 0.3) ** 2).flatten(1).sum(1)
    assert e[1] == math.inf and e[[0, 2]].tolist() == pytest.approx(want_e[[0, 2]].tolist())
    assert torch.equal(g[1], torch.zeros(2, 2, dtype=F64))
    torch.testing.assert_close(g[[0, 2]], 0.4 * (x[[0, 2]] - 0.3), rtol=1e-14, atol=1e-15)


def test_fit_gaussian_on_two_rows_and_on_one_column():
    """N = 2 rows are enough (mean and unbiased covariance of numpy); one column gives a 1-D
    Gaussian; inflate and jitter enter as inflate²·cov + jitter·I."""
    x = torch.tensor([[1.0, 2.0, -1.0], [3.0, -2.0, 0.5]], dtype=F64)
    g = fit_gaussian(x, inflate=1.5, jitter=0.25)
    assert g.mu.detach().tolist() == pytest.approx([2.0, 0.0, -0.25])
    want = 2.25 * np.cov(x.numpy().T) + 0.25 * np.eye(3)
    np.testing.assert_allclose(g.covariance.detach().numpy(), want, rtol=1e-12, atol=1e-14)
    col = torch.tensor([[0.5], [1.5], [4.0], [-1.0]], dtype=F64)
    g1 = fit_gaussian(col, jitter=0.1)
    assert g1.event_shape == (1,) and g1.mu.dtype == F64
    want1 = float(np.var(col.numpy(), ddof=1)) + 0.1
    assert float(g1.covariance.detach()[0, 0]) == pytest.approx(want1, rel=1e-13)


@pytest.mark.parametrize("data,got", [
    (torch.zeros(5), "(5,)"), (torch.zeros(4, 2, 1), "(4, 2, 1)"), (torch.zeros(1, 3), "(1, 3)"),
])
def test_fit_gaussian_refuses_data_that_is_not_a_table_of_rows(data, got):
    """1-D or 3-D data, or one row: refused with the shape."""
    with pytest.raises(ValueError, match=rf"^data: expected a tensor \(N, d\) with N >= 2, got "
                                         rf"{re.escape(got)}$"):
        fit_gaussian(data)


def test_fit_gaussian_refuses_a_bad_jitter_with_its_name():
    """jitter must be a finite number > 0 (checked after inflate)."""
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    with pytest.raises(ValueError, match=r"^jitter: must be a finite number > 0, got -1\.0$"):
        fit_gaussian(x, jitter=-1.0)
    with pytest.raises(ValueError, match=r"^inflate: must be a finite number > 0, got inf$"):
        fit_gaussian(x, inflate=math.inf, jitter=-1.0)
