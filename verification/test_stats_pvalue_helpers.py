"""p-value and power helpers of ebmref.stats against scipy in float64: ``normal_pvalues`` on
float32 inputs, ``z_detectable`` / ``z_test_power`` (closed form, boundary included),
``dkwm_epsilon``'s range, and ``assert_pvalues``' Bonferroni boundary and full message."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from scipy import stats

from ebmref.stats import assert_pvalues, dkwm_epsilon, normal_pvalues, z_detectable, z_test_power


def test_normal_pvalues_are_computed_in_float64_for_any_input():
    """z = (estimate − expected)/se and p = 2Φ(−|z|) in float64, also for float32 tensors and
    float32 numpy arrays (1/3 is not a float32 number)."""
    want = 2 * stats.norm.sf(np.array([1.0, 2.0, 0.5]) / 3.0)
    for cast in (lambda v: torch.tensor(v, dtype=torch.float32),
                 lambda v: np.asarray(v, dtype=np.float32)):
        p = normal_pvalues(cast([1.0, -2.0, 0.5]), cast([0.0, 0.0, 0.0]), cast([3.0, 3.0, 3.0]))
        assert p.dtype == np.float64
        assert p.tolist() == pytest.approx(want.tolist(), rel=1e-14)


def test_z_detectable_and_z_test_power_closed_form_and_boundary():
    """Smallest detectable shift (z_{1−α/2} + z_{1−β})·se per entry; an effect exactly at it is
    detected (≥), one 0.1 % below is not."""
    se = np.array([1.0, 0.5])
    need = stats.norm.isf(1e-4 / 2) + stats.norm.isf(1e-2)
    assert z_detectable(se, 1e-4, 1e-2).tolist() == pytest.approx((need * se).tolist(),
                                                                  rel=1e-14)
    assert z_test_power(need, 1.0, 1e-4, 1e-2)
    assert not z_test_power(need * 0.999, 1.0, 1e-4, 1e-2)
    assert not z_test_power(np.array([need, need * 0.999]), 1.0, 1e-4, 1e-2)


def test_dkwm_epsilon_range_of_n_and_alpha():
    """n = 1 is valid; n < 1 and α ∉ (0, 1) are refused with both values in the message."""
    assert dkwm_epsilon(1, 0.05) == pytest.approx(math.sqrt(math.log(40.0) / 2.0), rel=1e-15)
    for n, alpha in ((0, 0.5), (10, 0.0), (10, 1.5)):
        msg = f"n, alpha: need n ≥ 1 and 0 < alpha < 1, got {n}, {alpha}"
        with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
            dkwm_epsilon(n, alpha)


def test_assert_pvalues_boundary_and_full_message():
    """p = α/m exactly passes (fail iff p < α/m); the message gives α, m, α/m, the failing
    names (indices for a sequence) and every p-value."""
    alpha = 0.3
    assert_pvalues([alpha / 3, 0.5, 0.5], alpha)
    msg = ("p-value(s) below α/m = 1.0e-06/3 = 3.33e-07: 1 "
           "(all: 0=0.5, 1=1e-08, 2=0.2)")
    with pytest.raises(AssertionError, match=f"^{re.escape(msg)}$"):
        assert_pvalues([0.5, 1e-8, 0.2])
    msg = ("p-value(s) below α/m = 1.0e-06/3 = 3.33e-07: a, b "
           "(all: a=nan, b=1e-09, c=0.9)")
    with pytest.raises(AssertionError, match=f"^{re.escape(msg)}$"):
        assert_pvalues({"a": math.nan, "b": 1e-9, "c": 0.9})
    with pytest.raises(ValueError, match=r"^pvalues: need at least one p-value$"):
        assert_pvalues({})
