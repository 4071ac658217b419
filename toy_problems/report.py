"""report.md: the metrics table, the figures, and a rule-based reading of each claim.

Every verdict is computed from the numbers in metrics.json by the rule printed beside it, so the
report says what the numbers say whichever way they fall. A difference between two methods
counts only when it exceeds twice its standard error over seeds (d > 2·√(s₁²/n₁ + s₂²/n₂)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from toy_problems.methods import Budget, get_method

COLUMNS = [
    ("nll_gap", "NLL gap (nats)", 3),
    ("mass_outside", "mass off support", 3),
    ("mode_weight_error", "mode-weight TV", 3),
    ("frac_noise_in_modes", "noise→mode", 2),
    ("frac_data_in_modes", "data→mode", 2),
    ("switches_per_1000", "switches/1k", 2),
    ("kl_q", "KL[q‖p_θ]", 3),
]


def _cell(summary: dict, t: str, m: str, key: str):
    return summary.get(f"{t}/{m}", {}).get(key)


def fmt(cell, digits: int) -> str:
    if not cell:
        return "–"
    if cell["n"] > 1 and math.isfinite(cell["sd"]):
        return f"{cell['mean']:.{digits}f} ± {cell['sd']:.{digits}f}"
    return f"{cell['mean']:.{digits}f}"


def differs(a, b) -> int:
    """+1 if a > b significantly, −1 if a < b, 0 if not distinguishable (or missing)."""
    if not a or not b:
        return 0
    sa = a["sd"] if math.isfinite(a["sd"]) else 0.0
    sb = b["sd"] if math.isfinite(b["sd"]) else 0.0
    se = math.sqrt(sa**2 / a["n"] + sb**2 / b["n"])
    d = a["mean"] - b["mean"]
    if abs(d) > 2 * se and (se > 0 or d != 0):
        return 1 if d > 0 else -1
    return 0


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


def _compare(summary, targets, key, a, b) -> list[tuple[str, int, str]]:
    out = []
    for t in targets:
        ca, cb = _cell(summary, t, a, key), _cell(summary, t, b, key)
        if ca and cb:
            out.append((t, differs(ca, cb), f"{t}: {a} {fmt(ca, 3)} vs {b} {fmt(cb, 3)}"))
    return out


def _verdict(results: list[tuple[str, int, str]], want: int) -> str:
    if not results:
        return "not measured (methods missing from this run)"
    hits = sum(r[1] == want for r in results)
    against = sum(r[1] == -want for r in results)
    if hits == len(results):
        return "verified"
    if hits > 0 and against == 0:
        return f"qualified (holds on {hits}/{len(results)} targets, indistinguishable elsewhere)"
    if hits > 0:
        return f"qualified (holds on {hits}/{len(results)} targets, reversed on {against})"
    if against > 0:
        return f"refuted (reversed on {against}/{len(results)} targets)"
    return "not distinguishable at this budget (no significant difference)"


def claims_section(summary: dict, funnel_rows: list[dict], targets: Sequence[str],
                   methods: Sequence[str]) -> tuple[str, dict]:
    """Markdown for C7, C16, C26, C27, C28 and a dict id → verdict line."""
    md, verdicts = [], {}

    def block(cid, title, rule, results, want, extra=""):
        v = _verdict(results, want)
        verdicts[cid] = v
        md.append(f"### {cid} — {title}\n\nRule: {rule}\n\n**Verdict: {v}.**\n")
        md.extend(f"- {r[2]}" for r in results)
        if extra:
            md.append(extra)
        md.append("")

    # C7: chains from noise reach the data under an NLL-trained model.
    c7 = []
    for t in targets:
        c = _cell(summary, t, "nll", "frac_noise_in_modes")
        if c:
            ok = 1 if c["mean"] >= 0.9 else -1
            others = ", ".join(f"{m} {fmt(_cell(summary, t, m, 'frac_noise_in_modes'), 2)}"
                               for m in methods if m != "nll"
                               and _cell(summary, t, m, "frac_noise_in_modes"))
            c7.append((t, ok, (f"{t}: nll {fmt(c, 2)} of noise chains end in a data mode "
                              f"(others: {others})")))
    block("C7", "chains from noise descend to data-like points",
          "fraction of T = 1 ULA chains from uniform noise that end in a data mode is ≥ 0.9 "
          "for the NLL-trained model (exact samples of p_data: 0.99)", c7, 1)

    block("C16", "CD from data leaves spurious mass; persistent chains help",
          "p_θ mass outside the data support is larger for CD-10 than for PCD "
          "(and than for NLL)", _compare(summary, targets, "mass_outside", "cd10", "pcd"), 1,
          "\n".join(f"- {r[2]}" for r in
                    _compare(summary, targets, "mass_outside", "cd10", "nll")))

    block("C26", "the flipped-sign (Du 2020) KL loss pulls q toward p_θ",
          "KL[q‖p_θ] of the training negatives is lower with the du2020 sign than with the CD "
          "sign", _compare(summary, targets, "kl_q", "nll_kl_du2020", "nll_kl_cd"), -1,
          "\n".join(f"- {r[2]}" for r in
                    _compare(summary, targets, "kl_q", "nll_kl_du2020", "nll")))

    c27 = []
    for t in targets:
        noise = _compare(summary, [t], "frac_noise_in_modes", "true_cd", "nll")
        data = _compare(summary, [t], "frac_data_in_modes", "true_cd", "nll")
        if noise and data:
            ok = 1 if (noise[0][1] == -1 and data[0][1] >= 0) else (
                -1 if noise[0][1] >= 0 else 0)
            c27.append((t, ok, f"{noise[0][2]} (noise→mode); {data[0][2]} (data→mode)"))
    block("C27", "true CD: chains from noise fail to reach data, chains from data stay",
          "true CD's noise→mode fraction is significantly below NLL's while its data→mode "
          "fraction is not below NLL's", c27, 1)

    f_lines, f_res = [], []
    for t in sorted({r["target"] for r in funnel_rows}):
        rs = [r for r in funnel_rows if r["target"] == t]
        temps = sorted({r["temperature"] for r in rs})
        by_t = {T: [r for r in rs if r["temperature"] == T] for T in temps}
        mean = {T: sum(r["frac_heavy"] for r in v) / len(v) for T, v in by_t.items()}
        pred = {T: sum(r["tempered_heavy"] for r in v) / len(v) for T, v in by_t.items()}
        true_w = rs[0]["true_heavy"]
        peak_t = max(mean, key=mean.get)
        collapse = mean[peak_t] >= 0.9 and mean[peak_t] > true_w + 0.1
        f_res.append((t, collapse, ""))
        f_lines.append(
            f"- {t}: true weight of the heaviest mode {true_w:.2f}; fraction of chains in it "
            + ", ".join(f"T={T:g}: {mean[T]:.2f} (p_θ^{{1/T}}: {pred[T]:.2f})" for T in temps))
    hits = sum(c for _, c, _ in f_res)
    if not f_res:
        v28 = "not measured (no funnel targets)"
    elif hits == len(f_res):
        v28 = "verified (collapse on every funnel target)"
    elif hits:
        v28 = f"qualified (collapse on {hits}/{len(f_res)} targets)"
    else:
        v28 = (f"refuted: no collapse on {len(f_res)}/{len(f_res)} targets (compare the "
               "chains with the exact p_θ^{1/T} beside them)")
    verdicts["C28"] = v28
    md.append("### C28 — high sampling noise sends every chain to the same mode (toy funnel)\n\n"
              "Rule: at some noise level the fraction of chains in the heaviest mode reaches "
              "≥ 0.9 and exceeds its true weight by > 0.1; the exact stationary law at that "
              "temperature, p_θ^{1/T}, is shown beside it.\n\n"
              f"**Verdict: {v28}.**\n")
    md.extend(f_lines)
    md.append("")
    return "\n".join(md), verdicts


def methods_table(methods: Sequence[str], budget: Budget) -> str:
    lines = ["| method | chains start / sampler / extras | paper |", "| --- | --- | --- |"]
    for m in methods:
        meth = get_method(m, budget)
        lines.append(f"| {m} | {meth.summary} | {meth.paper} |")
    return "\n".join(lines)
