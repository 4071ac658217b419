"""The run directory of :func:`ebmref.training.train`, owned by one process at a time.

Files: ``config.json`` (the config, the resolved device, the transition and the energy's
class, plus any caller's records such as ``run.json``), ``metrics.jsonl`` (one JSON record per
logged update) and ``checkpoint.pt`` (:mod:`ebmref.checkpoint`). Only rank 0 of a process
group writes, always through :func:`ebmref.files.atomic_write` (the metrics log is appended; a
torn last line is skipped on reading).

Ownership: :class:`RunLock` holds an advisory lock (``flock``) on ``<parent>/.<name>.lock``,
which names its owner (pid, host, start); a second run on the same directory stops at once
with :class:`RunDirectoryBusy` naming it. The lock dies with its process, even under kill -9.

A fresh run refuses a directory that holds another run unless ``overwrite``; it then writes the
new run beside the old one (``<parent>/.<name>.new-<pid>``) and swaps the two at its first
checkpoint, so a crash before then leaves the old run as it was, and a crash never mixes two
runs' files. A resumed run keeps the records up to its checkpoint and drops later ones (they
are recomputed, identically on CPU). ``resume=True`` needs a checkpoint; ``"if_exists"``
starts fresh when there is none. Everything is checked before anything is written.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ebmref import distributed
from ebmref.checkpoint import check_energy, load_checkpoint, save_checkpoint
from ebmref.config import RESUMABLE_CHANGES, TrainConfig
from ebmref.files import atomic_write_json, read_jsonl, remove_stale_temps

if TYPE_CHECKING:
    from ebmref.training import TrainState

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.json"
RUN_FILES = (CHECKPOINT_NAME, METRICS_NAME, CONFIG_NAME)


class RunDirectoryBusy(RuntimeError):
    """Another live process owns the run directory."""


class RunLock:
    """An exclusive advisory lock on a run directory (see the module docstring)."""

    def __init__(self, out: Path):
        self.path = out.parent / f".{out.name}.lock"
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 512).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RunDirectoryBusy(f"{self.path.parent / self.path.name[1:-5]}: in use by "
                                       f"another run ({owner})") from None
            # The previous owner may have unlinked the file between our open and flock.
            if os.path.exists(self.path) and os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records written after the checkpoint we resume from (they will be recomputed)."""
    if path.exists():
        keep = [r for r in read_jsonl(path) if r["step"] <= step]
        text = "".join(json.dumps(r) + "\n" for r in keep)
        path.write_text(text)


def check_resumable(saved: dict, config: TrainConfig, path: Path) -> None:
    """Refuse to resume a checkpoint with another config (but for RESUMABLE_CHANGES), or one
    already past ``run.n_updates``."""
    changed = TrainConfig.from_dict(saved["config"]).differences(config, ignore=RESUMABLE_CHANGES)
    if changed:
        diffs = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise ValueError(f"resume: the config differs from the checkpoint's in {diffs}; only "
                         f"{RESUMABLE_CHANGES} may change")
    if int(saved["step"]) > config.run.n_updates:
        raise ValueError(f"run.n_updates: {config.run.n_updates} is below the step "
                         f"{int(saved['step'])} of the checkpoint {path} being resumed")


def holds_run(out: Path) -> bool:
    return out.is_dir() and any((out / name).exists() for name in RUN_FILES)


def _clean_after_crash(out: Path) -> None:
    """Undo what a crashed writer left: a half-done swap, staging dirs, temp files."""
    old = sorted(out.parent.glob(f".{out.name}.old-*"))
    if old and not out.exists():
        old[0].rename(out)  # crashed between the two renames of a swap: the old run returns
    for p in [*out.parent.glob(f".{out.name}.new-*"), *out.parent.glob(f".{out.name}.old-*")]:
        shutil.rmtree(p, ignore_errors=True)
    remove_stale_temps(out)


def preflight(out: Path, resume: bool | str, overwrite: bool) -> bool:
    """Checks that need no lock and write nothing; returns whether a checkpoint will be
    resumed."""
    if resume not in (False, True, "if_exists"):
        raise ValueError(f"resume: must be False, True or 'if_exists', got {resume!r}")
    has_ckpt = (out / CHECKPOINT_NAME).is_file()
    if resume is True and not has_ckpt:
        raise ValueError(f"resume: no checkpoint at {out / CHECKPOINT_NAME} (use "
                         "resume='if_exists' / --resume-if-exists to start fresh when missing)")
    if not resume and holds_run(out) and not overwrite:
        raise ValueError(f"out_dir: {out} holds another run; resume it (resume=True), or pass "
                         "overwrite=True (--overwrite) to replace it")
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir: {out} exists and is not a directory")
    return bool(resume) and has_ckpt


class RunFiles:
    """The files of one run and the directory's lock (module docstring). Opening checks, locks,
    resumes ``state`` from the checkpoint when asked, then writes config.json and ``records``
    ({file name: JSON-able object}) — all before the first update."""

    def __init__(self, out: Path | None, state: TrainState, resume: bool | str = False,
                 overwrite: bool = False, records: dict | None = None):
        self.out, self.is_main = out, distributed.current().is_main
        self.dir: Path | None = out
        self.staging: Path | None = None
        self.last_good: Path | None = None  # a stale file of an earlier run is not "ours"
        self.lock: RunLock | None = None
        if out is None:
            return
        resuming = preflight(out, resume, overwrite)
        distributed.barrier()  # every rank has looked before rank 0 writes anything
        if self.is_main:
            self.lock = RunLock(out).acquire()
        try:
            self._open(state, resuming, records or {})
        except BaseException:
            self.close()
            raise

    def _open(self, state: TrainState, resuming: bool, records: dict) -> None:
        out = self.out
        ckpt = out / CHECKPOINT_NAME
        if self.is_main:
            _clean_after_crash(out)
        if resuming:
            saved = load_checkpoint(ckpt, map_location=state.config.run.resolved_device())
            check_resumable(saved, state.config, ckpt)
            check_energy(saved.get("energy"), state.energy, ckpt, state.spec)
            state.load_state_dict(saved)
            self.last_good = ckpt
            if self.is_main:
                _truncate_metrics(out / METRICS_NAME, state.step)
        elif self.is_main and holds_run(out):  # replaced at the first checkpoint
            self.staging = self.dir = out.parent / f".{out.name}.new-{os.getpid()}"
            self.dir.mkdir()
        elif self.is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / METRICS_NAME).unlink(missing_ok=True)
        if self.is_main:
            for name, obj in {CONFIG_NAME: {**state.config.to_dict(), **records.pop(
                    CONFIG_NAME, {})}, **records}.items():
                atomic_write_json(self.dir / name, obj)

    def save(self, checkpoint: dict) -> None:
        if self.out is None:
            return
        if self.is_main:
            save_checkpoint(checkpoint, self.dir / CHECKPOINT_NAME)
            if self.staging is not None:  # swap the new run in: two renames
                old = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
                self.out.rename(old)
                self.staging.rename(self.out)
                shutil.rmtree(old, ignore_errors=True)
                self.dir, self.staging = self.out, None
        self.last_good = self.out / CHECKPOINT_NAME

    def log(self, record: dict) -> None:
        if self.dir is not None and self.is_main:
            with open(self.dir / METRICS_NAME, "a") as f:
                f.write(json.dumps(record, allow_nan=False) + "\n")

    def close(self) -> None:
        """Release the directory; a replacement run that never reached a checkpoint is
        dropped (the old run stays as it was)."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None
