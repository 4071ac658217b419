"""Figures 3, 4, 5 of the paper (chain strips) and a metrics table across presets:
``python -m mnist.figures --study DIR`` (the layout written by ``mnist/run_section6.py``).

A figure stacks chain strips (:func:`mnist.sample.save_strip` layout: columns = evenly spaced
frames) of several sample sets, one chain per set, in the paper's order:

* Figure 3 (§6.1, C27): true-CD model from noise; true-CD model from a data point; NLL model
  from the same data point — same steps and noise.
* Figure 4 (§6.2.1, C28): NLL model from one start with low noise (short), high noise (short),
  high noise (long), and high noise (long) from another start.
* Figure 5 (§6.3, C29): long chains of the elastic model sampled with deformations; the NLL
  model sampled without; the NLL model sampled with deformations.

Each figure is labelled (rows: what the chain is; columns: the sampler step of each frame) and
has a caption file (``figN.md``) with the full settings of each row; the table
(``metrics.md``) has one row per sample set with the headline numbers of
:func:`mnist.evaluate.summary_row`.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from ebmref.cli import ArgumentParser, add_debug_argument, guarded
from ebmref.files import atomic_write, atomic_write_text, check_output_dir
from mnist.evaluate import METRICS_NAME, summary_row
from mnist.runs import CHAINS_NAME, load_chains

# figure name -> list of (sample-set name, chain index, caption)
FIGURES: dict[str, list[tuple[str, int, str]]] = {
    "fig3": [("true_cd_noise", 0, "true CD model, chain from noise"),
             ("true_cd_data", 0, "true CD model, chain from a data point"),
             ("nll_data", 0, "NLL (IGEBM) model, chain from the same data point")],
    "fig4": [("nll_data_lownoise_short", 0, "NLL model, low noise, short chain"),
             ("nll_data_highnoise_short", 0, "NLL model, high noise, short chain"),
             ("nll_data_highnoise_long", 0, "NLL model, high noise, long chain"),
             ("nll_data_highnoise_long", 1, "NLL model, high noise, long chain, another start")],
    "fig5": [("elastic_noise_elastic", 0, "trained and sampled with elastic deformation"),
             ("nll_noise", 0, "trained and sampled without deformation"),
             ("nll_noise_elastic", 0, "trained without, sampled with deformation")],
}


TITLES = {"fig3": "Figure 3 (§6.1, C27): true CD vs NLL chains",
          "fig4": "Figure 4 (§6.2, C28): sampler noise",
          "fig5": "Figure 5 (§6.3, C29): elastic deformations"}


def chain_row(trajectory: torch.Tensor, chain: int, n_cols: int = 12
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_cols, 1, H, W) evenly spaced frames of one chain, and their frame indices."""
    t = trajectory.shape[0]
    cols = torch.linspace(0, t - 1, min(n_cols, t)).round().long()
    return trajectory[cols, chain].float(), cols


def _draw(rows: list[tuple[torch.Tensor, list[int], str]], title: str, out: Path) -> None:
    """A labelled grid: one row per chain (its caption on the left), frames left to right
    with the sampler step under each column; 150 dpi."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(len(r[1]) for r in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.0 * n + 2.6, 1.05 * len(rows) + 0.7),
                             squeeze=False)
    for i, (frames, steps, caption) in enumerate(rows):
        for j in range(n):
            ax = axes[i, j]
            ax.imshow(frames[j, 0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == len(rows) - 1:
                ax.set_xlabel(f"{steps[j]:,}", fontsize=7)
        axes[i, 0].set_ylabel(caption, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title + " (columns: sampler step)", fontsize=9)
    fig.tight_layout()
    atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=150))
    plt.close(fig)


def make_figure(samples_dir: Path, rows: list[tuple[str, int, str]], out: Path,
                n_cols: int = 12, title: str = "") -> list[str] | None:
    """One chain per row, with labels; rows whose sample set is missing are skipped. Also
    writes the long captions to ``<out>.md``."""
    drawn, captions = [], []
    for name, chain, caption in rows:
        if not (samples_dir / name / CHAINS_NAME).is_file():
            continue
        chains = load_chains(samples_dir / name)
        traj, s = chains["trajectory"], chains["meta"]["sampler"]
        if chain >= traj.shape[1]:
            continue
        frames, cols = chain_row(traj, chain, n_cols)
        every = int(chains["meta"]["record_every"])
        drawn.append((frames, [int(c) * every for c in cols], caption))
        captions.append(f"{caption} ({name}, chain {chain}: {s['n_steps']} steps, "
                        f"noise {s['noise']}, elastic every {s['transition_every']})")
    if not drawn:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    _draw(drawn, title or out.stem, out)
    lines = [f"Row {i + 1}: {c}" for i, c in enumerate(captions)]
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    return lines


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def metrics_table(samples_dir: Path, reference: dict | None = None) -> str:
    """Markdown table: one row per sample set (sorted by name)."""
    cols = ["confident", "digit_entropy", "confident_digit_entropy", "frechet", "switches_per_1k",
            "confident_switches_per_1k", "energy_gap", "same_digit_as_start", "l2_from_start"]
    head = ["sample set", "model", "init", "steps", "noise", "elastic every", *cols]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for d in sorted(p for p in samples_dir.iterdir() if (p / METRICS_NAME).is_file()):
        m = json.loads((d / METRICS_NAME).read_text())
        row, s = summary_row(m), m["sampling"]
        model = Path(s["run"]).name
        vals = [d.name, model, s["init"], s["sampler"]["n_steps"], s["sampler"]["noise"],
                s["sampler"]["transition_every"]]
        vals += [row.get(c, math.nan) for c in cols]
        lines.append("| " + " | ".join(_fmt(v) for v in vals) + " |")
    if reference is not None:
        vals = [f"real digits (reference, n={reference['n']})", "–", "–", "–", "–", "–",
                reference["confident_fraction"], reference["digit_entropy"],
                reference.get("confident_digit_entropy", math.nan),
                reference.get("frechet_distance", math.nan)] + [math.nan] * 5
        lines.append("| " + " | ".join(_fmt(v) for v in vals) + " |")
    return "\n".join(lines) + "\n"


STUDY_NAME = "study.json"
"""What run_section6 records about a study: scale, smoke run or not, sets, seed, data."""


def make_all(study: Path, out: Path | None = None) -> dict:
    out = out or study / "figures"
    samples = study / "samples"
    made = {}
    for name, rows in FIGURES.items():
        lines = make_figure(samples, rows, out / f"{name}.png", title=TITLES[name])
        if lines:
            made[name] = lines
    ref_path = study / "reference_metrics.json"
    ref = json.loads(ref_path.read_text()) if ref_path.is_file() else None
    table = metrics_table(samples, ref)
    info_path = study / STUDY_NAME
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    if info.get("smoke"):
        table = (f"**SMOKE RUN ({info.get('scale')} scale): a test of the pipeline; the numbers "
                 "below are not results.**\n\n" + table)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.md", table)
    made["metrics.md"] = table
    return made


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m mnist.figures", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", required=True, help="directory written by run_section6.py")
    parser.add_argument("--out", default=None, help="default: STUDY/figures")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    return guarded(parser.prog, lambda: _run(args), debug=args.debug)


def _run(args: argparse.Namespace) -> int:
    study = Path(args.study)
    if not (study / "samples").is_dir():
        raise ValueError(f"--study: {study} is not a study directory (expected the samples/ "
                         "folder that mnist/run_section6.py writes)")
    out = check_output_dir(args.out, "--out") if args.out else None
    made = make_all(study, out)
    for k, v in made.items():
        print(k, v if isinstance(v, str) else "\n  ".join(["", *v]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
