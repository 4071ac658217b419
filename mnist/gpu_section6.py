"""Part d of the GPU study (:mod:`mnist.gpu_study`): the section-6 experiments sized to the
budget that is left, in a fixed order, each resumable:

* ``c27`` (§6.1): the presets ``nll``, ``true_cd`` and ``kl_cd_sign`` trained for the same
  number of updates from the same seed, then chains from uniform noise and from held-out
  digits on each (does true CD, with or without the KL loss of the sign CD needs, give chains
  from noise that reach digits, as NLL's do?);
* ``c29`` (§6.3): the ``elastic`` preset at the same number of updates as ``nll``; chains from
  noise with and without a deformation every 100 steps, on it and on the ``nll`` model;
* ``c28`` (§6.2.1): the ``nll`` model's chains from held-out digits at noise σ = 0.005, 0.02,
  0.05 and 0.1 (the funnel), short (200 steps) and long.

Sizing (:func:`plan_parts`): with t_p the measured eager update time of preset p, t_c the time
of one step of 64 chains and s the overhead of one chain set (saving, evaluation), the parts
get U updates per preset and chains of L steps, where a quarter of the time left (less a
reserve and the overheads) goes to chains and the rest to training:

    L = ⌊(¼·A) / (n_long·t_c)⌋ (a multiple of 100),   U = ⌊(A − (n_long·L + n_short·200)·t_c)
    / Σ_p t_p⌋,   A = time left − reserve − n_sets·s,

both capped (``Scale.updates``, ``Scale.chain_steps``) and leftover time lengthening the chains.
If U falls under its minimum, C28 and then C29 are dropped (the order is C27, C29, C28). The
plan is written once (``plan.json``) and reused by resumed invocations, so every preset of a
comparison gets the same U. Trained models, chains and metrics go under ``runs/``,
``samples/`` (the layout of ``mnist/run_section6.py``, so ``mnist.figures`` draws Figures 3–5
from it) and each part's record ``<part>.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ebmref.config import SamplerConfig
from ebmref.energy import Energy
from ebmref.files import atomic_write_json, read_jsonl
from ebmref.training import TrainingDiverged
from mnist.evaluate import METRICS_NAME, Evaluator, summary_row
from mnist.figures import make_all
from mnist.gpu_study import Scale, StopForNow, Study, run_part
from mnist.run_section6 import GROUPS, SETS, _trained_steps
from mnist.runs import load_trained
from mnist.sample import ChainConfig, sample_run
from mnist.train import train_preset

SECTION6 = ("c27", "c29", "c28")
PRESETS = {"c27": ("nll", "true_cd", "kl_cd_sign"), "c29": ("elastic",), "c28": ()}
NEEDS = {"c27": (), "c29": ("nll",), "c28": ("nll",)}
CLAIMS = {"c27": "C27 (§6.1): true CD (with or without the cd-sign KL loss) against NLL at the "
                 "same number of updates; chains from noise and from held-out digits",
          "c29": "C29 (§6.3): elastic deformations in training and/or sampling; chains from noise",
          "c28": "C28 (§6.2.1): the funnel; chains from held-out digits at σ = 0.005 to 0.1"}
LOW_NOISE = 0.005
PLAN_FILE = "plan.json"
CHAIN_SHARE = 0.25  # of the time left, for chains
FIT_FRACTION = 0.9  # a part starts when the budget left holds this share of its estimate


@dataclass(frozen=True)
class ChainSet:
    name: str
    preset: str
    init: str
    n_steps: int
    noise: float
    elastic_every: int


def chain_sets(part: str, long_steps: int, scale: Scale) -> list[ChainSet]:
    """The chain sets of a part: C27's six (noise and held-out starts on each preset), C29's
    and C28's from :data:`mnist.run_section6.SETS` with their lengths set by the plan."""
    if part == "c27":
        return [ChainSet(f"{p}_{'noise' if init == 'noise' else 'data'}", p, init, long_steps,
                         LOW_NOISE, 0) for p in PRESETS["c27"] for init in ("noise", "heldout")]
    out = []
    for name in GROUPS[part]:
        preset, init, length, noise_key, every = SETS[name]
        noise = {"low": LOW_NOISE, "high": scale.high_noise}.get(noise_key, noise_key)
        steps = scale.short_steps if length == "short" else long_steps
        out.append(ChainSet(name, preset, init, steps, float(noise),
                            scale.elastic_every if every else 0))
    return out


_LONG = -1  # the chain length the plan chooses, while it is being chosen


def _unique_sets(parts: tuple[str, ...], long_steps: int,
                 scale: Scale) -> dict[str, list[ChainSet]]:
    """Each part's chain sets, a set shared with an earlier part (``nll_noise``) counted once."""
    seen: set[str] = set()
    out = {}
    for part in parts:
        out[part] = [c for c in chain_sets(part, long_steps, scale) if c.name not in seen]
        seen.update(c.name for c in out[part])
    return out


def part_costs(parts: tuple[str, ...], updates: int, long_steps: int, update_s: dict,
               chain_step_s: float, scale: Scale) -> dict[str, float]:
    """Estimated seconds of each part: its presets' updates, its chain steps, its sets'
    overheads."""
    return {part: (updates * sum(update_s[p] for p in PRESETS[part])
                   + sum(c.n_steps for c in sets) * chain_step_s
                   + len(sets) * scale.set_overhead_s)
            for part, sets in _unique_sets(parts, long_steps, scale).items()}


def plan_parts(left_s: float, update_s: dict, chain_step_s: float, scale: Scale) -> dict:
    """Updates U per preset and chain length L for the §6 parts that fit ``left_s`` seconds
    (module docstring); parts are dropped from the end of the order when U would fall under
    its minimum. Pure: numbers in, the plan out."""
    u_min, u_max = scale.updates
    l_min, l_max, mult = scale.chain_steps
    dropped: dict[str, str] = {}
    for parts in (("c27", "c29", "c28"), ("c27", "c29"), ("c27",)):
        sets = [c for group in _unique_sets(parts, _LONG, scale).values() for c in group]
        n_long = sum(c.n_steps == _LONG for c in sets)
        short = sum(c.n_steps for c in sets if c.n_steps != _LONG)
        per_update = sum(update_s[p] for part in parts for p in PRESETS[part])
        avail = left_s - scale.reserve_s - len(sets) * scale.set_overhead_s
        step_block = n_long * chain_step_s * mult  # seconds per `mult` steps of every long set
        steps = min(max(mult * math.floor(CHAIN_SHARE * max(avail, 0.0) / step_block), l_min),
                    l_max)
        chains_s = (n_long * steps + short) * chain_step_s
        updates = min(u_max, math.floor((avail - chains_s) / per_update))
        if updates >= u_min:
            spare = avail - chains_s - updates * per_update
            steps = min(l_max, steps + mult * math.floor(max(spare, 0.0) / step_block))
            return {"parts": list(parts), "updates": updates, "chain_steps": steps,
                    "estimates_s": part_costs(parts, updates, steps, update_s, chain_step_s,
                                              scale),
                    "left_s": left_s, "dropped": dropped, "update_s": update_s,
                    "chain_step_s": chain_step_s, "n_chains": scale.n_chains,
                    "short_steps": scale.short_steps}
        dropped[parts[-1]] = (f"did not fit: {left_s:.0f} s left would give "
                              f"{max(updates, 0)} updates per preset (minimum {u_min})")
    return {"parts": [], "dropped": dropped, "left_s": left_s, "update_s": update_s,
            "chain_step_s": chain_step_s}


# -- pieces every part uses ------------------------------------------------------------------


def _deadline_callback(study: Study, preset: str,
                       target: int) -> Callable[[int, dict], None]:
    def check(step: int, record: dict) -> None:
        if study.command_left() <= 0:
            raise StopForNow(f"{preset}: stopped after update {step} of {target} (time is up; "
                             "the next invocation resumes from its last checkpoint)")
    return check


def train_one(study: Study, preset: str, updates: int) -> dict:
    """Train (or resume, or keep) ``runs/<preset>`` to ``updates`` updates with
    :func:`mnist.train.train_preset`; a divergence is recorded, not raised."""
    run_dir = study.out / "runs" / preset
    done = _trained_steps(run_dir)
    t0 = time.perf_counter()
    status = "trained" if done < updates else "kept"
    if done < updates:
        print(f"  [train] {preset}: updates {done} -> {updates}", flush=True)
        try:
            train_preset(preset, run_dir, study.train,
                         study.train_overrides(**{"run.n_updates": updates}),
                         resume=done > 0, overwrite=done == 0,
                         callback=_deadline_callback(study, preset, updates))
        except TrainingDiverged as err:
            status = f"diverged: {err}"
    log = read_jsonl(run_dir / "metrics.jsonl")
    return {"preset": preset, "status": status, "target_updates": updates,
            "updates": _trained_steps(run_dir), "seconds_this_invocation":
            time.perf_counter() - t0, "last_logged": log[-1] if log else None,
            "run_dir": str(run_dir.relative_to(study.out))}


def evaluator(study: Study) -> Evaluator:
    """The digit classifier (trained once into ``classifier.pt``) and the real-digit reference
    (``reference_metrics.json``, the floor of the table's numbers), once per invocation."""
    if "evaluator" not in study.cache:
        s = study.scale
        t0 = time.perf_counter()
        ev = Evaluator(study.train, study.heldout, study.out / "classifier.pt",
                       s.classifier_epochs, s.classifier_max_images,
                       device=str(study.device), verbose=True)
        ref = ev.reference(study.train, n=min(s.n_chains, len(study.train)))
        ref["n1000"] = ev.reference(study.train, n=min(1000, len(study.train)))
        atomic_write_json(study.out / "reference_metrics.json", ref)
        study.cache.update(evaluator=ev, classifier_s=time.perf_counter() - t0)
    return study.cache["evaluator"]


def _chain_config(study: Study, c: ChainSet) -> ChainConfig:
    s = study.scale
    return ChainConfig(init=c.init, n_chains=s.n_chains,
                       sampler=SamplerConfig(n_steps=c.n_steps, noise=c.noise,
                                             transition_every=c.elastic_every),
                       record_every=max(1, c.n_steps // s.frames), seed=study.seed,
                       device=str(study.device))


def _kept(sample_dir: Path, cfg: ChainConfig, model_step: int) -> dict | None:
    """The metrics of chains already run with this config on this model, else ``None``."""
    path = sample_dir / METRICS_NAME
    if not path.is_file():
        return None
    m = json.loads(path.read_text())
    want = json.loads(json.dumps(dataclasses.asdict(cfg)))
    same = all(m["sampling"].get(k) == v for k, v in want.items())
    return m if same and m["sampling"].get("model_step") == model_step else None


def _energy(study: Study, preset: str) -> tuple[Energy, int]:
    """The trained model of ``runs/<preset>`` on the device and its update count (cached)."""
    energies = study.cache.setdefault("energies", {})
    run_dir = study.out / "runs" / preset
    step = _trained_steps(run_dir)
    if energies.get(preset, (None, -1))[1] != step:
        energies[preset] = (load_trained(run_dir, study.device)[0], step)
    return energies[preset]


def run_sets(study: Study, sets: list[ChainSet], training: dict) -> dict:
    """Run and evaluate each chain set (:func:`mnist.sample.sample_run`: ``strip.png``,
    ``chains.pt``, ``metrics.json`` under ``samples/<name>``); a set already run with the same
    config on the same model is kept. Sets of a preset without a model are skipped."""
    rows = {}
    for c in sets:
        model = training.get(c.preset, {})
        if not model.get("updates"):
            rows[c.name] = {"skipped": f"no trained {c.preset} model"}
            continue
        cfg = _chain_config(study, c)
        energy, step = _energy(study, c.preset)
        out = study.out / "samples" / c.name
        metrics = _kept(out, cfg, step)
        if metrics is None:
            if study.command_left() <= 0:
                raise StopForNow(f"time is up before chain set {c.name}")
            print(f"  [chains] {c.name}: {c.preset} from {c.init}, {c.n_steps} steps, noise "
                  f"{c.noise}, elastic every {c.elastic_every}", flush=True)
            metrics = sample_run(study.out / "runs" / c.preset, out, cfg, study.heldout,
                                 evaluator(study), energy, step)
        rows[c.name] = {"model": c.preset, "model_updates": step, "init": c.init,
                        "n_steps": c.n_steps, "noise": c.noise,
                        "elastic_every": c.elastic_every, "n_chains": cfg.n_chains,
                        "record_every": cfg.record_every, "seed": cfg.seed,
                        "sampling_seconds": metrics["sampling"].get("sampling_seconds"),
                        "summary": summary_row(metrics),
                        "metrics": str((out / METRICS_NAME).relative_to(study.out))}
    return rows


def remaining_cost(study: Study, part: str, plan: dict) -> float:
    """The plan's estimate of what is left of a part: updates not yet trained and chain sets
    not yet run (a part resumed in a later invocation needs only the rest)."""
    cost = sum(max(0, plan["updates"] - _trained_steps(study.out / "runs" / p))
               * plan["update_s"][p] for p in PRESETS[part])
    for c in chain_sets(part, plan["chain_steps"], study.scale):
        if not (study.out / "samples" / c.name / METRICS_NAME).is_file():
            cost += c.n_steps * plan["chain_step_s"] + study.scale.set_overhead_s
    return cost


def section6_part(study: Study, part: str, plan: dict) -> dict:
    """One §6 part (``c27``, ``c29`` or ``c28``): skipped with its reason when the plan dropped
    it, a model it needs is missing, or the budget left cannot hold its estimate; otherwise its
    presets trained to the plan's U and its chain sets run and evaluated."""
    record = {"claim": CLAIMS[part], "seed": study.seed, "data": study.data_info,
              "updates_per_preset": plan.get("updates"), "chain_steps": plan.get("chain_steps"),
              "n_chains": study.scale.n_chains, "short_steps": study.scale.short_steps}
    if part not in plan["parts"]:
        return {**record, "status": "skipped", "reason": plan["dropped"].get(part, "not planned")}
    training = {}
    for preset in NEEDS[part]:
        steps = _trained_steps(study.out / "runs" / preset)
        if steps < plan["updates"]:
            return {**record, "status": "skipped",
                    "reason": f"needs the {preset} model at {plan['updates']} updates "
                              f"(has {steps}); it is trained by part c27"}
        training[preset] = {"preset": preset, "updates": steps, "status": "kept"}
    estimate = remaining_cost(study, part, plan)
    left = study.budget_left() - study.scale.reserve_s
    if left < FIT_FRACTION * estimate:
        return {**record, "status": "skipped",
                "reason": f"did not fit: needs about {estimate:.0f} s, {max(left, 0):.0f} s left"}
    record.update(estimate_s=plan["estimates_s"][part], remaining_estimate_s=estimate)
    for preset in PRESETS[part]:
        training[preset] = train_one(study, preset, plan["updates"])
    record["training"] = training
    record["sets"] = run_sets(study, chain_sets(part, plan["chain_steps"], study.scale),
                              training)
    record["classifier"] = evaluator(study).classifier_meta
    make_all(study.out)  # Figures 3-5 and metrics.md from what exists so far
    return record


def load_or_plan(study: Study) -> dict:
    """The plan of an earlier invocation (``plan.json``, unless nothing fitted in it; delete
    it to plan afresh), or a new one from part c's times and the budget left now (after the
    classifier, which every part needs)."""
    path = study.out / PLAN_FILE
    if path.is_file():
        plan = json.loads(path.read_text())
        if plan.get("parts"):  # kept even under a new budget: every preset keeps the same U
            return plan
    timing = (study.part("iteration") or {}).get("planning")
    if not timing:
        return {"parts": [], "dropped": {p: "no update times: part iteration did not finish"
                                         for p in SECTION6}}
    evaluator(study)
    plan = plan_parts(study.budget_left(), timing["update_s"], timing["chain_step_s"],
                      study.scale)
    plan.update(classifier_s=study.cache.get("classifier_s"), budget_min=study.budget_s / 60,
                planned_at_s=study.spent_before_s + study.elapsed())
    atomic_write_json(path, plan)
    print(f"[plan] parts {plan['parts']}: {plan.get('updates')} updates per preset, chains of "
          f"{plan.get('chain_steps')} steps; estimates {plan.get('estimates_s')}", flush=True)
    return plan


def run_section6(study: Study) -> None:
    """Part d: plan once, then C27, C29, C28 in that order (a part already done is kept)."""
    pending = [p for p in SECTION6 if (study.part(p) or {}).get("status") != "done"]
    if pending and study.command_left() <= 0:
        raise StopForNow("time is up before part d")
    plan = load_or_plan(study) if pending else {}
    for part in SECTION6:
        run_part(study, part, lambda st, part=part: section6_part(st, part, plan))
