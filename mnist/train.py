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
from ebmref.cli import ArgumentParser, add_debug_argument, guarded, overrides_from_args
from ebmref.config import TrainConfig
from ebmref.energy import Energy
from ebmref.training import TrainResult, train
from ebmref.validation import check_int_range
from mnist.data import MNISTData, add_data_arguments, data_from_args, load_mnist
from mnist.presets import PRESETS, ModelConfig, add_run_arguments, preset_lines, resolve
from mnist.runs import RUN_NAME, run_info


def _autocast(model_cfg: ModelConfig, device: torch.device):
    if model_cfg.bf16 and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_preset(preset: str, out_dir: str | Path | None, data: MNISTData | None = None,
                 overrides: dict | None = None, resume: bool | str = False,
                 callback=None, overwrite: bool = False) -> tuple[Energy, TrainResult]:
    """Resolve the preset (+ dotted-path overrides), build energy and transition, run
    :func:`ebmref.training.train` (which writes ``run.json`` with its own files)."""
    train_cfg, model_cfg = resolve(preset, overrides)
    distributed.init_from_env()  # under torchrun only rank 0 writes (train() sees to it)
    data = data if data is not None else load_mnist("train")
    spec = dataclasses.asdict(model_cfg)
    records = {}
    if out_dir is not None:
        records[RUN_NAME] = run_info(Path(out_dir), {
            "preset": preset, "overrides": dict(overrides or {}), "data_source": data.source,
            "train": train_cfg.to_dict(), "model": spec}, resume)
    # The initial weights come from the run's seed (train() broadcasts rank 0's to all ranks);
    # fork_rng leaves the caller's global RNG untouched.
    with torch.random.fork_rng():
        torch.manual_seed(train_cfg.run.seed)
        energy = model_cfg.build_energy()
    transition = model_cfg.build_transition()
    with _autocast(model_cfg, train_cfg.run.resolved_device()):
        result = train(energy, data.images, train_cfg, out_dir=out_dir, resume=resume,
                       callback=callback, transition=transition, overwrite=overwrite,
                       records=records, model_spec=spec)
    return energy, result


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m mnist.train", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), help="required unless --show-preset")
    parser.add_argument("--out", help="run directory (required unless --show-preset)")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true",
                        help="continue from DIR/checkpoint.pt (an error if there is none)")
    resume.add_argument("--resume-if-exists", action="store_true",
                        help="continue from DIR/checkpoint.pt when there is one, else start")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a run already in DIR (swapped in at the first checkpoint)")
    parser.add_argument("--show-preset", choices=sorted(PRESETS), metavar="NAME",
                        help="print the options a preset sets, then exit")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_debug_argument(parser)
    add_data_arguments(parser)
    add_run_arguments(parser)
    return parser


CONFIGS = ((TrainConfig, ""), (ModelConfig, "model."))
"""Where a config error's field path points on this command line."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.show_preset:
        print("\n".join(preset_lines(args.show_preset)) or "(the defaults)")
        return 0
    if args.preset is None or args.out is None:
        parser.error("--preset and --out are required")
    return guarded(parser.prog, lambda: _run(args), debug=args.debug, configs=CONFIGS,
                   names={"resume": "--resume", "out_dir": "--out"})


def _run(args: argparse.Namespace) -> int:
    overrides = overrides_from_args(args)
    resolve(args.preset, overrides)  # every config error before the data is read
    if args.threads is not None:
        check_int_range(args.threads, "--threads", 1)
        torch.set_num_threads(args.threads)
    resume = "if_exists" if args.resume_if_exists else args.resume
    data = data_from_args(args, "train")
    _, result = train_preset(args.preset, args.out, data, overrides, resume=resume,
                             overwrite=args.overwrite)
    if not distributed.is_main():
        return 0
    last = result.history[-1] if result.history else {}
    print(json.dumps({"preset": args.preset, "step": result.step, "data": data.source,
                      "checkpoint": str(result.checkpoint), "last": last}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
