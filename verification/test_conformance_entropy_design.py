"""check_entropy's design and report, fast: the covariance of the documented targets, the power
assertions and their boundaries, the sets the estimator is called on (how many, in which
dimensions, float64, all a function of the seed), the report's title, seed, α split and design
line, and its argument errors.

The pilot (Kozachenko–Leonenko on 100 sets of 500 points per dimension) takes seconds, so most
tests replace ``entropy_pilot_sd`` by fixed design standard deviations; the estimator under test
is the plug-in Gaussian entropy ½ log det(2πe Ĉ), which is exactly equivariant under x → 2x
(Ĥ(2x) = Ĥ(x) + d log 2 up to rounding), so the scaling rows' values are known exactly.
"""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest
import torch

from ebmref.analytic import gaussian_entropy
from ebmref.conformance import UnderpoweredError, check_entropy, losses
from ebmref.conformance.losses import detectable_excess, entropy_covariance

F64 = torch.float64
SD_BIAS = 0.05  # stand-in design sd of Ĥ over sets (the KL estimator's is about 0.04)
REPS = 12  # > 10 sets: the scaling rows use 10, the bias rows 12


def plugin_entropy(x):
    """½ log det(2πe Ĉ) with Ĉ the sample covariance (ddof = 1)."""
    xc = x - x.mean(0)
    c = xc.T @ xc / (x.shape[0] - 1)
    return 0.5 * torch.logdet(2 * math.pi * math.e * c)


class Recorder:
    """The plug-in estimator, recording every input."""

    def __init__(self):
        self.inputs = []

    def __call__(self, x):
        self.inputs.append(x.clone())
        return plugin_entropy(x)


@pytest.fixture
def fixed_pilot(monkeypatch):
    """Design sds without the pilot run: SD_BIAS for Ĥ, 0 for Ĥ(2x) − Ĥ(x) (an exactly
    equivariant estimator)."""
    monkeypatch.setattr(losses, "entropy_pilot_sd",
                        lambda d, reps, scaled: 0.0 if scaled else SD_BIAS)


@pytest.mark.parametrize("d", [1, 2, 10])
def test_entropy_covariance_is_the_documented_design(d):
    """Variances log-spaced in [0.5, 4] and one correlation 0.4 (between the first two
    coordinates), symmetric; nothing else off the diagonal."""
    var = np.geomspace(0.5, 4.0, d)
    expected = np.diag(var)
    if d >= 2:
        expected[0, 1] = expected[1, 0] = 0.4 * math.sqrt(var[0] * var[1])
    np.testing.assert_allclose(entropy_covariance(d).numpy(), expected, rtol=1e-12, atol=0)


def test_bias_power_is_asserted_from_the_pilot():
    """5 sets cannot see a bias of tol + 0.1 nats (the default effect) at α/4 = 2.5e-7: refused
    before sampling, after the one probe call, naming the first bias row (real pilot)."""
    est = Recorder()
    with pytest.raises(UnderpoweredError, match=r"^underpowered: the bias row in d = 1 with 5 "
                       r"sets detects tol \+ [0-9.e+]+ nats, need tol \+ 0\.1$"):
        check_entropy(est, reps=5)
    assert len(est.inputs) == 1


def test_bias_power_boundary(fixed_pilot):
    """A design that detects exactly tol + effect is accepted; one ulp less effect is not."""
    delta = detectable_excess(SD_BIAS, REPS, 1e-6 / 4)
    assert len(check_entropy(plugin_entropy, reps=REPS, effect=delta).rows) == 4
    below = float(np.nextafter(delta, 0.0))
    with pytest.raises(UnderpoweredError, match=rf"^underpowered: the bias row in d = 1 with "
                       rf"{REPS} sets detects tol \+ {delta:.3g} nats, need tol \+ {below:g}$"):
        check_entropy(plugin_entropy, reps=REPS, effect=below)


def test_scaling_power_boundary(fixed_pilot):
    """The scaling rows must see the shift (d − 1)·log 2 beyond tol: with a detectable excess
    of 0 the largest tol allowed is log 2 (d = 2); a larger tol is refused."""
    assert len(check_entropy(plugin_entropy, reps=REPS, effect=1.0, tol=math.log(2.0)).rows) == 4
    with pytest.raises(UnderpoweredError,
                       match=r"^underpowered: the scaling row in d = 2 misses a missing factor d$"):
        check_entropy(plugin_entropy, reps=REPS, effect=1.0, tol=1.0)


def test_report_rows_and_the_sets_the_estimator_sees(fixed_pilot):
    """Rows: bias in d = 1, 2 (REPS sets of n = 500), scaling in d = 2, 10 (10 sets, each also
    doubled); α/4 each; the estimator sees float64 sets in d ∈ {1, 2, 10} only."""
    est = Recorder()
    report = check_entropy(est, alpha=1e-3, reps=REPS, effect=1.0, seed=3)
    assert (report.title, report.alpha, report.seed) == ("check_entropy", 1e-3, 3)
    assert [r.alpha for r in report.rows] == [1e-3 / 4] * 4
    assert [r.target.split(" (")[0] for r in report.rows] == [
        "N(0, C) in d = 1", "N(0, C) in d = 2", "scaling x → 2x in d = 2",
        "scaling x → 2x in d = 10"]
    probe, sets = est.inputs[0], est.inputs[1:]
    assert probe.shape[1] in (1, 2, 10)
    assert all(x.dtype == F64 for x in est.inputs)
    assert collections.Counter(tuple(x.shape) for x in sets) == {
        (500, 1): REPS, (500, 2): REPS + 10, (500, 10): 2 * 10}
    for row, d in zip(report.rows[:2], (1, 2)):
        # mean of 12 plug-in estimates, sd ≈ 0.013: off by 0.1 with probability < 1e-12
        assert abs(row.value - float(gaussian_entropy(entropy_covariance(d)))) < 0.1
    for row, d in zip(report.rows[2:], (2, 10)):
        assert row.value == pytest.approx(d * math.log(2.0), abs=1e-9)
    assert report.design[0].startswith(f"{REPS} sets for the bias rows, 10 for the scaling rows")


def test_everything_is_a_function_of_the_seed(fixed_pilot):
    """Two runs with the same seed call the estimator on the same sets and give the same
    report; no seed means seed 0."""
    runs = []
    for seed in (None, 0):
        est = Recorder()
        kwargs = {} if seed is None else {"seed": seed}
        runs.append((est.inputs, check_entropy(est, reps=REPS, effect=1.0, **kwargs)))
    (first, report), (second, again) = runs
    assert report.seed == again.seed == 0
    assert len(first) == len(second)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert [r.value for r in report.rows] == [r.value for r in again.rows]


@pytest.mark.parametrize("kwargs, message", [
    ({"alpha": 2.0}, r"^alpha: must lie in \[0, 1\], got 2\.0$"),
    ({"tol": -1.0}, r"^tol: must be a finite number >= 0, got -1\.0$"),
    ({"effect": -1.0}, r"^effect: must be a finite number >= 0, got -1\.0$"),
    ({"reps": 4}, r"^reps: must be an integer >= 5, got 4$"),
])
def test_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_entropy(plugin_entropy, **kwargs)


@pytest.mark.parametrize("estimator, message", [
    (5, r"^estimator: expected a callable, got int$"),
    (lambda x: "abc", r"^estimator: must return a number, got str$"),
    (lambda x: [1.0], r"^estimator: must return a number, got list$"),
])
def test_estimator_errors(estimator, message):
    with pytest.raises(ValueError, match=message):
        check_entropy(estimator)
