"""Train an MNIST energy with a preset: ``python -m mnist.train --preset NAME --out DIR``.

Any field of :class:`ebmref.config.TrainConfig` or :class:`mnist.presets.ModelConfig` can be
overridden (``--sampler.n-steps 30 --sampler.noise none --model.width 16``; the flat spellings
of earlier versions, ``--n_steps 30``, still work); ``--show-preset NAME`` prints what a preset
sets; ``--resume`` continues from ``DIR/checkpoint.pt``. The training loop is the library's
:func:`ebmref.training.train`; this module only chooses the data, the network and the
transition, and writes ``DIR/run.json`` (:mod:`mnist.runs`) next to the loop's ``config.json``,
``metrics.jsonl`` and ``checkpoint.pt``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from pathlib import Path

import torch

from ebmref import distributed
from ebmref.cli import config_error, overrides_from_args
from ebmref.config import TrainConfig
from ebmref.energy import Energy
from ebmref.training import TrainResult, train
from mnist.data import MNISTData, add_data_arguments, data_from_args, load_mnist
from mnist.presets import PRESETS, ModelConfig, add_run_arguments, preset_lines, resolve
from mnist.runs import write_run_info


def _autocast(model_cfg: ModelConfig, device: torch.device):
    if model_cfg.bf16 and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_preset(preset: str, out_dir: str | Path | None, data: MNISTData | None = None,
                 overrides: dict | None = None, resume: bool = False,
                 callback=None) -> tuple[Energy, TrainResult]:
    """Resolve the preset (+ dotted-path overrides), build energy and transition, run
    :func:`ebmref.training.train`."""
    train_cfg, model_cfg = resolve(preset, overrides)
    main_process = distributed.init_from_env().is_main  # under torchrun only rank 0 writes
    data = data if data is not None else load_mnist("train")
    if out_dir is not None and main_process:
        write_run_info(Path(out_dir), {
            "preset": preset, "overrides": dict(overrides or {}), "data_source": data.source,
            "train": train_cfg.to_dict(), "model": dataclasses.asdict(model_cfg)}, resume)
    # The initial weights come from the run's seed (train() broadcasts rank 0's to all ranks);
    # fork_rng leaves the caller's global RNG untouched.
    with torch.random.fork_rng():
        torch.manual_seed(train_cfg.run.seed)
        energy = model_cfg.build_energy()
    transition = model_cfg.build_transition()
    with _autocast(model_cfg, train_cfg.run.resolved_device()):
        result = train(energy, data.images, train_cfg, out_dir=out_dir, resume=resume,
                       callback=callback, transition=transition)
    return energy, result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mnist.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), help="required unless --show-preset")
    parser.add_argument("--out", help="run directory (required unless --show-preset)")
    parser.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    parser.add_argument("--show-preset", choices=sorted(PRESETS), metavar="NAME",
                        help="print the options a preset sets, then exit")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_data_arguments(parser)
    add_run_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.show_preset:
        print("\n".join(preset_lines(args.show_preset)) or "(the defaults)")
        return 0
    if args.preset is None or args.out is None:
        parser.error("--preset and --out are required")
    overrides = overrides_from_args(args)
    try:
        resolve(args.preset, overrides)
    except ValueError as err:
        is_model = str(err).split(":")[0] in ModelConfig.__dataclass_fields__
        parser.error(config_error(err, ModelConfig, "model.") if is_model
                     else config_error(err, TrainConfig))
    if args.threads:
        torch.set_num_threads(args.threads)
    data = data_from_args(args, "train")
    _, result = train_preset(args.preset, args.out, data, overrides, resume=args.resume)
    if not distributed.is_main():
        return 0
    last = result.history[-1] if result.history else {}
    print(json.dumps({"preset": args.preset, "step": result.step, "data": data.source,
                      "checkpoint": str(result.checkpoint), "last": last}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
