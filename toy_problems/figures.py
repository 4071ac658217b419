"""Figures of the toy report (matplotlib, Agg, small PNGs)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from toy_problems.experiment import RunArtefacts
from toy_problems.targets import Target

DPI = 60
PANEL = 1.7  # inches per panel
ENERGY_CAP = 12.0  # nats above the minimum shown in energy maps


def _true_density_on(target: Target, pts: torch.Tensor) -> np.ndarray:
    return torch.exp(target.log_prob(pts)).numpy()


def _img(values: np.ndarray, n: int) -> np.ndarray:
    # grid() uses indexing="ij": value[i, j] at (x_i, y_j); imshow wants rows = y.
    return values.reshape(n, n).T


def landscapes(target: Target, arts: dict[str, RunArtefacts], path: Path) -> None:
    """Learned density p_θ and energy E_θ per method beside the true density (seed 0)."""
    methods = list(arts)
    if not methods:
        return
    g0 = arts[methods[0]].grid
    pts, n = g0.points, g0.n_points
    true_p = _true_density_on(target, pts)
    if target.dim == 1:
        fig, axes = plt.subplots(1, 2, figsize=(2 * PANEL * 2.2, PANEL * 1.4), dpi=DPI)
        x = pts[:, 0].numpy()
        axes[0].plot(x, true_p, "k", lw=2.5, label="data")
        for m in methods:
            g = arts[m].grid
            axes[0].plot(x, torch.exp(-g.energy - g.log_z).numpy(), lw=1, label=m)
            e = g.energy.numpy()
            axes[1].plot(x, np.minimum(e - e.min(), ENERGY_CAP), lw=1, label=m)
        axes[1].plot(x, np.minimum(-np.log(np.maximum(true_p, 1e-300))
                                   + np.log(true_p.max()), ENERGY_CAP), "k", lw=2.5)
        axes[0].set_title("density p_θ vs data", fontsize=8)
        axes[1].set_title("energy E_θ − min (capped)", fontsize=8)
        axes[0].legend(fontsize=5, ncol=2)
        for ax in axes:
            ax.tick_params(labelsize=6)
            ax.set_xlim(*target.bounds[0])
    else:
        cols = len(methods) + 1
        fig, axes = plt.subplots(2, cols, figsize=(cols * PANEL, 2 * PANEL), dpi=DPI,
                                 squeeze=False)
        extent = [*g0.bounds[0], *g0.bounds[1]]  # the quadrature box; shown: the data box
        vmax = float(np.quantile(true_p, 0.999)) * 1.5
        axes[0, 0].imshow(_img(true_p, n), origin="lower", extent=extent, vmin=0, vmax=vmax,
                          cmap="magma")
        axes[0, 0].set_title("data", fontsize=8)
        te = -np.log(np.maximum(true_p, 1e-300))
        axes[1, 0].imshow(_img(np.minimum(te - te.min(), ENERGY_CAP), n), origin="lower",
                          extent=extent, cmap="viridis", vmin=0, vmax=ENERGY_CAP)
        for j, m in enumerate(methods, start=1):
            g = arts[m].grid
            p = torch.exp(-g.energy - g.log_z).numpy()
            # Each panel on its own scale: a blurred model would be invisible on the data's.
            axes[0, j].imshow(_img(p, n), origin="lower", extent=extent, vmin=0,
                              vmax=float(p.max()), cmap="magma")
            axes[0, j].set_title(m, fontsize=8)
            e = g.energy.numpy()
            im = axes[1, j].imshow(_img(np.minimum(e - e.min(), ENERGY_CAP), n),
                                   origin="lower", extent=extent, cmap="viridis", vmin=0,
                                   vmax=ENERGY_CAP)
        fig.colorbar(im, ax=axes[1, -1], fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
        axes[0, 0].set_ylabel("p_θ", fontsize=8)
        axes[1, 0].set_ylabel(f"E_θ − min (cap {ENERGY_CAP:g})", fontsize=7)
        for ax in axes.ravel():
            ax.set_xlim(*target.bounds[0])
            ax.set_ylim(*target.bounds[1])
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{target.name}: learned vs true density (top, each on its own colour scale) "
                 f"and energy (bottom), seed 0",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def chains(target: Target, arts: dict[str, RunArtefacts], path: Path) -> None:
    """End points and a few paths of T = 1 ULA chains from noise (red) and from data (blue)."""
    methods = list(arts)
    if not methods:
        return
    cols = len(methods)
    fig, axes = plt.subplots(1, cols, figsize=(cols * PANEL, PANEL * 1.15), dpi=DPI,
                             squeeze=False)
    g0 = arts[methods[0]].grid
    true_p = _true_density_on(target, g0.points)
    for ax, m in zip(axes[0], methods):
        a = arts[m]
        if target.dim == 2:
            n = g0.n_points
            ax.contour(_img(true_p, n), levels=3, origin="lower", colors="0.7", linewidths=0.5,
                       extent=[*g0.bounds[0], *g0.bounds[1]])
            for pth, colour in ((a.path_noise, "tab:red"), (a.path_data, "tab:blue")):
                for c in range(pth.shape[1]):
                    ax.plot(pth[:, c, 0], pth[:, c, 1], color=colour, lw=0.3, alpha=0.6)
            ax.scatter(a.x_noise[:, 0], a.x_noise[:, 1], s=1, c="tab:red")
            ax.scatter(a.x_data[:, 0], a.x_data[:, 1], s=1, c="tab:blue")
            ax.set_xlim(*target.bounds[0])
            ax.set_ylim(*target.bounds[1])
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            bins = np.linspace(*target.bounds[0], 41)
            ax.hist(a.x_noise[:, 0].numpy(), bins=bins, density=True, color="tab:red",
                    alpha=0.5)
            ax.hist(a.x_data[:, 0].numpy(), bins=bins, density=True, color="tab:blue",
                    alpha=0.5)
            ax.plot(g0.points[:, 0], true_p, "k", lw=1)
            ax.set_xlim(*target.bounds[0])
            ax.tick_params(labelsize=5)
        ax.set_title(m, fontsize=8)
    fig.suptitle(f"{target.name}: ULA (eq. 1, T = 1) chains from noise (red) and from data "
                 f"(blue), seed 0", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def funnel(rows: list[dict], path: Path) -> None:
    """C28: fraction of chains in the heaviest mode vs temperature, observed and predicted."""
    targets = sorted({r["target"] for r in rows})
    if not targets:
        return
    fig, axes = plt.subplots(1, len(targets), figsize=(len(targets) * 2.6, 2.2), dpi=DPI + 20,
                             squeeze=False)
    for ax, t in zip(axes[0], targets):
        rs = [r for r in rows if r["target"] == t]
        temps = sorted({r["temperature"] for r in rs})

        def stat(key, rs=rs, temps=temps):
            vals = [[r[key] for r in rs if r["temperature"] == T] for T in temps]
            return (np.array([np.mean(v) for v in vals]),
                    np.array([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in vals]))

        obs, obs_sd = stat("frac_heavy")
        pred, _ = stat("tempered_heavy")
        ax.errorbar(temps, obs, yerr=obs_sd, fmt="o-", ms=3, label="chains (observed)")
        ax.plot(temps, pred, "s--", ms=3, label="p_θ^{1/T} (exact, grid)")
        ax.axhline(rs[0]["true_heavy"], color="k", lw=0.8, ls=":", label="true weight")
        ax.set_xscale("log")
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("effective temperature T = σ²/2α", fontsize=7)
        ax.set_ylabel("fraction in heaviest mode", fontsize=7)
        ax.set_title(t, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=5)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def summary_bars(summary: dict, targets: list[str], methods: list[str], path: Path) -> None:
    """Mean ± sd over seeds of the headline metrics, grouped by target."""
    keys = [("nll_gap", "test NLL gap (nats)"), ("mass_outside", "p_θ mass off support"),
            ("frac_noise_in_modes", "noise chains in a mode"),
            ("frac_data_in_modes", "data chains in a mode")]
    fig, axes = plt.subplots(1, len(keys), figsize=(len(keys) * 3.0, 2.4), dpi=DPI + 20)
    width = 0.8 / max(len(methods), 1)
    cmap = plt.get_cmap("tab10")
    for ax, (k, label) in zip(axes, keys):
        for j, m in enumerate(methods):
            means, sds = [], []
            for t in targets:
                cell = summary.get(f"{t}/{m}", {}).get(k)
                means.append(cell["mean"] if cell else math.nan)
                sds.append(cell["sd"] if cell and math.isfinite(cell["sd"]) else 0.0)
            xs = np.arange(len(targets)) + (j - (len(methods) - 1) / 2) * width
            ax.bar(xs, means, width, yerr=sds, color=cmap(j % 10), label=m,
                   error_kw={"lw": 0.5})
        ax.set_xticks(np.arange(len(targets)))
        ax.set_xticklabels(targets, fontsize=6, rotation=15)
        ax.set_title(label, fontsize=8)
        ax.tick_params(labelsize=6)
    axes[0].legend(fontsize=5, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
