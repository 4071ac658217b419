"""Atomic, self-describing, checksummed training checkpoints.

A checkpoint is a dict of tensors and plain values saved with ``torch.save`` through
:func:`ebmref.files.atomic_write` (a crash mid-write leaves the previous checkpoint intact) and
loaded with ``torch.load(..., weights_only=True)`` (no pickled code runs on load). It carries a
SHA-256 digest of every tensor it holds (``"checksums"``, keyed by the tensor's path such as
``model/fc1.weight`` or ``buffer/storage``): loading recomputes them and names the file, the
tensor and both digests when one differs, so a flipped bit is an error, not altered weights.
Training checkpoints also record the energy (``"energy"``: class, construction arguments when
given, and every parameter's shape) so that a checkpoint of another architecture is refused
with the shapes that differ.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import Tensor

from ebmref.files import atomic_torch_save

FORMAT = "ebmref-checkpoint"
VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: no checksums
REQUIRED_KEYS = ("format", "version", "step", "model", "optimizer", "buffer", "rng", "config")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, corrupted, or not an ebmref one."""


def _tensors(obj, prefix: str = ""):
    """(path, tensor) for every tensor in nested dicts/lists/tuples, in a fixed order."""
    if isinstance(obj, Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from _tensors(obj[k], f"{prefix}/{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}/{i}")


def tensor_digest(t: Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes."""
    data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    head = f"{t.dtype}:{tuple(t.shape)}:".encode()
    return hashlib.sha256(head + data).hexdigest()


def checksums(state: dict) -> dict[str, str]:
    return {path: tensor_digest(t) for path, t in _tensors(state)}


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Write ``state`` (plus format tag, version and checksums) atomically; returns the path.
    Raises :class:`ebmref.files.WriteError` naming the path and the cause."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **state, "checksums": checksums(state)}
    return atomic_torch_save(payload, path)


def _verify(state: dict, path: Path) -> None:
    saved = state.pop("checksums", None)
    if state["version"] < 2:
        return
    if not isinstance(saved, dict):
        raise CheckpointError(f"checkpoint {path}: the checksums are missing")
    now = checksums(state)
    for name in sorted(set(saved) | set(now)):
        if saved.get(name) != now.get(name):
            raise CheckpointError(
                f"checkpoint {path}: tensor {name!r} does not match its checksum (stored "
                f"{str(saved.get(name))[:12]}…, computed {str(now.get(name))[:12]}…): the "
                "file is corrupted")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load, verify and return a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is truncated/corrupted (unreadable, or a tensor whose bytes
            no longer match its checksum), holds objects that need pickled code, or is not an
            ebmref checkpoint of a supported version.
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
    if state.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(f"checkpoint {path}: version {state.get('version')!r} is not "
                              f"supported (this ebmref reads versions {READABLE_VERSIONS})")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path}: missing entries {missing}")
    _verify(state, path)
    return state


def energy_record(energy: torch.nn.Module, spec: dict | None = None) -> dict:
    """What a checkpoint says about the energy it holds: class, construction arguments (when
    the caller knows them) and every state-dict entry's shape."""
    return {"class": type(energy).__name__, "spec": spec,
            "shapes": {k: list(v.shape) for k, v in energy.state_dict().items()}}


def check_energy(saved: dict | None, energy: torch.nn.Module, path: str | os.PathLike,
                 spec: dict | None = None) -> None:
    """Refuse a checkpoint whose recorded energy is not ``energy`` (class, shapes, and the
    construction arguments when both sides know them), naming what differs."""
    if saved is None:  # version 1 checkpoints record no energy
        return
    now = energy_record(energy, spec)
    if saved.get("class") != now["class"]:
        raise CheckpointError(f"checkpoint {path}: holds a {saved.get('class')}, not a "
                              f"{now['class']}")
    if spec is not None and saved.get("spec") is not None and saved["spec"] != spec:
        diff = {k: (saved["spec"].get(k), v) for k, v in spec.items() if saved["spec"].get(k) != v}
        raise CheckpointError(f"checkpoint {path}: built with other arguments {diff} "
                              "(checkpoint, now)")
    differ = {k: (saved["shapes"].get(k), v) for k, v in now["shapes"].items()
              if saved["shapes"].get(k) != v}
    differ.update({k: (v, None) for k, v in saved["shapes"].items() if k not in now["shapes"]})
    if differ:
        first = dict(list(differ.items())[:3])
        raise CheckpointError(f"checkpoint {path}: the energy's shapes differ (checkpoint, "
                              f"now): {first}")
