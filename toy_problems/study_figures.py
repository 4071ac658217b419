"""Figures of the claims study (matplotlib, Agg, 160 dpi): every seed as a point or a thin line
beside the mean, colour bars on maps, equal aspect in 2-D, the data's modes overlaid, legends
outside the data. Each function returns (file name, caption)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Circle, Rectangle

DPI = 160
ENERGY_CAP = 12.0
METHOD_COLOURS = {"nll": "tab:blue", "cd10": "tab:red", "pcd": "tab:green",
                  "true_cd": "tab:purple", "nll_du": "tab:gray", "du_kl_du2020": "tab:orange",
                  "du_kl_cd": "tab:brown"}
plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
                     "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8})


def _save(fig, out: Path, name: str) -> str:
    fig.savefig(out / name, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return name


def _points(ax, x: float, values, colour, label=None, jitter=0.08):
    v = np.array([u for u in values if u is not None and math.isfinite(u)], dtype=float)
    if v.size == 0:
        return
    rng = np.random.default_rng(0)
    ax.scatter(x + rng.uniform(-jitter, jitter, v.size), v, s=14, color=colour, alpha=0.7,
               edgecolor="none", label=label)
    ax.plot([x - 0.25, x + 0.25], [v.mean()] * 2, color="k", lw=2)


def _overlay_modes(ax, target):
    """The data's modes: r₉₉ circles (mixtures) or the black squares (checkerboard)."""
    if hasattr(target, "means"):
        for mu in target.means[:, :2].tolist():
            ax.add_patch(Circle(mu, target.r_mode * target.std, fill=False, ec="white",
                                lw=0.8, ls="--"))
    elif hasattr(target, "corners"):
        for c in target.corners.tolist():
            ax.add_patch(Rectangle(c, 1.0, 1.0, fill=False, ec="white", lw=0.8, ls="--"))


def c7_tv(out: Path, cfg, details) -> tuple[str, str]:
    targets = cfg.c7_targets
    fig, axes = plt.subplots(1, len(targets), figsize=(3.2 * len(targets), 3.0), squeeze=False)
    xs = np.array(cfg.chain_lengths, dtype=float)
    xplot = np.where(xs == 0, 1.0, xs)
    for ax, t in zip(axes[0], targets):
        model = details["chains"]["models"][f"nll/{t}"]["members"]
        ctrl = details["chains"]["control"][t]["members"]
        curves = [m["tv_noise"] for m in model if m["tv_noise"] is not None]
        for c in curves:
            ax.plot(xplot, c, color="tab:blue", lw=0.6, alpha=0.5)
        for c in ctrl:
            ax.plot(xplot, c["tv_noise"], color="0.4", lw=0.6, alpha=0.5, ls="--")
        if curves:
            ax.plot(xplot, np.mean(curves, 0), color="tab:blue", lw=2.2, label="NLL model vs p_θ")
        ax.plot(xplot, np.mean([c["tv_noise"] for c in ctrl], 0), color="k", lw=2.2, ls="--",
                label="true energy vs p_data (control)")
        floors = [m["floor"] for m in model if m["floor"] is not None]
        if floors:
            ax.axhline(np.mean(floors), color="tab:blue", lw=1, ls=":",
                       label="exact-sample floor")
        ax.set_xscale("log")
        ax.set_xlabel("chain length (steps; 0 plotted at 1)")
        ax.set_title(t)
        ax.set_ylim(0, 1)
    axes[0, 0].set_ylabel("TV(chain ends, target law)")
    axes[0, 0].legend(loc="upper center", bbox_to_anchor=(len(targets) / 2 + 0.1, -0.22), ncol=3)
    name = _save(fig, out, "c7_tv.png")
    return name, (f"C7. Total variation between the law of ULA chain ends (eq. 1, λ = "
                  f"{cfg.step_size:g}, T = 1; {cfg.n_chains} chains per seed from uniform noise "
                  f"on the data box) and the exact law, on {cfg.tv_bins_2d}² bins (2-D) / "
                  f"{cfg.tv_bins_1d} bins (1-D) plus one outside the box, against chain length. "
                  "Blue: every seed's NLL model against its own p_θ (thin), mean (thick); dashed: "
                  "the same starts on the true energy against p_data (control); dotted: the TV of "
                  "as many exact draws (the floor the excess TV subtracts).")


def c16_far(out: Path, cfg, trained) -> tuple[str, str]:
    targets = cfg.c16_targets
    metrics = (("far_mass", f"p_θ mass > {cfg.far_distance:g} from support"),
               ("n_spurious", "off-support local minima"),
               ("outside_box_mass", "p_θ mass outside the data box"))
    fig, axes = plt.subplots(len(metrics), len(targets), figsize=(2.8 * len(targets), 7.0),
                             squeeze=False)
    methods = ("cd10", "pcd", "nll")
    for j, t in enumerate(targets):
        for i, (key, label) in enumerate(metrics):
            ax = axes[i, j]
            for k, m in enumerate(methods):
                vals = [r.get(key) for r in trained[(m, t)].members if r["status"] == "ok"]
                _points(ax, k, vals, METHOD_COLOURS[m])
            ax.set_xticks(range(len(methods)), methods)
            if key != "n_spurious":
                ax.set_yscale("symlog", linthresh=1e-4)
            ax.set_ylim(bottom=0)
            if j == 0:
                ax.set_ylabel(label)
            if i == 0:
                ax.set_title(t)
    fig.tight_layout()
    name = _save(fig, out, "c16_far_field.png")
    return name, (f"C16. Per seed (points; bar = mean): p_θ mass farther than "
                  f"{cfg.far_distance:g} from the data's support (exact quadrature; for ring8_hd "
                  "the exact factorised law), the number of local minima of E farther than that "
                  f"from the support (steepest descent with a line search from a grid of "
                  f"{cfg.descent_points_2d}² starts over the box widened {cfg.grid_expand}×; an "
                  f"end point counts if E rises in every probe direction at radius "
                  f"{cfg.minimum_radius:g}), and the mass outside the data box. "
                  "Mass axes are symmetric-log (linear below 1e-4).")


def landscape(out: Path, cfg, trained, target, minima) -> tuple[str, str] | None:
    """Energy maps (E − min, capped) of seed 0 per method with colour bar, the data's modes
    and the local minima found (x: off support, dot: on support)."""
    methods = [m for m in ("nll", "cd10", "pcd", "true_cd") if (m, target.name) in trained]
    grids = [trained[(m, target.name)].grids[0] for m in methods]
    if target.dim != 2 or any(g is None for g in grids):
        return None
    fig, axes = plt.subplots(1, len(methods), figsize=(3.3 * len(methods), 3.3), squeeze=False)
    for ax, m, g in zip(axes[0], methods, grids):
        n = g.n_points
        e = g.energy.numpy()
        img = np.minimum(e - e.min(), ENERGY_CAP).reshape(n, n).T
        im = ax.imshow(img, origin="lower", extent=[*g.bounds[0], *g.bounds[1]],
                       cmap="viridis", vmin=0, vmax=ENERGY_CAP)
        _overlay_modes(ax, target)
        lo, hi = target.bounds[0]
        ax.add_patch(Rectangle((lo, lo), hi - lo, hi - lo, fill=False, ec="w", lw=1.2))
        # One view for every panel: the box widened grid_expand times (a model whose box had
        # to be widened further is cropped to it).
        half = cfg.grid_expand * (hi - lo) / 2
        ax.set_xlim((lo + hi) / 2 - half, (lo + hi) / 2 + half)
        ax.set_ylim((lo + hi) / 2 - half, (lo + hi) / 2 + half)
        mins = (minima.get(f"{m}/{target.name}") or [None])[0] or []
        for mn in mins:
            ax.plot(*mn["x"][:2], "rx" if mn["off_support"] else "w.", ms=6 if
                    mn["off_support"] else 3)
        ax.set_aspect("equal")
        ax.set_title(f"{m} (seed {cfg.seed_offset})")
        ax.set_xlabel("x₁")
    axes[0, 0].set_ylabel("x₂")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label=f"E_θ − min E_θ (capped at "
                                                             f"{ENERGY_CAP:g})")
    name = _save(fig, out, f"landscape_{target.name}.png")
    return name, (f"{target.name}: energy of the first seed of each method over the quadrature "
                  f"box (the data box, white frame, widened {cfg.grid_expand}×), capped "
                  f"{ENERGY_CAP:g} nats above the minimum; dashed white: the data's modes; "
                  f"red ×: local minima farther than {cfg.far_distance:g} from the support, "
                  "white dots: the other minima.")


def c26(out: Path, cfg, trained, details) -> tuple[str, str]:
    ft, tt = cfg.c26_frozen_targets, cfg.c26_train_targets
    fig, axes = plt.subplots(1, len(ft) + len(tt), figsize=(3.2 * (len(ft) + len(tt)), 3.2),
                             squeeze=False)
    for ax, t in zip(axes[0], ft):
        rows = [r for r in details["c26_frozen"][t] if r is not None]
        for r in rows:
            ax.plot([0, 1], [r["du2020"], r["cd"]], color="0.5", lw=0.7, marker="o", ms=3)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks([0, 1], ["du2020 sign", "cd sign"])
        ax.set_xlim(-0.4, 1.4)
        ax.set_title(f"{t}: one KL-loss step")
        ax.set_ylabel("exact ΔKL[q‖p_θ] (nats)")
    for ax, t in zip(axes[0][len(ft):], tt):
        for k, m in enumerate(("du_kl_du2020", "du_kl_cd", "nll_du")):
            vals = [r.get("excess_kl_q") for r in trained[(m, t)].members if r["status"] == "ok"]
            _points(ax, k, vals, METHOD_COLOURS[m])
        ax.set_xticks(range(3), ["KL du2020", "KL cd", "no KL"])
        ax.set_title(f"{t}: trained in Du's regime")
        ax.set_ylabel("binned KL[q‖p_θ] − floor (nats)")
    fig.tight_layout()
    name = _save(fig, out, "c26.png")
    return name, ("C26. Left: from each seed's NLL model (frozen θ), one gradient step of "
                  f"length {cfg.kl_step:g}·‖θ‖ on the KL loss alone with each sign and the same "
                  "sampled gradient; the exact change of "
                  f"KL[q‖p_θ], q = {cfg.n_steps} ULA steps from uniform noise propagated on a "
                  "grid (lines join a seed's two steps). Right: models trained with Du's "
                  "decoupled sampler (T = 1.25e-3) with each KL sign and without the KL loss; "
                  "binned KL of their negatives' law to p_θ minus the same estimate on exact "
                  "draws (points: seeds; bar: mean).")


def c27(out: Path, cfg, trained) -> tuple[str, str]:
    targets = cfg.c27_targets
    fig, axes = plt.subplots(1, len(targets), figsize=(3.0 * len(targets), 3.2), squeeze=False)
    for ax, t in zip(axes[0], targets):
        for k, (m, key) in enumerate([("nll", "frac_noise_in_modes"),
                                      ("true_cd", "frac_noise_in_modes"),
                                      ("nll", "frac_data_in_modes"),
                                      ("true_cd", "frac_data_in_modes")]):
            rows = [r for r in trained[(m, t)].members if r["status"] == "ok"]
            _points(ax, k, [r.get(key) for r in rows], METHOD_COLOURS[m])
            own = [r.get("in_mode_mass") for r in rows]
            ax.scatter([k + 0.32] * len(own), own, marker="_", color="k", s=40)
        ax.set_xticks(range(4), ["nll\nnoise", "true CD\nnoise", "nll\ndata", "true CD\ndata"])
        ax.set_ylim(0, 1.02)
        ax.set_title(t)
    axes[0, 0].set_ylabel("fraction of chain ends in a data mode")
    fig.tight_layout()
    name = _save(fig, out, "c27.png")
    return name, (f"C27. Fraction of T = 1 ULA chain ends ({cfg.chain_lengths[-1]} steps) in a "
                  "data mode, from uniform noise and from test points, NLL vs true CD (points: "
                  "seeds; bar: mean); black ticks beside: each seed's own p_θ mass in the data "
                  "modes (what its chains reach if they sample p_θ).")


def c28(out: Path, cfg, details) -> tuple[str, str]:
    targets = cfg.c28_targets
    fig, axes = plt.subplots(1, len(targets), figsize=(3.6 * len(targets), 3.2), squeeze=False)
    temps = cfg.temperatures
    for ax, t in zip(axes[0], targets):
        rows = [r for r in details["funnel"][t] if r is not None]
        for r in rows:
            ax.plot(temps, [r["by_t"][f"{T:g}"]["frac_major"] for T in temps], color="tab:blue",
                    lw=0.6, alpha=0.5)
        ax.plot(temps, [np.mean([r["by_t"][f"{T:g}"]["frac_major"] for r in rows])
                        for T in temps], color="tab:blue", lw=2.2, marker="o", label="chains")
        ax.plot(temps, [np.mean([r["by_t"][f"{T:g}"]["tempered_major"] for r in rows])
                        for T in temps], color="k", ls="--", marker="s", ms=4,
                label="exact p_θ^(1/T)")
        ax.axhline(np.mean([r["model_weight"] for r in rows]), color="tab:orange", ls=":",
                   label="p_θ weight (T = 1)")
        ax.axvline(cfg.t_high, color="0.7", lw=0.8)
        ax.set_xscale("log")
        ax.set_ylim(0.3, 1.02)
        ax.set_xlabel("temperature T = σ²/2α")
        ax.set_title(t)
    axes[0, 0].set_ylabel("fraction of in-mode chains in p_θ's heavier mode")
    axes[0, -1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    name = _save(fig, out, "c28.png")
    return name, (f"C28. Du's decoupled step (α = {cfg.step_size / 2:g}, {cfg.funnel_steps} "
                  f"steps, {cfg.funnel_chains} chains per seed from uniform noise) on each seed's "
                  "NLL model at rising temperature: the share of in-mode chains in the mode p_θ "
                  "weighs more (thin: seeds; thick: mean), the exact tempered law's share, and "
                  f"p_θ's own weight; grey line: T = {cfg.t_high:g}, the registered 'high noise'.")


def chains_map(out: Path, cfg, trained, target, details) -> tuple[str, str] | None:
    methods = [m for m in ("nll", "true_cd") if f"{m}/{target.name}" in
               details["chains"]["models"]]
    if not methods or any(trained[(m, target.name)].grids[0] is None for m in methods):
        return None
    fig, axes = plt.subplots(1, len(methods), figsize=(3.6 * len(methods), 3.3), squeeze=False)
    for ax, m in zip(axes[0], methods):
        g = trained[(m, target.name)].grids[0]
        first = details["chains"]["models"][f"{m}/{target.name}"]["first"]
        dens = np.exp(-(g.energy.numpy() - g.energy.numpy().min()))
        lo, hi = target.bounds[0]
        if target.dim == 2:
            n = g.n_points
            im = ax.imshow(dens.reshape(n, n).T / dens.max(), origin="lower",
                           extent=[*g.bounds[0], *g.bounds[1]], cmap="magma", vmin=0, vmax=1)
            xn, xd = first["x_noise"].numpy(), first["x_data"].numpy()
            ax.scatter(xn[:, 0], xn[:, 1], s=2, c="tab:cyan", label="from noise")
            ax.scatter(xd[:, 0], xd[:, 1], s=2, c="tab:green", label="from data")
            _overlay_modes(ax, target)
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
            ax.set_aspect("equal")
            ax.set_xlabel("x₁")
            ax.set_ylabel("x₂")
            fig.colorbar(im, ax=ax, shrink=0.8, label="p_θ / max p_θ")
        else:
            x = g.points[:, 0].numpy()
            p = np.exp(-g.energy.numpy() - g.log_z)
            bins = np.linspace(lo, hi, 61)
            ax.hist(first["x_noise"][:, 0].numpy(), bins=bins, density=True, alpha=0.5,
                    color="tab:cyan", label="from noise")
            ax.hist(first["x_data"][:, 0].numpy(), bins=bins, density=True, alpha=0.5,
                    color="tab:green", label="from data")
            ax.plot(x, p, "k", lw=1.2, label="p_θ")
            ax.set_xlim(lo, hi)
            ax.set_xlabel("x")
            ax.set_ylabel("density")
        ax.set_title(f"{m} (seed {cfg.seed_offset})")
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.25 if target.dim == 2 else 1.02, 1),
                       markerscale=4)
    name = _save(fig, out, f"chains_{target.name}.png")
    return name, (f"{target.name}: ends of {cfg.n_chains} T = 1 ULA chains "
                  f"({cfg.chain_lengths[-1]} steps) from uniform noise and from test points on "
                  "the first seed's NLL and true-CD models, over p_θ (dashed: the data's modes).")


def all_figures(out: Path, cfg, trained, targets, details, fams) -> list[tuple[str, str]]:
    figs = [c7_tv(out, cfg, details), c16_far(out, cfg, trained)]
    for t in cfg.c16_targets:
        f = landscape(out, cfg, trained, targets[t], details["minima"])
        if f:
            figs.append(f)
    figs.append(c26(out, cfg, trained, details))
    figs.append(c27(out, cfg, trained))
    for t in cfg.c27_targets:
        f = chains_map(out, cfg, trained, targets[t], details)
        if f:
            figs.append(f)
    figs.append(c28(out, cfg, details))
    return figs
