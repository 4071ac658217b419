"""Figures of the digits report (PNG, 150 dpi, labelled axes; captions in the report)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from ebmref.files import atomic_write

DPI = 150


def _save(fig, path: Path) -> None:
    """Tight layout, then an atomic PNG write (a reader never sees half a figure)."""
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI))
    plt.close(fig)


def _finite(v) -> list[float]:
    return [float(x) for x in v if x is not None and math.isfinite(float(x))]


def _points(ax, groups: dict[str, list[float]], ylabel: str, title: str) -> None:
    """All seeds as points, the mean as a bar of ± 95 % t interval."""
    rng = np.random.default_rng(0)
    for i, (name, vals) in enumerate(groups.items()):
        v = np.asarray(_finite(vals))
        if v.size == 0:
            continue
        ax.scatter(i + rng.uniform(-0.12, 0.12, v.size), v, s=12, alpha=0.7, color="C0")
        if v.size > 1:
            from scipy import stats

            half = stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
            ax.errorbar(i + 0.28, v.mean(), yerr=half, fmt="s", color="k", ms=4, capsize=3)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(list(groups), rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)


def nll_figure(results: dict, path: Path) -> None:
    test = results["likelihood"]["test"]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    _points(ax, {m: v["nll"] for m, v in test.items()}, "test NLL (nats / image)",
            "Test NLL by AIS: every seed (points), mean ± 95 % CI (black)")
    base = results["likelihood"]["baselines"]
    for name, style, label in (("gaussian_test_nll", "-.", "one Gaussian (exact)"),
                               ("base_gaussian_test_nll", ":", "AIS base (widened Gaussian)"),
                               ("class_mixture_test_nll", "--", "Gaussian per class (exact)")):
        if name in base:
            ax.axhline(base[name], ls=style, color="C3", lw=1, label=label)
    ax.legend(fontsize=7)
    _save(fig, path)


def convergence_figure(results: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, (m, r) in enumerate(results["fits"].items()):
        hist = r["summary"]["history"]
        if not hist:
            continue
        steps = [h["step"] for h in hist]
        mean = [np.mean(_finite(h["val_nll"]) or [np.nan]) for h in hist]
        ax.plot(steps, mean, marker="o", ms=3, label=m, color=f"C{i % 10}")
    ax.set_xlabel("update")
    ax.set_ylabel("validation NLL proxy (nats, mean over seeds)")
    ax.set_title("Convergence: cheap-AIS validation NLL during training (reported seeds)",
                 fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    _save(fig, path)


def ais_figure(results: dict, path: Path) -> None:
    lik = results["likelihood"]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    mix = lik["mixture_check"]
    for i, name in enumerate(("forward", "reverse")):
        e, se = mix[name]["error"], mix[name]["se"]
        axes[0].errorbar(np.arange(len(e)) + 0.15 * i, e, yerr=[1.96 * s for s in se], fmt="o",
                         capsize=3, label=f"{name} AIS")
    axes[0].axhline(0, color="k", lw=0.8)
    axes[0].set_xlabel("independent run")
    axes[0].set_ylabel("log Ẑ − log Z (nats)")
    axes[0].set_title("Tractable 64-D mixture: error ± 1.96 SE", fontsize=9)
    axes[0].legend(fontsize=7)
    xs, ys = [], []
    for m, v in lik["val_accurate"].items():
        proxy = results["fits"][m]["summary"]["best_val"]
        xs += _finite(v["nll"])
        ys += [float(p) for p in proxy][:len(v["nll"])]
    axes[1].scatter(xs, ys, s=10)
    if xs:
        lo, hi = min(xs + ys), max(xs + ys)
        axes[1].plot([lo, hi], [lo, hi], color="k", lw=0.8)
    axes[1].set_xlabel("validation NLL, accurate AIS (nats)")
    axes[1].set_ylabel("validation NLL, training proxy (nats)")
    axes[1].set_title("Proxy vs accurate AIS (every seed, every method)", fontsize=9)
    _save(fig, path)


def strips(grids: dict, names: list[str], path: Path, n_chains: int = 4,
           n_frames: int = 8) -> bool:
    """Rows: chain sets; each a mosaic of ``n_chains`` chains (rows) × frames (columns)."""
    names = [n for n in names if n in grids]
    if not names:
        return False
    fig, axes = plt.subplots(len(names), 1, figsize=(6, 1.15 * n_chains * len(names) / 2.2),
                             squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        g = torch.as_tensor(grids[name]).float()  # (chains, T, 64)
        t = g.shape[1]
        cols = torch.linspace(0, t - 1, min(n_frames, t)).round().long()
        tiles = g[:n_chains][:, cols].clamp(0, 1).reshape(-1, len(cols), 8, 8)
        pad = torch.ones(tiles.shape[0], len(cols), 10, 10)
        pad[:, :, 1:9, 1:9] = tiles
        mosaic = pad.permute(0, 2, 1, 3).reshape(tiles.shape[0] * 10, len(cols) * 10)
        ax.imshow(mosaic.numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel("chains", fontsize=7)
    axes[-1, 0].set_xlabel("frames, evenly spaced from start (left) to end (right)", fontsize=7)
    _save(fig, path)
    return True


def claims_figure(results: dict, path: Path) -> None:
    sets, ch = results["chains"]["sets"], results["chains"]
    panels = []

    def seeds(name, key, src=sets):
        return [r[key] for r in src[name]["per_seed"]] if name in src else []

    panels.append(("C27: Fréchet, chains from noise / data", "Fréchet distance",
                   {n: seeds(n, "frechet") for n in ("nll/noise", "true_cd/noise", "nll/data",
                                                      "true_cd/data")}))
    panels.append(("C16: spurious fraction (chains / descent)", "share of ends",
                   {n: seeds(n, "spurious_fraction") for n in
                    ("nll/noise", "pcd/noise", "true_cd/noise", "cd/noise", "nll/descent",
                     "pcd/descent", "true_cd/descent", "cd/descent")}))
    panels.append(("C26: descent left after a training chain", "r",
                   {k: v for k, v in ch["c26"].items()}))
    panels.append(("C28: confident-digit entropy vs σ (du_nll)", "nats",
                   {k.split(" ")[-1]: seeds(k, "confident_digit_entropy", ch["funnel"])
                    for k in ch["funnel"]}))
    panels.append(("C29: confident switches per 1k steps", "switches / 1k",
                   {n: seeds(n, "switches_per_1k") for n in
                    ("nll/noise", "nll/noise+deform", "nll_elastic/noise",
                     "nll_elastic/noise+deform")}))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
    for ax, (title, ylabel, groups) in zip(axes, panels):
        _points(ax, groups, ylabel, title)
    _save(fig, path)


def make_all(results: dict, grids: dict, out: Path) -> dict[str, str]:
    """Draw every figure the results allow; {file: caption}."""
    made = {}
    if results["likelihood"]["test"]:
        nll_figure(results, out / "nll.png")
        made["nll.png"] = ("Test NLL (nats per image, noisy test digits) of every method by AIS: "
                           "each point a seed, black the mean with its 95 % t interval; red "
                           "lines: exact NLLs of tractable models fitted to the same noisy "
                           "training digits.")
        ais_figure(results, out / "ais.png")
        made["ais.png"] = ("AIS checks. Left: on a tractable 64-D mixture with exact log Z, "
                           "forward (lower bound) and reverse (upper bound) AIS errors with the "
                           "study's settings. Right: the training proxy against the accurate "
                           "AIS on validation digits, every seed of every method.")
    convergence_figure(results, out / "convergence.png")
    made["convergence.png"] = ("Validation NLL proxy during training (mean over the reported "
                               "seeds) until every seed stopped improving or the cap.")
    for name, sets, caption in (
            ("chains_c27.png", ["nll/noise", "true_cd/noise", "nll/data", "true_cd/data"],
             ("C27: chains of the NLL and true-CD models from uniform noise and from held-out "
             "digits (seed 0, four chains each, frames left to right).")),
            ("chains_c16.png", ["pcd/noise", "cd/noise", "nll/descent", "cd/descent"],
             ("C16: chains from noise of PCD and CD-20, and gradient descent from noise on the "
             "NLL and CD-20 models (seed 0).")),
            ("chains_c29.png", ["nll_elastic/noise+deform", "nll_elastic/noise",
                                "nll/noise", "nll/noise+deform"],
             ("C29: elastic-trained and NLL models sampled with and without a deformation every "
             "100 steps (seed 0).")),
            ("chains_c28.png", sorted(k for k in grids if k.startswith("du_nll")),
             ("C28: the Du-regime NLL model from balanced held-out digits at increasing sampler "
             "noise σ (seed 0)."))):
        if strips(grids, sets, out / name):
            made[name] = caption
    claims_figure(results, out / "claims.png")
    made["claims.png"] = ("Per-seed values behind each claim's comparisons (points: seeds; "
                          "black: mean ± 95 % t interval).")
    return made
