"""Train an MNIST energy with a preset: ``python -m mnist.train --preset NAME --out DIR``.

Any field of ``ebmref.training.TrainConfig`` or ``mnist.presets.ModelConfig`` can be overridden
(``--n_steps 30 --noise none --arch igebm_narrow --width 16``); ``--resume`` continues from
``DIR/checkpoint.pt``. The training loop is the library's :func:`ebmref.training.train`; this
module only chooses the data, the network and the transition, and writes ``DIR/run.json``
(preset, both configs, the data source) next to the loop's ``config.json``, ``metrics.jsonl``
and ``checkpoint.pt``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
from pathlib import Path

import torch

from ebmref import distributed
from ebmref.checkpoint import load_checkpoint
from ebmref.energy import Energy
from ebmref.training import CHECKPOINT_NAME, TrainResult, train
from mnist.data import MNISTData, add_data_arguments, data_from_args, load_mnist
from mnist.presets import PRESETS, ModelConfig, add_config_arguments, overrides_from_args, resolve

RUN_NAME = "run.json"


def _autocast(model_cfg: ModelConfig, device: torch.device):
    if model_cfg.bf16 and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_preset(preset: str, out_dir: str | Path | None, data: MNISTData | None = None,
                 overrides: dict | None = None, resume: bool = False,
                 callback=None) -> tuple[Energy, TrainResult]:
    """Resolve the preset (+ overrides), build energy and transition, run ``train``."""
    train_cfg, model_cfg = resolve(preset, overrides)
    main_process = distributed.init_from_env().is_main  # under torchrun only rank 0 writes
    data = data if data is not None else load_mnist("train")
    info = {"preset": preset, "overrides": {k: v for k, v in (overrides or {}).items()},
            "data_source": data.source, "train": train_cfg.to_dict(),
            "model": dataclasses.asdict(model_cfg)}
    if out_dir is not None and main_process:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        prev = out / RUN_NAME
        if resume and prev.exists():
            old = json.loads(prev.read_text())
            if old["model"] != json.loads(json.dumps(info["model"])):
                raise ValueError(f"resume: model config {info['model']} differs from the run's "
                                 f"{old['model']} in {prev}")
            # keep the original record; train() checks the TrainConfig against the checkpoint
            old["train"]["steps"] = train_cfg.steps
            old.setdefault("resumed_with", []).append(info["overrides"])
            info = old
        prev.write_text(json.dumps(info, indent=2, default=str) + "\n")
    # The initial weights come from the run's seed (train() broadcasts rank 0's to all ranks);
    # fork_rng leaves the caller's global RNG untouched.
    with torch.random.fork_rng():
        torch.manual_seed(train_cfg.seed)
        energy = model_cfg.build_energy()
    transition = model_cfg.build_transition()
    with _autocast(model_cfg, train_cfg.resolved_device()):
        result = train(energy, data.images, train_cfg, out_dir=out_dir, resume=resume,
                       callback=callback, transition=transition)
    return energy, result


def load_trained(run_dir: str | Path, device: str | torch.device = "cpu"
                 ) -> tuple[Energy, dict]:
    """The trained energy of a run directory (eval mode, on ``device``) and its run.json."""
    run_dir = Path(run_dir)
    info_path = run_dir / RUN_NAME
    if not info_path.is_file():
        raise FileNotFoundError(f"{info_path}: not a mnist.train run directory "
                                f"(train one with python -m mnist.train --preset nll --out DIR)")
    info = json.loads(info_path.read_text())
    model_cfg = ModelConfig(**info["model"])
    energy = model_cfg.build_energy()
    state = load_checkpoint(run_dir / CHECKPOINT_NAME, map_location="cpu")
    energy.load_state_dict(state["model"])
    info["step"] = int(state["step"])
    return energy.to(device).eval(), info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mnist.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS))
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_data_arguments(parser)
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = data_from_args(args, "train")
    _, result = train_preset(args.preset, args.out, data, overrides_from_args(args),
                             resume=args.resume)
    if not distributed.is_main():
        return 0
    last = result.history[-1] if result.history else {}
    print(json.dumps({"preset": args.preset, "step": result.step, "data": data.source,
                      "checkpoint": str(result.checkpoint), "last": last}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

