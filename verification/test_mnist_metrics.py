"""Deterministic checks of the section-6 sample metrics (mnist/metrics.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mnist.metrics import (
    confident_fraction,
    digit_entropy,
    frechet_distance,
    frechet_from_moments,
    switches_per_1k,
)


def _one_hot(labels, conf=0.95):
    p = torch.full((len(labels), 10), (1 - conf) / 9, dtype=torch.float64)
    p[torch.arange(len(labels)), torch.as_tensor(labels)] = conf
    return p


def test_frechet_matches_closed_form_for_commuting_covariances():
    rs = np.random.RandomState(0)
    a, b = rs.uniform(0.1, 3, 5), rs.uniform(0.1, 3, 5)
    m1, m2 = rs.randn(5), rs.randn(5)
    expected = float(((m1 - m2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    got = frechet_from_moments(m1, np.diag(a), m2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-12)
    # rotating both covariances by the same orthogonal matrix leaves the distance unchanged
    q, _ = np.linalg.qr(rs.randn(5, 5))
    rot = frechet_from_moments(q @ m1, q @ np.diag(a) @ q.T, q @ m2, q @ np.diag(b) @ q.T)
    assert rot == pytest.approx(expected, rel=1e-8)


def test_frechet_of_feature_sets_sees_shift_and_identity():
    g = torch.Generator().manual_seed(0)
    f = torch.randn((400, 6), generator=g, dtype=torch.float64)
    assert abs(frechet_distance(f, f)) < 1e-8
    shift = torch.tensor([1.0, -2.0, 0, 0, 0, 0.5], dtype=torch.float64)
    assert frechet_distance(f, f + shift) == pytest.approx(float(shift @ shift), rel=1e-8)
    # a scaled set: exact value ‖μ‖²(1 − s)² + tr(Σ)(1 − s)² for s = 2
    cov, mu = np.cov(f.numpy(), rowvar=False), f.numpy().mean(0)
    assert frechet_distance(f, 2 * f) == pytest.approx(float(np.trace(cov) + mu @ mu), rel=1e-8)


def test_confidence_and_entropy():
    p = _one_hot(list(range(10)) * 3)
    assert digit_entropy(p) == pytest.approx(math.log(10))
    assert digit_entropy(_one_hot([9] * 30)) == 0.0  # the funnel: every chain on one digit
    assert digit_entropy(_one_hot([1, 9] * 5)) == pytest.approx(math.log(2))
    q = torch.cat([_one_hot([3] * 3, conf=0.95), _one_hot([4], conf=0.5)])
    assert confident_fraction(q) == 0.75


def test_switches_per_thousand_steps():
    # 2 chains, 5 frames 100 steps apart = 400 steps; chain 0 switches 3→5→3 (2), chain 1 never
    labels = torch.tensor([[3, 1], [5, 1], [5, 1], [3, 1], [3, 1]])
    traj = torch.stack([_one_hot(row.tolist()) for row in labels])
    assert switches_per_1k(traj, 100) == pytest.approx((2 + 0) / 2 * 1000 / 400)
    # an unconfident frame in between is skipped by the confident count: 3 →(?)→ 3 is no switch
    traj2 = traj.clone()
    traj2[1, 0] = _one_hot([5], conf=0.4)[0]
    traj2[2, 0] = _one_hot([5], conf=0.4)[0]
    assert switches_per_1k(traj2, 100, confident_only=True) == 0.0
    assert switches_per_1k(traj2, 100) == pytest.approx(2 / 2 * 1000 / 400)
    with pytest.raises(ValueError, match="steps_per_frame"):
        switches_per_1k(traj, 0)


def test_confident_digit_entropy_ignores_noise_images():
    from mnist.classifier import DigitClassifier
    from mnist.metrics import sample_metrics

    torch.manual_seed(0)
    m = sample_metrics(DigitClassifier(), torch.rand(8, 1, 28, 28))
    # an untrained classifier is never confident: no confident samples, entropy undefined
    assert m["confident_fraction"] == 0.0 and m["confident_digit_entropy"] is None
    assert "confidence" in m["confident_digit_entropy_missing"]  # the reason, beside the null
    assert sum(m["confident_digit_histogram"]) == 0 and sum(m["digit_histogram"]) == 8
