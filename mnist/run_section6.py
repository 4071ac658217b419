"""The whole section-6 study in one command (paper §6; claims C27, C28, C29):

    python mnist/run_section6.py --study runs/section6            # one GPU, ~10 min (planned)
    python mnist/run_section6.py --study /tmp/s6 --tiny           # CPU smoke run, < 1 min
    python mnist/run_section6.py --study runs/c27 --scale cpu --sets c27   # the CPU C27 run

1. train the presets ``nll``, ``true_cd``, ``elastic``, ``du2020`` (library training loop;
   an existing run in STUDY/runs/<preset> is resumed/extended, not retrained);
2. run the chain sets (:data:`SETS`) on them with ``mnist.sample``;
3. evaluate every set with the digit classifier (``mnist.evaluate``) and the real-digit
   reference;
4. draw Figures 3–5 and the metrics table (``mnist.figures``).

Scales: ``gpu`` (full IGEBM net and sampler, chains of 10,000 / 20,000 steps — the step counts
of the paper's figures; the time split is a plan, not measured here: no GPU was available when
this was written), ``cpu`` (narrow net, width 16; short training and chains), ``tiny``
(seconds). ``STUDY/timing.json`` records the wall time of every phase.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from ebmref.cli import ArgumentParser, add_debug_argument, guarded
from ebmref.config import SamplerConfig
from ebmref.files import atomic_write_json, check_output_dir
from ebmref.training import CHECKPOINT_NAME
from ebmref.validation import check_int_range
from mnist.data import add_data_arguments, data_from_args
from mnist.evaluate import Evaluator, evaluate_sample_dir
from mnist.figures import STUDY_NAME, make_all
from mnist.runs import load_trained
from mnist.sample import ChainConfig, sample_run
from mnist.train import train_preset

PRESETS = ("nll", "true_cd", "elastic", "du2020")

# Per scale: training overrides shared by all presets, update counts, chain lengths.
SCALES = {
    "gpu": {"train": {"run.device": "auto", "run.progress": True},
            "steps": {"nll": 1000, "true_cd": 1000, "elastic": 1000, "du2020": 600},
            "short": 200, "long": 10_000, "longest": 20_000, "record_every": 100,
            "n_chains": 64, "high_noise": 0.05, "classifier_epochs": 8,
            "classifier_max_images": None},
    "cpu": {"train": {"run.device": "cpu", "model.arch": "igebm", "model.width": 16,
                      "run.batch_size": 64, "sampler.n_steps": 30, "buffer.size": 2000,
                      "optim.lr": 3e-4, "run.progress": False, "run.ckpt_every": 50},
            "steps": {"nll": 200, "true_cd": 200, "elastic": 200, "du2020": 150},
            "short": 200, "long": 1000, "longest": 1000, "record_every": 50,
            "n_chains": 40, "high_noise": 0.05, "classifier_epochs": 8,
            "classifier_max_images": None},
    "tiny": {"train": {"run.device": "cpu", "model.arch": "igebm", "model.width": 4,
                       "run.batch_size": 8, "sampler.n_steps": 4, "buffer.size": 64,
                       "run.progress": False, "run.log_every": 1, "kl.entropy_reference": 16,
                       "kl.n_chains": 4},
             "steps": {"nll": 3, "true_cd": 3, "elastic": 3, "du2020": 2},
             "short": 10, "long": 20, "longest": 20, "record_every": 5,
             "n_chains": 4, "high_noise": 0.05, "classifier_epochs": 1,
             "classifier_max_images": 500},
}

# Chain sets: name -> (model preset, init, length key, noise ("low" = 0.005, "high" = the
# scale's high_noise, or a number), elastic_every)
SETS = {
    "true_cd_noise": ("true_cd", "noise", "long", "low", 0),
    "true_cd_data": ("true_cd", "heldout", "long", "low", 0),
    "nll_data": ("nll", "heldout", "long", "low", 0),
    "nll_noise": ("nll", "noise", "longest", "low", 0),
    "nll_data_lownoise_short": ("nll", "heldout", "short", "low", 0),
    "nll_data_highnoise_short": ("nll", "heldout", "short", "high", 0),
    "nll_data_highnoise_long": ("nll", "heldout", "long", "high", 0),
    "nll_data_noise0.02_long": ("nll", "heldout", "long", 0.02, 0),
    "nll_data_noise0.1_long": ("nll", "heldout", "long", 0.1, 0),
    "elastic_noise_elastic": ("elastic", "noise", "longest", "low", 100),
    "elastic_noise": ("elastic", "noise", "longest", "low", 0),
    "nll_noise_elastic": ("nll", "noise", "longest", "low", 100),
    "du2020_noise": ("du2020", "noise", "long", "low", 0),
}
GROUPS = {
    "c27": ["true_cd_noise", "true_cd_data", "nll_data", "nll_noise"],
    "c28": ["nll_data_lownoise_short", "nll_data_highnoise_short", "nll_data_highnoise_long",
            "nll_data_noise0.02_long", "nll_data_noise0.1_long"],
    "c29": ["elastic_noise_elastic", "elastic_noise", "nll_noise", "nll_noise_elastic"],
    "all": list(SETS),
}


def _trained_steps(run_dir: Path) -> int:
    if not (run_dir / CHECKPOINT_NAME).is_file():
        return 0
    return int(load_trained(run_dir)[1]["step"])


def run_study(study: Path, scale: str, sets: list[str], data_args, seed: int = 0) -> dict:
    s = SCALES[scale]
    study.mkdir(parents=True, exist_ok=True)
    atomic_write_json(study / STUDY_NAME, {"scale": scale, "smoke": scale == "tiny",
                                           "sets": sets, "seed": seed})
    timing: dict[str, float] = {}
    train_data, heldout = data_from_args(data_args, "train"), data_from_args(data_args, "heldout")
    needed = sorted({SETS[name][0] for name in sets}, key=PRESETS.index)

    for preset in needed:
        run_dir = study / "runs" / preset
        want = s["steps"][preset]
        t0 = time.perf_counter()
        done = _trained_steps(run_dir)
        if done < want:
            overrides = {**s["train"], "run.n_updates": want, "run.seed": seed}
            print(f"[train] {preset}: steps {done} -> {want}", flush=True)
            train_preset(preset, run_dir, train_data, overrides, resume=done > 0)
        timing[f"train/{preset}"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    print("[classifier] digit classifier and the real-digit reference", flush=True)
    evaluator = Evaluator(train_data, heldout, study / "classifier.pt",
                          s["classifier_epochs"], s["classifier_max_images"])
    # Fréchet distances are biased upward at small n: the reference uses n = n_chains real
    # digits, the same n as every chain set, so that it is the floor for the table's numbers.
    ref = evaluator.reference(train_data, n=min(s["n_chains"], len(train_data)))
    ref["n1000"] = evaluator.reference(train_data, n=min(1000, len(train_data)))
    atomic_write_json(study / "reference_metrics.json", ref)
    timing["classifier"] = time.perf_counter() - t0

    device = "cuda" if (torch.cuda.is_available() and scale == "gpu") else "cpu"
    energies = {}
    results = {}
    for name in sets:
        preset, init, length, noise_key, elastic_every = SETS[name]
        if preset not in energies:
            energy, info = load_trained(study / "runs" / preset, device)
            energies[preset] = (energy, info["step"])
        n_steps = s[length]
        noise = {"low": 0.005, "high": s["high_noise"]}.get(noise_key, noise_key)
        cfg = ChainConfig(init=init, n_chains=s["n_chains"],
                          sampler=SamplerConfig(n_steps=n_steps, noise=noise,
                                                transition_every=min(elastic_every, n_steps)),
                          record_every=min(s["record_every"], n_steps // 2) or 1,
                          seed=seed, device=device)
        done_path = study / "samples" / name / "metrics.json"
        if done_path.is_file():  # same chains already run and evaluated: keep them
            prev = json.loads(done_path.read_text())
            same = all(prev["sampling"].get(k) == v for k, v in
                       json.loads(json.dumps(dataclasses.asdict(cfg))).items())
            if same and prev["sampling"].get("model_step") == energies[preset][1]:
                print(f"[sample] {name}: chains kept (same config and model step), "
                      "re-evaluated", flush=True)
                results[name] = evaluate_sample_dir(evaluator, study / "samples" / name,
                                                    energies[preset][0])
                continue
        t0 = time.perf_counter()
        print(f"[sample] {name}: {preset} from {init}, {n_steps} steps, noise "
              f"{cfg.sampler.noise}, elastic every {cfg.sampler.transition_every}", flush=True)
        results[name] = sample_run(study / "runs" / preset, study / "samples" / name, cfg,
                                   heldout, evaluator, *energies[preset])
        timing[f"sample/{name}"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    print("[figures] Figures 3-5 and the metrics table", flush=True)
    made = make_all(study)
    timing["figures"] = time.perf_counter() - t0
    atomic_write_json(study / "timing.json", timing)
    print(made.get("metrics.md", ""))
    return {"timing": timing, "results": results, "figures": made}


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python mnist/run_section6.py", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", required=True, help="output directory")
    parser.add_argument("--scale", choices=sorted(SCALES), default="gpu",
                        help="budgets: gpu (paper scale), cpu (narrow net), tiny (smoke run)")
    parser.add_argument("--tiny", action="store_true", help="same as --scale tiny")
    parser.add_argument("--sets", default="all",
                        help=f"comma-separated chain sets or groups {sorted(GROUPS)}")
    parser.add_argument("--seed", type=int, default=0, help="seed of every run and chain set")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_debug_argument(parser)
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    return guarded(parser.prog, lambda: _run(args), debug=args.debug)


def _run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        check_int_range(args.threads, "--threads", 1)
        torch.set_num_threads(args.threads)
    check_int_range(args.seed, "--seed", 0)
    check_output_dir(args.study, "--study")
    scale = "tiny" if args.tiny else args.scale
    sets: list[str] = []
    for item in args.sets.split(","):
        for name in GROUPS.get(item, [item]):
            if name not in SETS:
                raise ValueError(f"--sets: unknown chain set {name!r}; allowed "
                                 f"{sorted(SETS)} or groups {sorted(GROUPS)}")
            if name not in sets:
                sets.append(name)
    run_study(Path(args.study), scale, sets, args, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
