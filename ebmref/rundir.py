"""The run directory of :func:`ebmref.training.train`: ``config.json`` (the config, the
resolved device, the transition and the energy's class), ``metrics.jsonl`` (one JSON record
per logged update) and ``checkpoint.pt`` (:mod:`ebmref.checkpoint`). Only rank 0 of a process
group writes. A resumed run keeps the records up to its checkpoint and drops later ones (they
are recomputed, identically on CPU).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from ebmref import distributed
from ebmref.checkpoint import load_checkpoint, save_checkpoint
from ebmref.config import RESUMABLE_CHANGES, TrainConfig

if TYPE_CHECKING:
    from ebmref.training import TrainState

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.json"


def _check_resumable(saved: dict, config: TrainConfig) -> None:
    changed = TrainConfig.from_dict(saved).differences(config, ignore=RESUMABLE_CHANGES)
    if changed:
        diffs = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise ValueError(f"resume: the config differs from the checkpoint's in {diffs}; only "
                         f"{RESUMABLE_CHANGES} may change")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records written after the checkpoint we resume from (they will be recomputed)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))


class RunFiles:
    """The files of one run (rank 0 writes), and which checkpoint is the last good one (for
    divergence messages). Opening a directory creates it, resumes ``state`` from its checkpoint
    when ``resume`` and one exists (the config must match it but for
    ``ebmref.config.RESUMABLE_CHANGES``), or starts fresh metrics; then writes config.json."""

    def __init__(self, out: Path | None, state: TrainState, resume: bool, recorded: dict):
        self.out, self.is_main = out, distributed.current().is_main
        self.ckpt = out / CHECKPOINT_NAME if out is not None else None
        self.last_good: Path | None = None  # a stale file of an earlier run is not "ours"
        if out is None:
            return
        out.mkdir(parents=True, exist_ok=True)
        if resume and self.ckpt.exists():
            saved = load_checkpoint(self.ckpt, map_location=state.config.run.resolved_device())
            _check_resumable(saved["config"], state.config)
            state.load_state_dict(saved)
            self.last_good = self.ckpt
            if self.is_main:
                _truncate_metrics(out / METRICS_NAME, state.step)
        elif not resume and self.is_main:
            (out / METRICS_NAME).unlink(missing_ok=True)
        if self.is_main:
            record = {**state.config.to_dict(), **recorded}
            (out / CONFIG_NAME).write_text(json.dumps(record, indent=2) + "\n")

    def save(self, checkpoint: dict) -> None:
        if self.ckpt is not None:
            self.last_good = save_checkpoint(checkpoint, self.ckpt) if self.is_main else self.ckpt

    def log(self, record: dict) -> None:
        if self.out is not None and self.is_main:
            with open(self.out / METRICS_NAME, "a") as f:
                f.write(json.dumps(record) + "\n")
