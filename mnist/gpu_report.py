"""Part e of the GPU study (:mod:`mnist.gpu_study`): ``results.md``, a short table of what ran —
the machine and data, each part's status, the two ceilings, the correctness errors, the
iteration times against the FLOP floor and the C27/C29/C28 numbers — read back from the parts'
JSON records, so it can be rewritten at the end of every invocation."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ebmref.files import atomic_write_text

if TYPE_CHECKING:
    from mnist.gpu_study import Study

NOT_ERRORS = ("acceptance", "chains_with_flipped_decisions")
SUMMARY_COLUMNS = (("confident", "confident"), ("confident_digit_entropy", "digit entropy (conf.)"),
                   ("frechet", "Fréchet"), ("confident_switches_per_1k", "switches / 1k (conf.)"),
                   ("energy_gap", "E gap"), ("same_digit_as_start", "start digit kept"))


def _f(v: object, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(_f(v) for v in row) + " |" for row in rows] + [""]


def _head(study: Study, env: dict) -> list[str]:
    d = env.get("device", {})
    lines = ["# GPU study: results", ""]
    if study.dry_run:
        lines += [("**DRY RUN: the CPU at a tiny scale, a test of the script; the numbers below "
                  "are not results.**"), ""]
    rec = study.record
    lines += [f"- machine: {d.get('name', rec.get('device_name', '?'))}"
              + (f", capability {d['capability']}, {d['memory_GiB']:.0f} GiB, "
                 f"{d['multiprocessors']} SMs, cuDNN {d['cudnn']}" if "capability" in d else ""),
              (f"- torch {d.get('torch', '?')}, CUDA build {d.get('cuda_build')}, "
              f"python {d.get('python', '?')}"),
              (f"- data: {study.data_info.get('train', '?')} / "
              f"{study.data_info.get('heldout', '?')} ({study.data_info.get('chosen', '')})"),
              (f"- seed {study.seed}; budget {study.budget_s / 60:g} min; spent "
              f"{rec.get('spent_s', 0.0) / 60:.1f} min over {len(rec.get('invocations', []))} "
              "invocation(s)"), ""]
    return lines


def _status(study: Study, parts: dict) -> list[str]:
    rows = [[name, (p or {}).get("status", "not run"), (p or {}).get("seconds"),
             (p or {}).get("reason", "")] for name, p in parts.items()]
    return ["## Parts", ""] + table(["part", "status", "seconds", "note"], rows)


def _ceilings(env: dict) -> list[str]:
    c = env.get("ceilings")
    if not c:
        return []
    rates = [c.get(k, {}).get("TFLOP_per_s") or c.get(k, {}).get("skipped")
             for k in ("bf16", "fp32", "tf32")]
    return ["## Ceilings (measured)", ""] + table(
        ["device-to-device copy GB/s", "bf16 TFLOP/s", "fp32 TFLOP/s", "TF32 TFLOP/s"],
        [[c["copy"]["GB_per_s"], *rates]])


def _correctness(part: dict | None) -> list[str]:
    if not part or "ula" not in part:
        return []
    from mnist.gpu_bench import TOLERANCES

    modes = part.get("modes", [])
    rows = []
    for check in ("ula", "mala", "train_step"):
        errors = part[check].get(modes[0], {})
        for key in [k for k in errors if k not in NOT_ERRORS]:
            rows.append([check, key, *[part[check].get(m, {}).get(key) for m in modes],
                         TOLERANCES[check].get(key)])
    return (["## Correctness (relative error against float64 on the CPU)", "",
             f"Judged: {part.get('judged_mode')}; passed: {part.get('passed')}.", ""]
            + table(["check", "quantity", *modes, "tolerance"], rows))


def _iteration(part: dict | None) -> list[str]:
    if not part or "variants" not in part:
        return []
    fl = part["flops"]
    rows = []
    for name, v in part["variants"].items():
        floor = v.get("floor", {})
        note = v.get("failed") or v.get("capture") or v.get("note") or ""
        if "first_call_s" in v:
            note = f"first call (compiles) {v['first_call_s']:.1f} s; " + note
        if "rel_err_vs_library_sampler" in v:
            note += (f"; against the library sampler: rel. error "
                     f"{_f(v['rel_err_vs_library_sampler'])}"
                     + ("" if v.get("agrees") else " (DISAGREES: time not comparable)"))
        rows.append([name, 1e3 * v["median_s"] if "median_s" in v else None,
                     1e3 * floor["tf32"]["floor_s"] if "tf32" in floor else None,
                     *[floor.get(k, {}).get("fraction_of_floor") for k in ("tf32", "fp32",
                                                                            "bf16")], note])
    return (["## One IGEBM iteration (nll preset) against its FLOP floor", "",
             (f"{fl['formula']}; B = {fl['batch']}, T = {fl['n_steps']}: "
             f"F = {fl['forward_flops_per_image'] / 1e6:.2f} MFLOP, "
             f"{fl['total_flops'] / 1e12:.3f} TFLOP per iteration. Fraction of floor = floor "
             "time / measured time at each ceiling."), ""]
            + table(["variant", "ms / iteration (median)", "floor ms (TF32)",
                     "fraction (TF32)", "fraction (fp32)", "fraction (bf16)", "note"], rows))


def _plan(study: Study) -> list[str]:
    path = study.out / "plan.json"
    if not path.is_file():
        return []
    plan = json.loads(path.read_text())
    lines = ["## Plan of the §6 parts", "",
             (f"Sized with {plan.get('left_s', 0):.0f} s of budget left (after the classifier, "
              f"{plan.get('classifier_s') or 0:.0f} s): {plan.get('updates')} updates per "
              f"preset, chains of {plan.get('chain_steps')} steps ({plan.get('n_chains')} "
              f"chains); update times (s) {_rounded(plan.get('update_s', {}))}, one chain step "
              f"{_f(plan.get('chain_step_s'))} s."), ""]
    rows = [[p, (plan.get("estimates_s") or {}).get(p), (study.part(p) or {}).get("seconds"),
             plan.get("dropped", {}).get(p, "")] for p in ("c27", "c29", "c28")]
    return lines + table(["part", "estimate s", "seconds (last invocation)", "dropped"], rows)


def _rounded(d: dict) -> dict:
    return {k: float(f"{v:.3g}") for k, v in d.items()}


def _reference_row(study: Study) -> list | None:
    path = study.out / "reference_metrics.json"
    if not path.is_file():
        return None
    r = json.loads(path.read_text())
    values = {"confident": r.get("confident_fraction"),
              "confident_digit_entropy": r.get("confident_digit_entropy"),
              "frechet": r.get("frechet_distance")}
    return [f"real digits (n = {r.get('n')})", "–", "–", "–", "–", "–",
            *[values.get(k) for k, _ in SUMMARY_COLUMNS]]


def _section6(name: str, part: dict | None, reference: list | None) -> list[str]:
    if not part:
        return []
    lines = [f"## {part.get('claim', name.upper())}", "",
             f"Status: {part.get('status')}" + (f" ({part['reason']})" if part.get("reason")
                                                else "") + f"; {part.get('updates_per_preset')} "
             f"updates per preset, chains of {part.get('chain_steps')} steps, "
             f"{part.get('n_chains')} chains.", ""]
    training = part.get("training", {})
    if training:
        lines += table(["preset", "updates", "status", "last loss", "seconds here"],
                       [[p, t.get("updates"), t.get("status"),
                         (t.get("last_logged") or {}).get("loss"),
                         t.get("seconds_this_invocation")] for p, t in training.items()])
    sets = part.get("sets", {})
    if sets:
        rows = []
        for set_name, r in sets.items():
            s = r.get("summary", {})
            rows.append([set_name, r.get("model"), r.get("init"), r.get("n_steps"),
                         r.get("noise"), r.get("elastic_every"),
                         *[s.get(k) for k, _ in SUMMARY_COLUMNS]])
        if reference is not None:
            rows.append(reference)
        lines += table(["chain set", "model", "init", "steps", "noise", "elastic every",
                        *[h for _, h in SUMMARY_COLUMNS]], rows)
    return lines


def write_table(study: Study) -> str:
    """Write ``results.md`` from the parts' records and return its text."""
    from mnist.gpu_study import PARTS, TABLE_FILE

    parts = {p: study.part(p) for p in PARTS}
    env = parts["env"] or {}
    lines = _head(study, env) + _status(study, parts) + _ceilings(env)
    lines += _correctness(parts["correctness"]) + _iteration(parts["iteration"]) + _plan(study)
    reference = _reference_row(study)
    for name in ("c27", "c29", "c28"):
        lines += _section6(name, parts[name], reference)
    if reference is not None:
        lines += [("Real digits: training digits scored against the held-out ones, as many as the "
                  "chains (the floor of the Fréchet distance at that n). Figures 3–5 and a row "
                  "per chain set: figures/ (fig3–5.png, metrics.md)."), ""]
    text = "\n".join(lines)
    atomic_write_text(study.out / TABLE_FILE, text)
    return text
