"""Contracts of the run directory (:mod:`ebmref.rundir`) and the checkpoint checks
(:mod:`ebmref.checkpoint`): the lock and its busy message, the argument checks of
``preflight`` / ``check_resumable`` with their full messages, the clean-up after a crashed
writer, the staging directory of a replacing run, and the messages of ``check_energy`` and of
a checksum mismatch."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import socket

import numpy as np
import pytest
import torch

from ebmref.checkpoint import CheckpointError, check_energy, load_checkpoint, save_checkpoint
from ebmref.config import RESUMABLE_CHANGES, TrainConfig, with_overrides
from ebmref.energy import Gaussian
from ebmref.rundir import (
    RunDirectoryBusy,
    RunFiles,
    RunLock,
    _clean_after_crash,
    check_resumable,
    preflight,
)
from ebmref.training import TrainState

# ----------------------------------------------------------------------------- RunLock


def test_busy_lock_names_the_directory_and_the_owner(tmp_path):
    """A second lock on a held directory raises RunDirectoryBusy naming the run directory and
    the owner line written by the first (pid, host, start time); the lock file's parents are
    created as needed."""
    out = tmp_path / "a" / "b" / "run"
    first = RunLock(out).acquire()
    try:
        with pytest.raises(RunDirectoryBusy) as info:
            RunLock(out).acquire()
        owner = (rf"pid {os.getpid()} on {re.escape(socket.gethostname())}, since "
                 r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
        assert re.fullmatch(rf"{re.escape(str(out))}: in use by another run \({owner}\)",
                            str(info.value)), str(info.value)
    finally:
        first.release()
    assert not (out.parent / ".run.lock").exists()
    RunLock(out).acquire().release()  # free again after release


def test_busy_lock_with_an_empty_owner_file_says_unknown(tmp_path):
    """A lock held by someone who wrote no owner line is reported as owned by 'unknown'."""
    out = tmp_path / "run"
    fd = os.open(tmp_path / ".run.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunDirectoryBusy,
                           match=rf"^{re.escape(str(out))}: in use by another run \(unknown\)$"):
            RunLock(out).acquire()
    finally:
        os.close(fd)


def test_lock_retries_when_the_file_is_unlinked_before_flock(tmp_path, monkeypatch):
    """The previous owner may unlink the lock file between our open and flock: acquire then
    closes that descriptor (no leak), reopens the file and locks the new one."""
    out = tmp_path / "run"
    real_flock, calls = fcntl.flock, []

    def flock(fd, op):
        calls.append(fd)
        if len(calls) == 1:  # the previous owner releases: its release unlinks the file
            (tmp_path / ".run.lock").unlink()
        return real_flock(fd, op)

    before = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(fcntl, "flock", flock)
    lock = RunLock(out).acquire()
    monkeypatch.undo()
    try:
        assert len(calls) == 2
        assert len(os.listdir("/proc/self/fd")) == before + 1  # only the held descriptor
        assert os.fstat(lock._fd).st_ino == os.stat(lock.path).st_ino
        assert lock.path.read_text().startswith(f"pid {os.getpid()} on ")
    finally:
        lock.release()


def test_release_tolerates_a_lock_file_already_removed(tmp_path):
    """Releasing is best effort: a lock file removed by hand is not an error."""
    lock = RunLock(tmp_path / "run").acquire()
    lock.path.unlink()
    lock.release()
    assert lock._fd is None


# ----------------------------------------------------------------------------- preflight


def test_preflight_argument_and_directory_messages(tmp_path):
    """preflight's messages, and its result: a checkpoint is resumed only when asked for."""
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"^resume: must be False, True or 'if_exists', "
                                         r"got 'yes'$"):
        preflight(out, "yes", False)
    assert preflight(out, "if_exists", False) is False  # nothing to resume: a fresh run
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match=rf"^out_dir: {re.escape(str(out))} holds another run; "
                       r"resume it \(resume=True\), or pass overwrite=True \(--overwrite\) to "
                       r"replace it$"):
        preflight(out, False, False)
    assert preflight(out, False, True) is False  # overwriting: not resumed
    assert preflight(out, True, False) is True
    assert preflight(out, "if_exists", False) is True


# ----------------------------------------------------------------------------- clean-up


def test_clean_after_crash_restores_the_old_run_of_a_half_done_swap(tmp_path):
    """Crashed between the two renames of a swap (no run dir, an .old- dir): the old run comes
    back; stray staging dirs are removed."""
    out = tmp_path / "run"
    old = tmp_path / ".run.old-123"
    old.mkdir()
    (old / "metrics.jsonl").write_text("old\n")
    staging = tmp_path / ".run.new-456"
    staging.mkdir()
    (staging / "config.json").write_text("{}")
    _clean_after_crash(out)
    assert (out / "metrics.jsonl").read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_clean_after_crash_keeps_a_swapped_in_run(tmp_path):
    """Crashed after the swap (the new run in place, the .old- dir not yet removed): the new
    run stays and the old copy is removed."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("new\n")
    old = tmp_path / ".run.old-123"
    old.mkdir()
    (old / "metrics.jsonl").write_text("old\n")
    _clean_after_crash(out)
    assert (out / "metrics.jsonl").read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_clean_after_crash_is_best_effort(tmp_path):
    """An entry named like a staging dir that cannot be removed as a tree (a plain file) does
    not stop the clean-up."""
    (tmp_path / ".run.new-7").write_text("not a directory")
    _clean_after_crash(tmp_path / "run")
    assert (tmp_path / ".run.new-7").exists()


# ----------------------------------------------------------------------------- resuming


def test_check_resumable_messages(tmp_path):
    """Every changed field is listed, comma-separated, in field order; a checkpoint past
    run.n_updates names both steps and the file."""
    saved = {"config": TrainConfig().to_dict(), "step": 7}
    changed = with_overrides(TrainConfig(), {"run.seed": 1, "run.batch_size": 64})
    with pytest.raises(ValueError, match=r"^resume: the config differs from the checkpoint's in "
                       r"run\.batch_size: 128 -> 64, run\.seed: 0 -> 1; only "
                       rf"{re.escape(str(RESUMABLE_CHANGES))} may change$"):
        check_resumable(saved, changed, tmp_path / "c.pt")
    short = with_overrides(TrainConfig(), {"run.n_updates": 5})
    with pytest.raises(ValueError, match=r"^run\.n_updates: 5 is below the step 7 of the "
                       rf"checkpoint {re.escape(str(tmp_path / 'c.pt'))} being resumed$"):
        check_resumable(saved, short, tmp_path / "c.pt")
    check_resumable(saved, with_overrides(TrainConfig(), {"run.n_updates": 7}), tmp_path)


def _state(dim, spec=None):
    config = with_overrides(TrainConfig(), {"run.device": "cpu", "run.n_updates": 5})
    state = TrainState.create(Gaussian(torch.zeros(dim), torch.eye(dim)), config)
    state.spec = spec
    return state


def test_resuming_another_architecture_names_the_checkpoint_and_shapes(tmp_path):
    """Resuming with an energy of other shapes is refused by the energy check (a
    CheckpointError naming the checkpoint file and the shapes), not by load_state_dict."""
    out = tmp_path / "run"
    state = _state(2, {"dim": 2})
    files = RunFiles(out, state)
    files.save(state.state_dict())
    files.close()
    ckpt = re.escape(str(out / "checkpoint.pt"))
    with pytest.raises(CheckpointError, match=rf"^checkpoint {ckpt}: the energy's shapes differ "
                       r"\(checkpoint, now\): \{'mu': \(\[2\], \[3\]\), 'scale_tril': "
                       r"\(\[2, 2\], \[3, 3\]\)\}$"):
        RunFiles(out, _state(3), resume=True)
    with pytest.raises(CheckpointError, match=rf"^checkpoint {ckpt}: built with other arguments "
                       r"\{'dim': \(2, 3\)\} \(checkpoint, now\)$"):
        RunFiles(out, _state(2, {"dim": 3}), resume=True)
    RunFiles(out, _state(2, {"dim": 2}), resume=True).close()  # same energy: resumes


def test_replacing_run_writes_beside_the_old_one_until_its_first_checkpoint(tmp_path):
    """overwrite=True on a directory holding a run writes to <parent>/.<name>.new-<pid>; the
    old run is untouched, and closing before a checkpoint drops the staging dir (also when it
    already vanished)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("old\n")
    files = RunFiles(out, _state(2), overwrite=True)
    staging = tmp_path / f".run.new-{os.getpid()}"
    assert files.dir == staging and (staging / "config.json").is_file()
    assert (out / "metrics.jsonl").read_text() == "old\n"
    files.close()
    assert not staging.exists() and (out / "metrics.jsonl").read_text() == "old\n"
    files = RunFiles(out, _state(2), overwrite=True)
    for p in staging.iterdir():
        p.unlink()
    staging.rmdir()
    files.close()  # best effort: no error
    assert not (tmp_path / ".run.lock").exists()


# ----------------------------------------------------------------------------- check_energy


def _record(spec, shapes):
    return {"class": "Gaussian", "spec": spec, "shapes": shapes}


def test_check_energy_compares_arguments_only_when_both_sides_know_them():
    """Only the construction arguments that differ are named, (checkpoint, now); an argument
    set unknown on either side is not compared."""
    energy = Gaussian(torch.zeros(2), torch.eye(2))
    shapes = {"mu": [2], "scale_tril": [2, 2]}
    with pytest.raises(CheckpointError, match=r"^checkpoint c\.pt: built with other arguments "
                       r"\{'scale': \(1\.0, 2\.0\)\} \(checkpoint, now\)$"):
        check_energy(_record({"dim": 2, "scale": 1.0}, shapes), energy, "c.pt",
                     {"dim": 2, "scale": 2.0})
    check_energy(_record(None, shapes), energy, "c.pt", {"dim": 2})
    check_energy(_record({"dim": 5}, shapes), energy, "c.pt", None)
    check_energy(_record({"dim": 2}, shapes), energy, "c.pt", {"dim": 2})


def test_check_energy_names_at_most_three_differing_shapes():
    """The shape message lists the first three differences (current entries first, then
    entries only the checkpoint has)."""
    energy = Gaussian(torch.zeros(2), torch.eye(2))
    saved = _record(None, {"mu": [3], "scale_tril": [3, 3], "extra": [1], "more": [4]})
    with pytest.raises(CheckpointError, match=r"^checkpoint c\.pt: the energy's shapes differ "
                       r"\(checkpoint, now\): \{'mu': \(\[3\], \[2\]\), 'scale_tril': "
                       r"\(\[3, 3\], \[2, 2\]\), 'extra': \(\[1\], None\)\}$"):
        check_energy(saved, energy, "c.pt")


# ----------------------------------------------------------------------------- checksums


def test_checksum_mismatch_names_tensor_and_both_digest_prefixes(tmp_path):
    """A stored digest that differs from the recomputed one is a CheckpointError naming the
    tensor and the first 12 hex digits of both digests (SHA-256 of 'dtype:shape:' + bytes)."""
    w = torch.tensor([1.0, -2.0])
    path = save_checkpoint({"step": 0, "model": {"w": w}, "optimizer": {}, "buffer": None,
                            "rng": {}, "config": {}}, tmp_path / "c.pt")
    raw = torch.load(path, weights_only=True)
    raw["checksums"]["model/w"] = "0123456789abcdefXYZ"
    torch.save(raw, path)
    data = np.array([1.0, -2.0], dtype=np.float32).tobytes()
    digest = hashlib.sha256(b"torch.float32:(2,):" + data).hexdigest()
    with pytest.raises(CheckpointError, match=rf"^checkpoint {re.escape(str(path))}: tensor "
                       rf"'model/w' does not match its checksum \(stored 0123456789ab…, computed "
                       rf"{digest[:12]}…\): the file is corrupted$"):
        load_checkpoint(path)
