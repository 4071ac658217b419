"""The files of the MNIST runs, and their one reader and writer each.

* ``run.json`` in a ``mnist.train`` run directory (next to the training loop's ``config.json``,
  ``metrics.jsonl`` and ``checkpoint.pt``): the preset, the command-line overrides, the data
  source and both configs (``train``: :class:`ebmref.config.TrainConfig`, ``model``:
  :class:`mnist.presets.ModelConfig`), with ``resumed_with`` listing the overrides of every
  resumption.
* ``chains.pt`` in a ``mnist.sample`` output directory: the recorded frames (float16, values in
  [0, 1]), the labels of data-initialised chains' starts and the sampling metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from ebmref.checkpoint import load_checkpoint
from ebmref.config import TrainConfig
from ebmref.energy import Energy
from ebmref.training import CHECKPOINT_NAME
from mnist.presets import ModelConfig

RUN_NAME = "run.json"
CHAINS_NAME = "chains.pt"


def write_run_info(out: Path, info: dict, resume: bool) -> dict:
    """Write ``out/run.json``; on a resumption keep the original record (the model config must
    match it), update its update count and append the new overrides. Returns what was written."""
    path = out / RUN_NAME
    if resume and path.exists():
        old = json.loads(path.read_text())
        if old["model"] != json.loads(json.dumps(info["model"])):
            raise ValueError(f"resume: model config {info['model']} differs from the run's "
                             f"{old['model']} in {path}")
        old["train"] = TrainConfig.from_dict(old["train"]).to_dict()  # earlier flat format
        old["train"]["run"]["n_updates"] = info["train"]["run"]["n_updates"]
        old.setdefault("resumed_with", []).append(info["overrides"])
        info = old
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2, default=str) + "\n")
    return info


def read_run_info(run_dir: str | Path) -> dict:
    path = Path(run_dir) / RUN_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a mnist.train run directory (train one with "
                                f"python -m mnist.train --preset nll --out DIR)")
    return json.loads(path.read_text())


def load_trained(run_dir: str | Path, device: str | torch.device = "cpu"
                 ) -> tuple[Energy, dict]:
    """The trained energy of a run directory (eval mode, on ``device``) and its run.json, with
    the checkpoint's update count under ``"step"``."""
    info = read_run_info(run_dir)
    energy = ModelConfig(**info["model"]).build_energy()
    state = load_checkpoint(Path(run_dir) / CHECKPOINT_NAME, map_location="cpu")
    energy.load_state_dict(state["model"])
    info["step"] = int(state["step"])
    return energy.to(device).eval(), info


def save_chains(out_dir: Path, trajectory: Tensor, meta: dict,
                start_labels: Tensor | None = None) -> Path:
    """Frames as float16 (values in [0, 1]; 3 significant digits are plenty for metrics)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / CHAINS_NAME
    torch.save({"trajectory": trajectory.detach().to("cpu", torch.float16).contiguous(),
                "start_labels": None if start_labels is None else start_labels.cpu(),
                "meta": meta}, path)
    return path


def load_chains(sample_dir: str | Path) -> dict:
    return torch.load(Path(sample_dir) / CHAINS_NAME, map_location="cpu", weights_only=True)
