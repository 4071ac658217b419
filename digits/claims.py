"""The verdicts of the digits study, from per-seed values only, through :mod:`ebmref.verdict`.

Each experiment is one family, Holm-adjusted together (α = 0.05); directions, margins and the
primary comparison of each claim are fixed here, before the run (:data:`PLAN`). Per seed means
per member of a method's ensemble (10 seeds); arms of different methods are independent
(Welch's t; bootstrap CI for Fréchet distances and rates), arms on the same models are paired
by seed.

Gate (C27, C29): a CPU-scale conclusion about samples needs the NLL baseline to make digits —
the confident fraction of its chains from noise, pooled over seeds, must reach
``confident_needed`` (0.8) — otherwise those rows are "not measured".
"""

from __future__ import annotations

import math

from ebmref.verdict import Comparison, compare, family, not_measured, qualified

# method → predicted sign of (test NLL of the method − test NLL of nll)
NLL_DIRECTIONS = {"pcd": "greater", "true_cd": "greater", "cd": "greater",
                  "nll_kl_du2020": "less", "nll_kl_cd": "greater", "true_cd_kl_cd": "greater",
                  "nll_elastic": "less"}

PLAN = {
    "likelihood": "test NLL (nats) of each method vs nll, Welch, TOST margin ±nll_margin; "
                  "directions: CD-like and the CD-sign KL loss worse, the published KL sign and "
                  "elastic deformations better",
    "C27": "true_cd vs nll, chains from noise (Fréchet ↑, confident fraction ↓, digit entropy ↓,"
           " energy gap ↓) and from held-out digits (Fréchet ↑ with TOST margin "
           "frechet_margin_of_floor × the per-seed real-data floor; start digit kept ↑ with "
           "margin kept_margin); primary: Fréchet from noise, qualified by Fréchet from data",
    "C16": "spurious fraction (E ≤ median test-digit energy and nearest training digit farther "
           "than the 99th percentile of test digits' distance) of chain ends from noise and of "
           "descent ends: cd > pcd, cd > nll, true_cd > nll; primary: chains, cd vs pcd",
    "C26": "Du's regime: remaining descent r after a training-length chain from noise, "
           "du_kl_du2020 < du_kl_cd (primary) and du_kl_du2020 < du_nll",
    "C28": "du_nll from balanced held-out digits, σ = highest vs lowest noise, paired by seed: "
           "confident-digit entropy ↓ (primary), top-digit share ↑",
    "C29": "confident digit switches per 1k steps: nll_elastic + deformations > nll plain "
           "(primary), nll + deformations > nll plain (paired); landscape sampled plainly: "
           "nll_elastic Fréchet < nll, nll_elastic test NLL < nll",
}


def _seeds(sets: dict, name: str, key: str) -> list[float] | None:
    s = sets.get(name)
    return None if s is None else [row[key] for row in s["per_seed"]]


def _cmp(a, b, direction, label, *, units="", margin=None, paired=False, rate=False,
         alpha=0.05) -> Comparison:
    """compare() unless an arm is missing or has non-finite values (then not measured)."""
    if a is None or b is None:
        return not_measured("an arm was not run (method not trained in this study)", label=label)
    a, b = ([math.nan if v is None else float(v) for v in arm] for arm in (a, b))
    bad = [v for v in a + b if not math.isfinite(v)]
    if bad:
        return not_measured(f"{len(bad)} seed value(s) undefined (e.g. no confidently "
                            "classified chain end)", label=label)
    return compare(a, b, direction=direction, alpha=alpha, margin=margin, paired=paired,
                   ci="bootstrap" if rate else "auto", units=units, label=label)


def likelihood_family(nll: dict, cfg) -> dict[str, Comparison]:
    if "nll" not in nll:
        return {}
    base = nll["nll"]["nll"]
    comps = {f"{m} vs nll": _cmp(v["nll"], base, NLL_DIRECTIONS.get(m, "greater"),
                                 f"{m} vs nll", units="nats", margin=cfg.nll_margin,
                                 alpha=cfg.alpha)
             for m, v in nll.items() if m != "nll"}
    return family(comps) if comps else {}


def gate(sets: dict, cfg) -> tuple[bool, str]:
    s = sets.get("nll/noise")
    if s is None:
        return False, "the NLL baseline's chains from noise were not run"
    frac = s["pooled"]["confident_fraction"]
    if frac >= cfg.confident_needed:
        return True, f"NLL baseline makes digits: confident fraction from noise {frac:.2f}"
    return False, (f"not measured at CPU scale: the NLL baseline does not make digits "
                   f"(confident fraction of its chains from noise {frac:.2f} < "
                   f"{cfg.confident_needed})")


def c27_family(sets: dict, refs: dict, cfg) -> dict[str, Comparison]:
    ok, why = gate(sets, cfg)
    margin = cfg.frechet_margin_of_floor * refs["noisy"]["floor_per_seed"]["mean"]
    spec = {
        "noise: Fréchet": ("true_cd/noise", "nll/noise", "frechet", "greater", None, True),
        "noise: confident fraction": ("true_cd/noise", "nll/noise", "confident_fraction",
                                      "less", None, False),
        "noise: digit entropy": ("true_cd/noise", "nll/noise", "digit_entropy", "less", None,
                                 False),
        "noise: energy gap": ("true_cd/noise", "nll/noise", "energy_gap", "less", None, False),
        "data: Fréchet": ("true_cd/data", "nll/data", "frechet", "greater", margin, True),
        "data: start digit kept": ("true_cd/data", "nll/data", "start_digit_kept", "greater",
                                   cfg.kept_margin, False),
    }
    comps = {}
    for label, (a, b, key, d, margin_, rate) in spec.items():
        comps[label] = (_cmp(_seeds(sets, a, key), _seeds(sets, b, key), d, label,
                             margin=margin_, rate=rate, alpha=cfg.alpha) if ok
                        else not_measured(why, label=label))
    return family(comps)


def c16_family(sets: dict, cfg) -> dict[str, Comparison]:
    comps = {}
    for kind in ("noise", "descent"):
        for a, b in (("cd", "pcd"), ("cd", "nll"), ("true_cd", "nll")):
            label = f"{kind}: {a} vs {b}"
            comps[label] = _cmp(_seeds(sets, f"{a}/{kind}", "spurious_fraction"),
                                _seeds(sets, f"{b}/{kind}", "spurious_fraction"), "greater",
                                label, rate=True, alpha=cfg.alpha)
    return family(comps)


def c26_family(c26: dict, cfg) -> dict[str, Comparison]:
    comps = {f"du_kl_du2020 vs {b}": _cmp(c26.get("du_kl_du2020"), c26.get(b), "less",
                                          f"du_kl_du2020 vs {b}", alpha=cfg.alpha)
             for b in ("du_kl_cd", "du_nll")}
    return family(comps)


def c28_family(funnel: dict, cfg) -> dict[str, Comparison]:
    if len(funnel) < 2:
        return family({"entropy": not_measured("fewer than two noise levels were run")})
    lo, hi = min(cfg.funnel_noises), max(cfg.funnel_noises)
    a, b = f"du_nll/data σ={hi:g}", f"du_nll/data σ={lo:g}"
    comps = {
        "confident-digit entropy": _cmp(_seeds(funnel, a, "confident_digit_entropy"),
                                        _seeds(funnel, b, "confident_digit_entropy"), "less",
                                        "confident-digit entropy", units="nats", paired=True,
                                        alpha=cfg.alpha),
        "top-digit share": _cmp(_seeds(funnel, a, "top_digit_share"),
                                _seeds(funnel, b, "top_digit_share"), "greater",
                                "top-digit share", paired=True, alpha=cfg.alpha),
    }
    return family(comps)


def c29_family(sets: dict, nll: dict, cfg) -> dict[str, Comparison]:
    ok, why = gate(sets, cfg)
    comps = {
        "mixing: elastic-trained + deformations vs nll plain": (
            "nll_elastic/noise+deform", "nll/noise", "switches_per_1k", "greater", False),
        "deformations alone: nll + deformations vs nll plain": (
            "nll/noise+deform", "nll/noise", "switches_per_1k", "greater", True),
        "landscape: elastic-trained plain vs nll plain, Fréchet": (
            "nll_elastic/noise", "nll/noise", "frechet", "less", False),
    }
    out = {}
    for label, (a, b, key, d, paired) in comps.items():
        out[label] = (_cmp(_seeds(sets, a, key), _seeds(sets, b, key), d, label, paired=paired,
                           rate=not paired, alpha=cfg.alpha) if ok
                      else not_measured(why, label=label))
    label = "landscape: elastic-trained vs nll, test NLL"
    out[label] = _cmp(nll.get("nll_elastic", {}).get("nll"), nll.get("nll", {}).get("nll"),
                      "less", label, units="nats", alpha=cfg.alpha)
    return family(out)


def headline(fam: dict[str, Comparison], primary: str, contrast: str | None = None,
             condition: str = "") -> Comparison:
    """The claim's word: its primary comparison, or qualified() with a contrast."""
    if primary not in fam:
        return not_measured("primary comparison missing")
    if contrast is not None and contrast in fam:
        return qualified(fam[primary], fam[contrast], condition=condition)
    return fam[primary]


def all_verdicts(results: dict, cfg) -> dict:
    """{experiment: {"comparisons": {label: Comparison}, "headline": Comparison}}."""
    sets, refs = results["chains"]["sets"], results["references"]
    nll = results["likelihood"]["test"]
    fams = {
        "likelihood": (likelihood_family(nll, cfg), None, None, ""),
        "C27": (c27_family(sets, refs, cfg), "noise: Fréchet", "data: Fréchet",
                "chains start from uniform noise (from held-out digits it does not hold)"),
        "C16": (c16_family(sets, cfg), "noise: cd vs pcd", None, ""),
        "C26": (c26_family(results["chains"]["c26"], cfg), "du_kl_du2020 vs du_kl_cd", None, ""),
        "C28": (c28_family(results["chains"]["funnel"], cfg), "confident-digit entropy", None,
                ""),
        "C29": (c29_family(sets, nll, cfg),
                "mixing: elastic-trained + deformations vs nll plain", None, ""),
    }
    passed, why = gate(sets, cfg)
    out = {}
    for name, (fam, primary, contrast, cond) in fams.items():
        head = headline(fam, primary, contrast, cond) if primary else None
        if name in ("C27", "C29") and not passed:
            head = not_measured(why, label=name)
        out[name] = {"comparisons": fam, "headline": head, "plan": PLAN[name]}
    return out
