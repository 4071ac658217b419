"""Atomic, self-describing training checkpoints.

A checkpoint is a dict of tensors and plain values saved with ``torch.save`` and loaded with
``torch.load(..., weights_only=True)`` (no pickled code runs on load). It is first written to a
temporary file in the same directory, flushed and fsync'ed, then renamed over the target with
``os.replace`` — atomic on POSIX — so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

FORMAT = "ebmref-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("format", "version", "step", "model", "optimizer", "buffer", "rng", "config")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, corrupted, or not an ebmref one."""


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Write ``state`` (plus format tag and version) to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **state}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # pragma: no cover - platforms without directory fsync
        pass
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load and validate a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is truncated/corrupted, holds objects that need pickled code,
            or is not an ebmref checkpoint of a supported version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no file at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError/UnpicklingError/EOFError/...
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointError(
            f"checkpoint {path}: cannot be read as a torch checkpoint (corrupted, truncated or "
            f"not a torch file): {type(exc).__name__}: {first}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: not an ebmref checkpoint (format tag "
                              f"{state.get('format') if isinstance(state, dict) else None!r}, "
                              f"expected {FORMAT!r})")
    if state.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path}: version {state.get('version')!r} is not "
                              f"supported (this ebmref reads version {VERSION})")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path}: missing entries {missing}")
    return state
