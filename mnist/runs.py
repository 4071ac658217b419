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

import dataclasses
import json
from pathlib import Path

import torch
from torch import Tensor

from ebmref.checkpoint import check_energy, load_checkpoint
from ebmref.config import TrainConfig
from ebmref.energy import Energy
from ebmref.files import atomic_torch_save
from ebmref.training import CHECKPOINT_NAME
from mnist.presets import ModelConfig

RUN_NAME = "run.json"
CHAINS_NAME = "chains.pt"


def run_info(out: Path, info: dict, resume: bool | str) -> dict:
    """The ``run.json`` a run writes (through :func:`ebmref.training.train`'s ``records``, so it
    lands only once the run directory has been checked): on a resumption the original record
    (the model config must match it) with the new update count and the new overrides appended
    to ``resumed_with``; otherwise ``info``."""
    path = out / RUN_NAME
    if not (resume and path.exists() and (out / CHECKPOINT_NAME).exists()):
        return info
    old = json.loads(path.read_text())
    if old["model"] != json.loads(json.dumps(info["model"])):
        raise ValueError(f"resume: model config {info['model']} differs from the run's "
                         f"{old['model']} in {path}")
    old["train"] = TrainConfig.from_dict(old["train"]).to_dict()  # earlier flat format
    old["train"]["run"]["n_updates"] = info["train"]["run"]["n_updates"]
    old.setdefault("resumed_with", []).append(info["overrides"])
    return old


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
    model_cfg = ModelConfig(**info["model"])
    energy = model_cfg.build_energy()
    path = Path(run_dir) / CHECKPOINT_NAME
    state = load_checkpoint(path, map_location="cpu")
    check_energy(state.get("energy"), energy, path, dataclasses.asdict(model_cfg))
    energy.load_state_dict(state["model"])
    info["step"] = int(state["step"])
    return energy.to(device).eval(), info


def save_chains(out_dir: Path, trajectory: Tensor, meta: dict,
                start_labels: Tensor | None = None) -> Path:
    """Frames as float16 when every value fits its range exactly enough for the metrics
    (finite, |x| ≤ 65504: images clamped to [0, 1]), else in the dtype they were computed in;
    written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    traj = trajectory.detach().to("cpu").contiguous()
    if bool(torch.isfinite(traj).all()) and float(traj.abs().max()) <= 65504.0:
        traj = traj.to(torch.float16)
    return atomic_torch_save({"trajectory": traj, "meta": meta, "start_labels":
                              None if start_labels is None else start_labels.cpu()},
                             out_dir / CHAINS_NAME)


def load_chains(sample_dir: str | Path) -> dict:
    path = Path(sample_dir) / CHAINS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no chains here (write them with python -m "
                                "mnist.sample --run RUN --out DIR)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, corrupted or not a torch file
        raise ValueError(f"{path}: cannot be read ({type(err).__name__}); sample again") from err
