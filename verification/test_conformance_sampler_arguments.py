"""check_sampler's argument checks and power errors, each with its full message: the kind,
the callable, the noise rule of "decoupled" (needed there, positive, refused elsewhere), α,
scale, rel_error, per-target step_size / n_steps (a number or a mapping whose keys are the
kind's targets; a mapping of every target is accepted), the targets (the word "standard" or
distinct names of the kind), and the UnderpoweredError of a Gaussian and of a KS design.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from ebmref.conformance import UnderpoweredError, check_sampler
from ebmref.conformance.targets import double_well
from ebmref.stats import chi2_detectable_rel_error, ks_min_detectable

ULA_TARGETS = "('gauss2d', 'gauss20d')"


def ula(energy, x0, n_steps, step_size, generator):
    return x0


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "mala"}, "kind: must be one of ('exact', 'ula', 'decoupled'), got 'mala'"),
    ({"kind": "decoupled"}, "noise: kind='decoupled' needs the σ the sampler uses"),
    ({"kind": "decoupled", "noise": 0.0}, "noise: must be a finite number > 0, got 0.0"),
    ({"kind": "ula", "noise": 0.1},
     "noise: only for kind='decoupled' (eq. 1 has noise √λ), got 0.1"),
    ({"kind": "exact", "noise": 0.5},
     "noise: only for kind='decoupled' (eq. 1 has noise √λ), got 0.5"),
    ({"kind": "ula", "alpha": 1.5}, "alpha: must lie in [0, 1], got 1.5"),
    ({"kind": "ula", "scale": 0.0}, "scale: must be a finite number > 0, got 0.0"),
    ({"kind": "ula", "rel_error": -0.1}, "rel_error: must be a finite number > 0, got -0.1"),
    ({"kind": "ula", "min_moved": -0.5}, "min_moved: must lie in [0, 1], got -0.5"),
    ({"kind": "ula", "step_size": {"mixture2d": 0.1}},
     f"step_size: keys must be target names of kind='ula' {ULA_TARGETS}, got ['mixture2d']"),
    ({"kind": "ula", "n_steps": {"gauss2d": 3, "double_well": 2}},
     (f"n_steps: keys must be target names of kind='ula' {ULA_TARGETS}, "
      "got ['double_well', 'gauss2d']")),
    ({"kind": "ula", "targets": "all"},
     f"targets: 'standard' or a list of names from {ULA_TARGETS}, got 'all'"),
    ({"kind": "ula", "targets": []},
     f"targets: distinct names from {ULA_TARGETS} for kind='ula', got []"),
    ({"kind": "ula", "targets": ["gauss2d", "gauss2d"]},
     f"targets: distinct names from {ULA_TARGETS} for kind='ula', got ['gauss2d', 'gauss2d']"),
    ({"kind": "ula", "targets": ["mixture2d"]},
     f"targets: distinct names from {ULA_TARGETS} for kind='ula', got ['mixture2d']"),
    ({"kind": "ula", "step_size": -0.1}, "step_size: must be a finite number > 0, got -0.1"),
    ({"kind": "ula", "step_size": {"gauss2d": 0.0}},
     "step_size: must be a finite number > 0, got 0.0"),
    ({"kind": "ula", "n_steps": {"gauss2d": 0}}, "n_steps: must be an integer >= 1, got 0"),
    ({"kind": "ula", "n_steps": 2.0}, "n_steps: must be an integer >= 1, got 2.0"),
])
def test_check_sampler_argument_errors_word_for_word(kwargs, message):
    """Each bad argument raises ValueError with its full message, before any sampling."""
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_sampler(ula, **kwargs)


def test_a_non_callable_sampler_is_named_by_its_type():
    """fn must be callable; the message names the type of what was passed."""
    with pytest.raises(ValueError, match=r"^fn: expected a callable sampler, got int$"):
        check_sampler(3, kind="ula")
    with pytest.raises(ValueError, match=r"^fn: expected a callable sampler, got str$"):
        check_sampler("ula", kind="ula")


def test_mappings_over_every_target_of_the_kind_are_accepted():
    """A step_size / n_steps mapping may name every target of the kind (not only a subset);
    each target gets its own value."""
    calls = []

    def fn(energy, x0, n_steps, step_size, generator):
        calls.append((energy.dim, n_steps, step_size))
        return x0

    check_sampler(fn, kind="ula", step_size={"gauss2d": 0.3, "gauss20d": 0.25},
                  n_steps={"gauss2d": 2, "gauss20d": 3}, scale=0.1, rel_error=0.3)
    assert calls == [(2, 2, 0.3), (20, 3, 0.25)]


def test_underpowered_gaussian_design_message():
    """A Gaussian target whose χ² row cannot see rel_error: the message names the target, M,
    the detectable covariance error, the level α/m and the needed error, and the remedy."""
    r = chi2_detectable_rel_error(4000, 2, 1e-6 / 3)
    msg = (f"underpowered: gauss2d with 4000 chains detects only a {r:.2%} covariance error "
           "at level 3.3e-07, need 1.0% (raise scale or rel_error)")
    with pytest.raises(UnderpoweredError, match=f"^{re.escape(msg)}$"):
        check_sampler(ula, kind="ula", targets=["gauss2d"], scale=0.1, rel_error=0.01)


def test_underpowered_ks_design_message():
    """The double well's KS row: the message names M, the detectable KS distance at α/m, the
    dilation effect of rel_error (the KS distance to the law dilated about 0, computed here on
    a grid) and the remedy."""
    with pytest.raises(UnderpoweredError) as info:
        check_sampler(ula, kind="exact", targets=["double_well"], scale=0.01, rel_error=0.05)
    d_min = ks_min_detectable(1000, 1e-6 / 2)
    match = re.fullmatch(
        rf"underpowered: double_well with 1000 samples detects a KS distance ≥ {d_min:.4f} at "
        r"level 5e-07; a 5\.0% variance dilation is (0\.\d{4}) \(raise scale or rel_error\)",
        str(info.value))
    assert match is not None, str(info.value)
    well, t = double_well(), torch.linspace(-8.0, 8.0, 160_001, dtype=torch.float64)
    dist = float((well.cdf(t) - well.cdf(t / math.sqrt(1.05))).abs().max())
    assert float(match[1]) == pytest.approx(dist, abs=2e-4)


def test_a_mapping_may_leave_out_targets_which_keep_their_defaults():
    """A target missing from a step_size / n_steps mapping runs with its own default
    (gauss2d: 15 × 0.4, gauss20d: 10 × 0.4 for "ula")."""
    calls = []

    def fn(energy, x0, n_steps, step_size, generator):
        calls.append((energy.dim, n_steps, step_size))
        return x0

    check_sampler(fn, kind="ula", step_size={"gauss2d": 0.3}, n_steps={"gauss20d": 3},
                  scale=0.1, rel_error=0.3)
    assert calls == [(2, 15, 0.3), (20, 3, 0.4)]
