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
  biased upward at small n, so it is reported at n ≥ 1,000 with a bootstrap CI
  (``frechet_bootstrap``) beside the real-data floor at the same n as a distribution
  (``frechet_floor``: random subsets of real digits);
* ``energy_gap``: mean E_θ(samples) − mean E_θ(data) (> 0: samples sit higher than data).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
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


def one_blas_thread():
    """A context with one BLAS thread: small eigendecompositions on a shared, loaded CPU are
    ~100× slower when OpenBLAS spreads them over threads (measured: 0.1 s vs 1 ms at 128²)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """The symmetric square root of a covariance (eigenvalues clipped at 0)."""
    w, v = np.linalg.eigh(0.5 * (cov + cov.T))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_from_moments(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray,
                         cov2: np.ndarray, sqrt_cov2: np.ndarray | None = None) -> float:
    """Fréchet (2-Wasserstein²) distance between N(mu1, cov1) and N(mu2, cov2).

    tr((Σ₁Σ₂)^{1/2}) = Σᵢ √λᵢ with λ the eigenvalues of Σ₂^{1/2}Σ₁Σ₂^{1/2} (similar to Σ₁Σ₂,
    symmetric and positive semi-definite): two symmetric eigendecompositions instead of a
    general matrix square root, exact for singular covariances (fewer samples than features).
    ``sqrt_cov2``: Σ₂^{1/2} when already known (a fixed reference)."""
    diff = mu1 - mu2
    r = psd_sqrt(cov2) if sqrt_cov2 is None else sqrt_cov2
    lam = np.linalg.eigvalsh(r @ cov1 @ r)
    tr_covmean = float(np.sqrt(np.clip(lam, 0.0, None)).sum())
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * tr_covmean)


def frechet_distance(feat1: Tensor, feat2: Tensor) -> float:
    """Fréchet distance between Gaussian fits of two feature sets (N₁, D), (N₂, D)."""
    if feat1.shape[0] < 2 or feat2.shape[0] < 2:
        raise ValueError("feat1/feat2: need at least 2 rows each for a covariance, got "
                         f"{feat1.shape[0]} and {feat2.shape[0]}")
    a, b = feat1.double().numpy(), feat2.double().numpy()
    with one_blas_thread():
        return frechet_from_moments(a.mean(0), np.atleast_2d(np.cov(a, rowvar=False)),
                                    b.mean(0), np.atleast_2d(np.cov(b, rowvar=False)))


def frechet_bootstrap(feat: Tensor, reference: Tensor, n_boot: int = 200, seed: int = 0,
                      level: float = 0.95) -> dict:
    """Fréchet distance of ``feat`` (N, D) to ``reference`` with a bias-corrected percentile
    bootstrap CI: the N rows of ``feat`` are resampled with replacement ``n_boot`` times (the
    reference is held fixed: it is the yardstick, not the sample). A resample repeats rows,
    which inflates its distance (at N = 40 by tens of percent; the plain percentile interval
    then need not contain the estimate), so the bootstrap distribution is shifted by its bias
    b = mean(boot) − fd: CI = [q_lo − b, q_hi − b]. Returns {"fd", "ci", "bias", "n",
    "n_boot"}."""
    check_int_range(n_boot, "n_boot", 10)
    check_probability(level, "level")
    rng = np.random.default_rng(seed)
    a, r = feat.double().numpy(), reference.double().numpy()
    mu_r, cov_r = r.mean(0), np.atleast_2d(np.cov(r, rowvar=False))
    boots = []
    with one_blas_thread():
        sqrt_r = psd_sqrt(cov_r)
        for _ in range(n_boot):
            b = a[rng.integers(0, a.shape[0], a.shape[0])]
            boots.append(frechet_from_moments(b.mean(0), np.atleast_2d(np.cov(b, rowvar=False)),
                                              mu_r, cov_r, sqrt_r))
    fd = frechet_distance(feat, reference)
    bias = float(np.mean(boots)) - fd
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2]) - bias
    return {"fd": fd, "ci": [float(lo), float(hi)], "bias": bias, "n": int(a.shape[0]),
            "n_boot": n_boot}


def frechet_floor(real_feat: Tensor, reference: Tensor, n: int, n_draws: int = 50,
                  seed: int = 0) -> dict:
    """The real-data floor as a distribution: Fréchet distances of ``n_draws`` random subsets
    of ``n`` real digits' features (drawn without replacement from ``real_feat``) to
    ``reference``. A sampler's distance at the same n is comparable to this distribution only
    (the distance is biased upward at small n, and at small n it mostly measures the subset's
    class composition). Returns {"n", "mean", "sd", "q05", "q50", "q95", "values"}."""
    check_int_range(n, "n", 2, real_feat.shape[0])
    check_int_range(n_draws, "n_draws", 1)
    g = torch.Generator().manual_seed(seed)
    vals = [frechet_distance(real_feat[torch.randperm(real_feat.shape[0], generator=g)[:n]],
                             reference) for _ in range(n_draws)]
    v = np.asarray(vals)
    q05, q50, q95 = np.quantile(v, [0.05, 0.5, 0.95])
    return {"n": n, "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "q05": float(q05), "q50": float(q50), "q95": float(q95), "values": v.tolist()}


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
