"""Verdicts (from :mod:`ebmref.verdict` only), ``metrics.json`` and ``report.md`` of the claims
study. Every verdict word in the report is a :class:`ebmref.verdict.Comparison`'s own; this
module only chooses which registered comparison goes where."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from ebmref import verdict as V
from toy_problems import study_figures as F
from toy_problems.study_config import Registered, StudyConfig

EXPERIMENTS = ("C7", "C7 control", "C16", "C26 frozen", "C26 training", "C27", "C28",
               "C28 contrast")
CLAIM_TITLES = {
    "C7": "chains started from noise descend to the model's low-energy, data-like points (§2.4)",
    "C16": "CD from the data leaves spurious low-energy regions far from the data; persistent "
           "chains help (§4.6)",
    "C26": "the flipped-sign (Du 2020) KL loss pulls the sampler's law toward p_θ (§5.4.4)",
    "C27": "true CD: chains from noise do not reach the data, chains from data stay (§6.1, toy)",
    "C28": "high sampling noise sends every chain to the same mode (§6.2, toy analogue)",
}


def decide(regs: list[Registered], values: dict, cfg: StudyConfig) -> dict[str, dict]:
    """One family per experiment (Holm within it): {experiment: {name: Comparison}}."""
    fams: dict[str, dict] = {}
    for r in regs:
        v = values[(r.experiment, r.name)]
        pairs = list(zip(v["a"], v["b"]))
        if r.paired:
            keep = [(x, y) for x, y in pairs if x is not None and y is not None]
            a, b = [x for x, _ in keep], [y for _, y in keep]
        else:
            a = [x for x in v["a"] if x is not None]
            b = [y for y in v["b"] if y is not None]
        if len(a) < 2 or len(b) < 2:
            c = V.not_measured(f"fewer than 2 scored seeds in an arm ({len(a)}, {len(b)})")
        else:
            c = V.compare(a, b, direction=r.direction, alpha=cfg.alpha, paired=r.paired,
                          units=r.units, label=r.name)
        fams.setdefault(r.experiment, {})[r.name] = c
    return {e: V.family(f) for e, f in fams.items()}


def c28_claim(fams: dict, cfg: StudyConfig):
    """C28's pre-registered reading: collapse under unequal weights, its absence with equal
    weights, and the contrast of the two (ebmref.verdict.qualified)."""
    if "C28" not in fams or len(cfg.c28_targets) != 2:
        return None
    rows = list(fams["C28"].values())
    contrast = next(iter(fams.get("C28 contrast", {}).values()), None)
    return V.qualified(rows[0], rows[1], interaction=contrast,
                       condition=f"the modes have unequal weights ({cfg.c28_targets[0]})",
                       label="C28")


def short(c) -> str:
    """verdict, effect [CI] for a summary line (the numbers are the Comparison's own)."""
    if c.verdict == "not measured":
        return c.line()
    ci = f" [{V._num(c.ci[0])}, {V._num(c.ci[1])}]" if c.ci else ""
    return f"{c.verdict} (Δ = {V._num(c.effect)}{ci}, p_Holm = {V._p(c.p_adjusted)})"


def counts(rows) -> str:
    """'k verified, j refuted, …' over a claim's comparisons (the rows' own verdicts)."""
    tally: dict[str, int] = {}
    for c in rows:
        tally[c.verdict] = tally.get(c.verdict, 0) + 1
    return ", ".join(f"{n} {v}" for v, n in sorted(tally.items(), key=lambda kv: -kv[1]))


def summary_lines(fams: dict, cfg: StudyConfig) -> list[str]:
    lines = []
    for claim, exps in (("C7", ("C7",)), ("C16", ("C16",)),
                        ("C26", ("C26 frozen", "C26 training")), ("C27", ("C27",))):
        rows = [c for e in exps for c in fams.get(e, {}).values()]
        parts = [f"{name}: {short(c)}" for e in exps for name, c in fams.get(e, {}).items()]
        extra = ""
        if claim == "C7" and "C7 control" in fams:
            extra = (" Control, the same chains on the true energy: " + "; ".join(
                f"{name}: {short(c)}" for name, c in fams["C7 control"].items()) + ".")
        lines.append(f"- **{claim}** — {CLAIM_TITLES[claim]}. Of {len(rows)} comparisons: "
                     f"{counts(rows)}. " + "; ".join(parts) + "." + extra)
    c28 = c28_claim(fams, cfg)
    if c28 is not None:
        parts = [f"{name}: {short(c)}" for name, c in fams["C28"].items()]
        contrast = [f"{name}: {short(c)}" for name, c in fams.get("C28 contrast", {}).items()]
        lines.append(f"- **C28** — {CLAIM_TITLES['C28']}. **{c28.verdict}** (ebmref.verdict."
                     f"qualified over the rows): " + "; ".join(parts + contrast) + ".")
    return lines


def predictions(regs: list[Registered]) -> dict[str, list[str]]:
    """Per experiment, what each registered comparison predicts (a vs b, metric, margin)."""
    out: dict[str, list[str]] = {}
    for r in regs:
        op = ">" if r.direction == "greater" else "<"
        rhs = r.b if r.b != "margin" else "0"
        if r.shift:
            rhs += f" {'+' if r.shift > 0 else '−'} {abs(r.shift):g}"
        line = f"{r.metric}: {r.a} {op} {rhs}" + (f" — {r.meaning}" if r.meaning else "")
        if line not in out.setdefault(r.experiment, []):
            out[r.experiment].append(line)
    return out


def exclusions(fam_name: str, values: dict) -> list[str]:
    """Seeds left out of a family's comparisons for a non-finite probe value."""
    out = []
    for (e, n), v in values.items():
        bad = v.get("nonfinite", {})
        if e == fam_name and (bad.get("a") or bad.get("b")):
            out.append(f"- {n}: non-finite value excluded at seed index(es) a {bad['a']}, "
                       f"b {bad['b']}")
    return out


def rows_table(fam: dict) -> str:
    head = ("| comparison | n | effect Δ | 95 % CI | p (raw) | p_Holm (m) | verdict | MDE |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- |")
    out = [head]
    for name, c in fam.items():
        if c.verdict == "not measured":
            out.append(f"| {name} | – | – | – | – | – | not measured: {c.note} | – |")
            continue
        n = f"{c.n_a} pairs" if c.paired else f"{c.n_a} + {c.n_b}"
        ci = f"[{V._num(c.ci[0])}, {V._num(c.ci[1])}]" if c.ci else "n/a"
        mde = V._num(c.mde) if c.verdict == "not reproduced" else "–"
        note = f" ({c.note})" if c.note else ""
        out.append(f"| {name} | {n} | {V._num(c.effect)} {c.units} | {ci} | "
                   f"{V._p(c.p_two_sided)} | {V._p(c.p_adjusted)} ({c.m}) | **{c.verdict}**{note} "
                   f"| {mde} |")
    return "\n".join(out)


def _fmt(values, digits=3) -> str:
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return "–"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{statistics.mean(v):.{digits}f} ± {statistics.stdev(v):.{digits}f}"


def jobs_table(jobs: dict) -> str:
    head = ("| method / target | lr | l2 | updates run (stop) | best update: median [min, max] | "
            "scored seeds | test NLL gap (nats) | far-field mass | tune + train CPU (s) |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    out = [head]
    for key, j in jobs.items():
        steps = j["best_step"]
        ok = [m for m in j["members"] if m["status"] == "ok"]
        flags = [f"{m['seed']}: {m['status']}" for m in j["members"] if m["status"] != "ok"]
        flags += [f"{m['seed']}: diverged at {m['diverged_at']}" for m in j["members"]
                  if m.get("diverged_at") is not None]
        scored = f"{len(ok)}/{len(j['members'])}" + (f" ({'; '.join(flags)})" if flags else "")
        lrs = {r["lr"] for r in j["tuning"]}
        l2s = {r["l2"] for r in j["tuning"]}

        def edge(v, grid):
            return f"{v:g}" + (" (edge)" if len(grid) > 1 and v in (min(grid), max(grid)) else "")

        out.append(
            f"| {key} | {edge(j['lr'], lrs)} | {edge(j['l2'], l2s)} | {j['updates']} "
            f"({j['stopped']}) | "
            f"{statistics.median(steps):.0f} [{min(steps)}, {max(steps)}] | {scored} | "
            f"{_fmt([m.get('nll_gap') for m in ok])} | {_fmt([m.get('far_mass') for m in ok], 4)} "
            f"| {j['tune_cpu_s']:.0f} + {j['train_cpu_s']:.0f} |")
    return "\n".join(out)


def tuning_table(jobs: dict) -> str:
    out = ["| method / target | " + " | ".join(
        f"lr {r['lr']:g}, l2 {r['l2']:g}" for r in next(iter(jobs.values()))["tuning"]) + " |"]
    out.append("| --- |" + " --- |" * len(next(iter(jobs.values()))["tuning"]))
    for key, j in jobs.items():
        cells = []
        for r in j["tuning"]:
            v = r["mean_best_val"]
            mark = "**" if (r["lr"], r["l2"]) == (j["lr"], j["l2"]) else ""
            cells.append(f"{mark}{v:.3f}{mark}" if math.isfinite(v) else "diverged")
        out.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _json_safe(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def write(out: Path, cfg: StudyConfig, command: str, regs, values, details, jobs, timing,
          env, trained, targets) -> dict:
    fams = decide(regs, values, cfg)
    c28 = c28_claim(fams, cfg)
    figs = F.all_figures(out, cfg, trained, targets, details, fams)
    metrics = {
        "command": command, "config": cfg.to_dict(), "environment": env, "timing": timing,
        "registered": [r.__dict__ for r in regs],
        "values": {f"{e} | {n}": v for (e, n), v in values.items()},
        "verdicts": {e: {n: c.to_dict() for n, c in f.items()} for e, f in fams.items()},
        "claim_lines": {"C28": c28.to_dict() if c28 is not None else None},
        "jobs": jobs,
        "details": {"chains": {k: {"members": v["members"]}
                               for k, v in details["chains"]["models"].items()},
                    "control": details["chains"]["control"],
                    "c26_frozen": details["c26_frozen"], "funnel": details["funnel"]},
    }
    (out / "metrics.json").write_text(json.dumps(_json_safe(metrics), indent=1) + "\n")
    from toy_problems.study_text import report_markdown

    excluded = {e: exclusions(e, values) for e in fams}
    extra = {"excluded": excluded, "predictions": predictions(regs), "details": details}
    (out / "report.md").write_text(report_markdown(cfg, command, fams, c28, jobs, timing, env,
                                                   figs, extra, summary_lines(fams, cfg),
                                                   rows_table, jobs_table, tuning_table))
    return metrics
