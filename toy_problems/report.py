"""report.md of the default run: the setup, the metrics table and the figures (descriptive).

It words no verdict: claims are decided by the claims study (:mod:`toy_problems.study`) with
:mod:`ebmref.verdict`, the only place verdict words come from.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from ebmref.files import atomic_write_text
from toy_problems.config import ToyConfig
from toy_problems.methods import METHODS

COLUMNS = [
    ("nll_gap", "NLL gap (nats)", 3),
    ("mass_outside", "mass off support", 3),
    ("mode_weight_error", "mode-weight TV", 3),
    ("frac_noise_in_modes", "noise→mode", 2),
    ("frac_data_in_modes", "data→mode", 2),
    ("switches_per_1000", "switches/1k", 2),
    ("kl_q", "KL[q‖p_θ]", 3),
]


def fmt(cell, digits: int) -> str:
    if not cell:
        return "–"
    if cell["n"] > 1 and math.isfinite(cell["sd"]):
        return f"{cell['mean']:.{digits}f} ± {cell['sd']:.{digits}f}"
    return f"{cell['mean']:.{digits}f}"


def metrics_table(summary: dict, references: dict, targets: Sequence[str],
                  methods: Sequence[str]) -> str:
    head = "| target | method | " + " | ".join(c[1] for c in COLUMNS) + " |"
    lines = [head, "|" + " --- |" * (len(COLUMNS) + 2)]
    for t in targets:
        ref = references.get(t, {})
        vals = [f"{ref[k]:.{d}f}" if k in ref else "–" for k, _, d in COLUMNS]
        lines.append(f"| {t} | *data (exact)* | " + " | ".join(vals) + " |")
        for m in methods:
            c = summary.get(f"{t}/{m}", {})
            vals = [fmt(c.get(k), d) for k, _, d in COLUMNS]
            div = f" ({c['diverged']} diverged)" if c.get("diverged") else ""
            lines.append(f"| {t} | {m}{div} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


CLAIMS_POINTER = (
    "This report is descriptive: mean ± sd over a few seeds at one fixed budget, no tuning and "
    "no early stopping, so it decides no claim. The verdicts on C7, C16, C26, C27 and C28 come "
    "from the claims study (`python -m toy_problems --study claims`, committed in "
    "`toy_problems/results/claims/`): tuned, early-stopped 10-seed ensembles, metrics built for "
    "each claim and pre-registered comparisons decided by `ebmref.verdict` with Holm's "
    "correction.")


def methods_table(methods: Sequence[str]) -> str:
    lines = ["| method | chains start / sampler / extras | paper |", "| --- | --- | --- |"]
    for m in methods:
        lines.append(f"| {m} | {METHODS[m].summary} | {METHODS[m].paper} |")
    return "\n".join(lines)


def funnel_lines(funnel_rows: list[dict]) -> list[str]:
    """The funnel numbers (C28's toy analogue), described, not decided."""
    out = []
    for t in sorted({r["target"] for r in funnel_rows}):
        rs = [r for r in funnel_rows if r["target"] == t]
        temps = sorted({r["temperature"] for r in rs})
        mean = {T: sum(r["frac_heavy"] for r in rs if r["temperature"] == T)
                / sum(1 for r in rs if r["temperature"] == T) for T in temps}
        pred = {T: sum(r["tempered_heavy"] for r in rs if r["temperature"] == T)
                / sum(1 for r in rs if r["temperature"] == T) for T in temps}
        out.append(f"- {t}: true weight of the heaviest mode {rs[0]['true_heavy']:.2f}; fraction "
                   "of in-mode chains in it " + ", ".join(
                       f"T={T:g}: {mean[T]:.2f} (exact p_θ^{{1/T}}: {pred[T]:.2f})"
                       for T in temps))
    return out


def findings(summary: dict, references: dict, targets: Sequence[str],
             methods: Sequence[str]) -> list[str]:
    """The opening summary: per target the methods with the lowest and highest test-NLL gap,
    against the exact data's gap of 0 (descriptive: the claims study decides)."""
    out = ["## Summary of findings", ""]
    for t in targets:
        gaps = {m: summary[f"{t}/{m}"]["nll_gap"]["mean"] for m in methods
                if summary.get(f"{t}/{m}", {}).get("nll_gap")}
        if not gaps:
            continue
        order = sorted(gaps, key=gaps.get)
        line = (f"- **{t}**: test-NLL gap (nats, 0 = the data's own law) lowest for "
                f"{order[0]} ({gaps[order[0]]:.3f}), highest for {order[-1]} "
                f"({gaps[order[-1]]:.3f}); {len(order)} methods span "
                f"{gaps[order[0]]:.3f}–{gaps[order[-1]]:.3f}")
        if "annulus_gap" in references.get(t, {}):
            line += f" (the modes smeared into an annulus: {references[t]['annulus_gap']:.3f})"
        out.append(line + ".")
    out += [f"- {CLAIMS_POINTER}", ""]
    return out


CAPTIONS = {
    "landscape": ("the data's density and p_θ of seed 0 of each method (2-D: top row, each "
                  "panel on its own colour scale; 1-D: left) and E − min in nats, capped "
                  "(2-D: bottom row, colour bar; 1-D: right), over the data box"),
    "chains": ("ends and a few paths of ULA chains (eq. 1, T = 1) from uniform noise (red) and "
               "from test points (blue) on seed 0 of each method; grey contours (1-D: black "
               "curve): the data's density"),
}


def caption(figure: str) -> str:
    kind, _, target = figure.removesuffix(".png").partition("_")
    return f"*Figure — {target}: {CAPTIONS[kind]}.*" if kind in CAPTIONS else ""


def write_report(out: Path, cfg: ToyConfig, summary: dict, references: dict,
                 figs: list[str], timing: dict, funnel_rows: list[dict]) -> None:
    b = cfg.budget()
    n_div = sum(c.get("diverged", 0) for c in summary.values())
    lines = [
        "# Toy problems: MCMC-trained EBMs with exact likelihood",
        "",
        (f"Generated by `python -m toy_problems{' --quick' if cfg.quick else ''}` "
        f"({'SMOKE RUN: tiny budget, numbers not meaningful' if cfg.quick else 'full run'}). "
        f"Wall time {timing['wall_s']:.0f} s (process CPU {timing['process_cpu_s']:.0f} s, "
        f"1-min load average at the end {timing['load_average_1min_at_end']:.1f} on "
        f"{os.cpu_count()} CPUs); {cfg.seeds} seed(s); every cell is mean ± sd over seeds."),
        "",
        *findings(summary, references, cfg.targets, cfg.methods),
        ("**Setup.** Every method trains the same energy E_θ(x) = MLP_θ(x) + ‖x‖²/(2R²) "
        f"(Swish MLP, {b.depth}×{b.hidden}; the fixed quadratic with R = half the box makes "
        "Z_θ finite) with ebmref's `train()`, the same budget "
        f"({b.steps} Adam updates on ring8/checkerboard, 40 % of that on the two-mode "
        f"targets, lr {b.lr:g}, β = ({b.beta1:g}, 0.999), batch {b.batch_size}, "
        f"{b.n_steps} sampler steps per update, replay buffer {b.buffer_size}, L2 {b.l2:g}) "
        f"and, unless the method says otherwise, ULA in the paper's parametrisation (eq. 1, "
        f"λ = {b.step_size:g}, T = 1). Sampler grid: ULA eq. 1 for every method; Du's decoupled "
        "step and MALA only with the NLL buffer (nll_du, nll_mala): the sampler question is "
        "asked once, on the objective where it matters, to fit the time budget. "),
        "",
        ("**Metrics** (all from the trained model's exact log Z_θ by Simpson quadrature with "
        f"the spacing of a {cfg.grid_points_2d}² grid (2-D) / {cfg.grid_points_1d} points (1-D) "
        "on the data's box, over that box widened "
        f"{cfg.grid_expand}× — a learned energy may hold mass beyond the data): *NLL gap* = "
        "test NLL of p_θ − test NLL of p_data on "
        f"{cfg.n_test} test points, an unbiased estimate of KL[p_data‖p_θ]; *mass off "
        "support* = p_θ mass outside the region holding 99.9 % of p_data (balls of Mahalanobis "
        "radius r₉₉.₉ around mixture components; the black squares of the checkerboard); "
        "*mode-weight TV* = ½Σ|π̂ₖ − πₖ| over the data modes (r₉₉ balls / squares); "
        f"*noise→mode* / *data→mode* = fraction of {cfg.eval_chains} ULA chains (eq. 1, T = 1, "
        f"{cfg.eval_steps} steps) started from uniform noise on the box / from test points that "
        "end in a data mode; *switches/1k* = mode switches per 1,000 steps of the chains from "
        "data (between mode cores of radius 1σ / half-squares); *KL[q‖p_θ]* = histogram "
        f"({cfg.kl_bins} bins per axis) estimate of the KL from the law q of the training "
        "negatives (final replay buffer; CD-10: 10 steps from data) to p_θ. The *data (exact)* "
        "rows apply the same metrics to exact samples of p_data."),
        "",
        methods_table(cfg.methods),
        "",
        "## Metrics by method × target",
        "",
        metrics_table(summary, references, cfg.targets, cfg.methods),
        "",
    ]
    if n_div:
        lines += [(f"{n_div} run(s) diverged (TrainingDiverged); their cells average the "
                  "remaining seeds."), ""]
    kl_bias = [c["kl_bias"]["mean"] for c in summary.values() if "kl_bias" in c]
    leak = [c["leak"]["mean"] for c in summary.values() if "leak" in c]
    qerr = [c["log_z_error"]["mean"] for c in summary.values() if "log_z_error" in c]
    for t, ref in references.items():
        if "annulus_gap" in ref:
            lines += [(f"Yardstick for {t}: the ring smeared into a rotationally symmetric annulus "
                      f"has NLL gap {ref['annulus_gap']:.3f} nats (KL[p_data‖annulus] on the "
                      "test points); a method near that gap has not yet resolved the modes."),
                      ""]
    if kl_bias:
        lines += [(f"Estimator floors: the KL histogram estimate of exact draws of p_θ gives "
                  f"{min(kl_bias):.3f}–{max(kl_bias):.3f} nats (its bias at this sample size); "
                  f"log Z quadrature error ≤ {max(qerr):.1e}; mass beyond the quadrature box "
                  f"(log Z on a box twice as wide minus log Z) ≤ {max(leak):.1e} nats."), ""]
    lines += ["![headline metrics](summary.png)", "", "## Claims", ""]
    if funnel_rows:
        lines += [("Funnel (Du's decoupled step from noise at rising temperature on the NLL "
                   "models):"), "", *funnel_lines(funnel_rows), "", "![C28 funnel](funnel.png)",
                  ""]
    lines += ["## Landscapes and chains", ""]
    for f in figs:
        lines += [f"![{f}]({f})", "", caption(f), ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
