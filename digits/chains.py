"""Long chains on trained digit energies and their per-seed metrics (paper §6, claims C16,
C26–C29).

Every chain set runs G·n chains in one vectorised sampler call: block g (n chains) on member g.
Starts: uniform noise in [0, 1]⁶⁴, or held-out (test) digits with chain j on a digit of class
j mod 10 (classes balanced), noisy for the T = 1 models and clean for Du's regime. Samplers:
the model's training sampler (:func:`ebmref.samplers.langevin`), optionally with an elastic
deformation every ``deform_every`` steps (§6.3), or plain gradient descent (C16's "descent").

Per seed, with the digit classifier (:mod:`mnist.classifier`, metrics from
:mod:`mnist.metrics`): confident fraction (max softmax > 0.9), entropy of the predicted-digit
histogram (all samples and confident ones only), share of the most frequent confident digit,
confident digit switches per 1,000 steps, Fréchet distance of classifier features to the test
digits, the energy gap mean E(chain ends) − mean E(test digits), and for data starts the share
of chains still classified as their start digit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from digits.data import IMAGE_SIZE, NOISE_STD, DigitsData, noisy
from digits.methods import COMMON, DU, ELASTIC_POINTS, ELASTIC_SIGMA, Method
from digits.models import FlatImages
from ebmref.samplers import langevin
from ebmref.transitions import GridElasticDeform
from mnist.metrics import (
    CONFIDENCE,
    classify,
    confident_fraction,
    digit_entropy,
    frechet_distance,
    switches_per_1k,
)


@dataclass(frozen=True)
class ChainSpec:
    """One chain set: ``init`` "noise" | "data"; ``n_steps``; ``noise``: None (eq. 1 at the
    method's step) or σ of Du's decoupled step; ``deform_every`` (0: never); ``descent``:
    plain gradient descent x ← x − (λ/2)∇E (no noise)."""

    init: str = "noise"
    n_steps: int = 2000
    noise: float | None = None
    deform_every: int = 0
    descent: bool = False
    record_every: int = 100


def sampler_kwargs(method: Method, spec: ChainSpec) -> dict:
    """The method's training sampler, with the spec's changes."""
    du = method.regime == "du"
    step = DU["sampler.step_size"] if du else COMMON["sampler.step_size"]
    kw = {"step_size": step, "grad_clip": DU["sampler.grad_clip"] if du else None,
          "clamp": DU["sampler.clamp"] if du else None}
    if spec.descent:  # eq. 1's drift without its noise (Du's: α·clip(∇E) without σξ)
        kw["noise"] = 0.0
        kw["step_size"] = step if du else step / 2
    elif du:
        kw["noise"] = spec.noise if spec.noise is not None else DU["sampler.noise"]
    elif spec.noise is not None:
        kw["noise"] = spec.noise
        kw["step_size"] = step / 2  # decoupled form with eq. 1's drift λ/2
    return kw


def starts(spec: ChainSpec, method: Method, n_members: int, n: int, test: DigitsData,
           generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
    """(G·n, 64) chain starts and, for data starts, their labels."""
    if spec.init == "noise":
        return torch.rand((n_members * n, test.flat.shape[1]), generator=generator), None
    idx = []
    for j in range(n_members * n):
        pool = torch.nonzero(test.labels == (j % n) % 10).flatten()
        idx.append(int(pool[torch.randint(0, len(pool), (1,), generator=generator)]))
    idx_t = torch.tensor(idx)
    x = test.flat[idx_t]
    if method.regime != "du":
        x = noisy(x, generator, NOISE_STD)
    return x, test.labels[idx_t]


def run(energy, method: Method, spec: ChainSpec, n: int, test: DigitsData,
        generator: torch.Generator) -> dict:
    """Chains of one set: {"trajectory" (T, G·n, 64), "labels", "x0"}."""
    x0, labels = starts(spec, method, energy.n_members, n, test, generator)
    kw = sampler_kwargs(method, spec)
    deform = FlatImages(GridElasticDeform(ELASTIC_SIGMA, ELASTIC_POINTS)) \
        if spec.deform_every else None
    for p in energy.parameters():
        p.requires_grad_(False)
    try:
        out = langevin(energy, x0, spec.n_steps, generator=generator, transition=deform,
                       transition_every=spec.deform_every, record_every=spec.record_every, **kw)
    finally:
        for p in energy.parameters():
            p.requires_grad_(True)
    return {"trajectory": out.trajectory, "labels": labels, "x0": x0}


def images(x: Tensor) -> Tensor:
    return x.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)


@torch.no_grad()
def member_energies(energy, x: Tensor) -> Tensor:
    """(G, n): E_g on block g of x (G·n rows)."""
    return energy(x).view(energy.n_members, -1).double()


@torch.no_grad()
def energies_on(energy, x: Tensor) -> Tensor:
    """(G, M): every member on the same rows x (M, 64)."""
    g = energy.n_members
    return energy(x.repeat(g, 1)).view(g, -1).double()


def top_share(probs: Tensor) -> float:
    """Share of the most frequent digit among confidently classified samples (nan if none)."""
    conf = probs.max(-1).values > CONFIDENCE
    if not conf.any():
        return math.nan
    counts = torch.bincount(probs[conf].argmax(-1), minlength=10)
    return float(counts.max() / counts.sum())


def seed_metrics(classifier, energy, result: dict, reference_features: Tensor,
                 test_energy: Tensor, steps_per_frame: int) -> list[dict]:
    """Per member: the metrics of the module docstring (test_energy: (G, M) E_g on the
    evaluation digits)."""
    traj = result["trajectory"]
    t, rows = traj.shape[:2]
    g_members = test_energy.shape[0]
    n = rows // g_members
    probs_all, feats_end = classify(classifier, images(traj.reshape(t * rows, -1)))
    probs_all = probs_all.view(t, rows, -1)
    _, feats_end = classify(classifier, images(traj[-1]))
    e_end = member_energies(energy, traj[-1])
    out = []
    for g in range(g_members):
        sl = slice(g * n, (g + 1) * n)
        p_end = probs_all[-1, sl]
        conf = p_end.max(-1).values > CONFIDENCE
        row = {"n": n, "confident_fraction": confident_fraction(p_end),
               "digit_entropy": digit_entropy(p_end),
               "confident_digit_entropy": digit_entropy(p_end[conf]) if conf.any() else math.nan,
               "top_digit_share": top_share(p_end),
               "histogram": torch.bincount(p_end.argmax(-1), minlength=10).tolist(),
               "frechet": frechet_distance(feats_end[sl], reference_features),
               "energy_gap": float(e_end[g].mean() - test_energy[g].mean()),
               "switches_per_1k": switches_per_1k(probs_all[:, sl], steps_per_frame,
                                                  confident_only=True)}
        if result["labels"] is not None:
            row["start_digit_kept"] = float((p_end.argmax(-1) == result["labels"][sl])
                                            .double().mean())
        out.append(row)
    return out


def nearest_distances(x: Tensor, bank: Tensor, batch: int = 1000) -> Tensor:
    """(N,) Euclidean distance of each row of x to its nearest row of ``bank``."""
    out = []
    for i in range(0, x.shape[0], batch):
        out.append(torch.cdist(x[i:i + batch].double(), bank.double()).min(1).values)
    return torch.cat(out)


def spurious_fraction(energy, ends: Tensor, train_clean: Tensor, tau: float,
                      e_threshold: Tensor) -> list[float]:
    """Per member: share of the chain ends (block g) with E_g ≤ e_threshold[g] (low energy)
    and nearest-training-digit distance > tau (far from every training digit)."""
    e = member_energies(energy, ends)
    d = nearest_distances(ends, train_clean).view(e.shape)
    return [float(((e[g] <= e_threshold[g]) & (d[g] > tau)).double().mean())
            for g in range(e.shape[0])]


def descent_profile(energy, method: Method, n: int, n_short: int, n_long: int,
                    generator: torch.Generator) -> list[float]:
    """C26: per member, the share of the energy descent from uniform noise still to be made
    after a training-length chain: r = (Ē_short − Ē_long)/(Ē_0 − Ē_long), Ē_t the mean energy
    after t steps of the method's training sampler (Ē_0: the noise starts)."""
    x0 = torch.rand((energy.n_members * n, 64), generator=generator)
    kw = sampler_kwargs(method, ChainSpec())
    for p in energy.parameters():
        p.requires_grad_(False)
    try:
        x_short = langevin(energy, x0, n_short, generator=generator, **kw).x
        x_long = langevin(energy, x_short, n_long - n_short, generator=generator, **kw).x
    finally:
        for p in energy.parameters():
            p.requires_grad_(True)
    e0, es, el = (member_energies(energy, x).mean(1) for x in (x0, x_short, x_long))
    return [float((es[g] - el[g]) / (e0[g] - el[g])) for g in range(e0.numel())]


def pooled(values: list[float]) -> float:
    v = np.asarray([x for x in values if math.isfinite(x)])
    return float(v.mean()) if v.size else math.nan
