"""Quantitative metrics on EBM samples and chains (paper §6, made measurable).

With a digit classifier c (``mnist.classifier``):

* ``confident_fraction``: share of samples classified with max softmax probability > 0.9
  ("looks like a digit");
* ``digit_entropy``: entropy (nats) of the histogram of predicted digits over samples; log 10 ≈
  2.303 when all digits are equally frequent, ≈ 0 when every chain ends on the same digit
  (the funnel of §6.2.1, claim C28); ``confident_digit_entropy`` counts only samples classified
  with confidence > 0.9 (noise images get arbitrary labels and would fake a funnel);
* ``switches_per_1k``: changes of the predicted digit along a chain per 1,000 sampler steps
  (mixing between modes, §6.3, claim C29); ``confident_switches_per_1k`` counts only changes
  between frames classified with confidence > 0.9, so pixel noise on an ambiguous image does not
  count as mixing;
* ``frechet_distance``: ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^{1/2}) between Gaussian fits of the
  classifier's 128-d features of samples and of held-out real digits (an MNIST analogue of FID);
* ``energy_gap``: mean E_θ(samples) − mean E_θ(data) (> 0: samples sit higher than data).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from ebmref.energy import Energy
from ebmref.validation import check_int_range, check_probability

CONFIDENCE = 0.9


@torch.no_grad()
def classify(model: torch.nn.Module, x: Tensor, batch: int = 1000) -> tuple[Tensor, Tensor]:
    """(softmax probabilities (N, 10), features (N, 128)) on CPU, float64."""
    dev = next(model.parameters()).device
    model.eval()
    probs, feats = [], []
    for i in range(0, x.shape[0], batch):
        xb = x[i:i + batch].to(dev, torch.float32)
        f = model.features(xb)
        probs.append(torch.softmax(model.fc2(f), -1).double().cpu())
        feats.append(f.double().cpu())
    return torch.cat(probs), torch.cat(feats)


def confident_fraction(probs: Tensor, threshold: float = CONFIDENCE) -> float:
    check_probability(threshold, "threshold")
    return float((probs.max(-1).values > threshold).double().mean())


def digit_entropy(probs: Tensor) -> float:
    """Entropy (nats) of the histogram of argmax digits over the samples."""
    counts = torch.bincount(probs.argmax(-1), minlength=probs.shape[-1]).double()
    p = counts / counts.sum()
    p = p[p > 0]
    return float(-(p * p.log()).sum()) + 0.0  # + 0.0 turns −0.0 into 0.0


def digit_histogram(probs: Tensor) -> list[int]:
    return torch.bincount(probs.argmax(-1), minlength=probs.shape[-1]).tolist()


def switches_per_1k(traj_probs: Tensor, steps_per_frame: int,
                    confident_only: bool = False, threshold: float = CONFIDENCE) -> float:
    """Mean over chains of digit changes per 1,000 sampler steps.

    ``traj_probs``: (T, B, 10) probabilities of T recorded frames, ``steps_per_frame`` sampler
    steps apart. With ``confident_only``, frames below ``threshold`` are skipped and a switch is
    a change between consecutive confident frames.
    """
    check_int_range(steps_per_frame, "steps_per_frame", 1)
    if traj_probs.ndim != 3 or traj_probs.shape[0] < 2:
        raise ValueError(f"traj_probs: expected (T >= 2, B, classes), "
                         f"got {tuple(traj_probs.shape)}")
    t, b, _ = traj_probs.shape
    labels = traj_probs.argmax(-1)
    total_steps = (t - 1) * steps_per_frame
    if not confident_only:
        switches = (labels[1:] != labels[:-1]).sum(0).double()
        return float(switches.mean() * 1000.0 / total_steps)
    conf = traj_probs.max(-1).values > threshold
    counts = []
    for j in range(b):  # B is small (tens of chains); T up to a few hundred frames
        seq = labels[conf[:, j], j]
        counts.append(int((seq[1:] != seq[:-1]).sum()) if seq.numel() > 1 else 0)
    return float(np.mean(counts) * 1000.0 / total_steps)


def frechet_from_moments(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray,
                         cov2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein²) distance between N(mu1, cov1) and N(mu2, cov2)."""
    diff = mu1 - mu2
    with warnings.catch_warnings():  # fewer samples than features: singular, handled below
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all():  # singular product: regularise as in FID
        eps = 1e-6 * np.eye(cov1.shape[0])
        covmean = scipy.linalg.sqrtm((cov1 + eps) @ (cov2 + eps))
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean))


def frechet_distance(feat1: Tensor, feat2: Tensor) -> float:
    """Fréchet distance between Gaussian fits of two feature sets (N₁, D), (N₂, D)."""
    if feat1.shape[0] < 2 or feat2.shape[0] < 2:
        raise ValueError("feat1/feat2: need at least 2 rows each for a covariance, got "
                         f"{feat1.shape[0]} and {feat2.shape[0]}")
    a, b = feat1.double().numpy(), feat2.double().numpy()
    return frechet_from_moments(a.mean(0), np.atleast_2d(np.cov(a, rowvar=False)),
                                b.mean(0), np.atleast_2d(np.cov(b, rowvar=False)))


def mean_energy(energy: Energy, x: Tensor, batch: int = 500) -> float:
    dev = next(energy.parameters()).device
    with torch.no_grad():
        es = [energy(x[i:i + batch].to(dev)).double().cpu() for i in range(0, x.shape[0], batch)]
    return float(torch.cat(es).mean())


def sample_metrics(classifier: torch.nn.Module, samples: Tensor,
                   heldout_features: Tensor | None = None) -> dict:
    """Classifier metrics of a set of final samples (N, 1, 28, 28)."""
    probs, feats = classify(classifier, samples)
    conf = probs.max(-1).values > CONFIDENCE
    out = {
        "n": int(samples.shape[0]),
        "confident_fraction": confident_fraction(probs),
        "digit_entropy": digit_entropy(probs),
        "digit_entropy_uniform": math.log(10.0),
        "digit_histogram": digit_histogram(probs),
        # the funnel (C28) is about clear digits: the same entropy over confident samples only,
        # so that noise images (which a classifier maps to arbitrary classes) do not count
        "confident_digit_entropy": digit_entropy(probs[conf]) if conf.any() else None,
        "confident_digit_histogram": digit_histogram(probs[conf]),
        "mean_confidence": float(probs.max(-1).values.mean()),
    }
    if not conf.any():
        out["confident_digit_entropy_missing"] = "no sample is classified with confidence"
    if heldout_features is not None and samples.shape[0] >= 2:
        out["frechet_distance"] = frechet_distance(feats, heldout_features)
    return out


def trajectory_metrics(classifier: torch.nn.Module, trajectory: Tensor,
                       steps_per_frame: int) -> dict:
    """Mixing metrics of recorded frames (T, B, 1, 28, 28)."""
    t, b = trajectory.shape[:2]
    probs, _ = classify(classifier, trajectory.reshape(t * b, *trajectory.shape[2:]))
    probs = probs.view(t, b, -1)
    return {
        "frames": int(t),
        "steps_per_frame": int(steps_per_frame),
        "switches_per_1k": switches_per_1k(probs, steps_per_frame),
        "confident_switches_per_1k": switches_per_1k(probs, steps_per_frame, confident_only=True),
        "confident_fraction_per_frame": [confident_fraction(p) for p in probs],
        "digit_entropy_per_frame": [digit_entropy(p) for p in probs],
    }
