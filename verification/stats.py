"""The suite's statistical helpers: the calibrated p-values and power functions live in
:mod:`ebmref.stats` (one copy, shared with :mod:`ebmref.conformance`); this module re-exports
them under their old names and adds what only the suite needs (:func:`seed_for`, the stable
per-test seed of the ``rng`` fixture in verification/conftest.py).

The rules every stochastic test here follows are in the docstring of :mod:`ebmref.stats`; the
``rng`` fixture gives each test its seeded ``torch.Generator``, a test's total α is written in
its ``@pytest.mark.stochastic(alpha=...)`` marker, and ``python -m verification.seed_sweep``
measures the real failure rates over fresh seeds.
"""

from __future__ import annotations

import hashlib

from ebmref.stats import (
    ALPHA,
    BETA,
    UnderpoweredError,
    assert_chi2_power,
    assert_gaussian_law,
    assert_ks_power,
    assert_pvalues,
    chi2_detectable_rel_error,
    chi2_power,
    chi2_variance_power,
    dilation_ks_distance,
    dkwm_epsilon,
    gaussian_scale_ks_distance,
    ks_distance,
    ks_min_detectable,
    ks_pvalue,
    normal_pvalues,
    projection_ks_pvalues,
    random_directions,
    whiten,
    whitened_gaussian_pvalues,
    z_detectable,
    z_test_power,
)

__all__ = [
    "ALPHA", "BETA", "UnderpoweredError", "assert_chi2_power", "assert_gaussian_law",
    "assert_ks_power", "assert_pvalues", "chi2_detectable_rel_error", "chi2_power",
    "chi2_variance_power", "dilation_ks_distance", "dkwm_epsilon", "gaussian_scale_ks_distance",
    "ks_distance", "ks_min_detectable", "ks_pvalue", "normal_pvalues", "projection_ks_pvalues",
    "random_directions", "seed_for", "whiten", "whitened_gaussian_pvalues", "z_detectable",
    "z_test_power",
]


def seed_for(test_name: str) -> int:
    """A stable 63-bit seed from a test's name (sha256, independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256(test_name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
