"""ebmref.rundir's life cycle of a run directory, beyond test_rundir_checkpoint_contracts.py:
a replacing run (overwrite) swaps in at its first checkpoint — the old run removed, the new one
in place, later writes going there, a leftover old copy that cannot be removed not failing the
checkpoint; a fresh run into an existing empty directory; the caller's records; resuming
(state, last good checkpoint, metrics after the checkpoint dropped); the lock held while open;
``out=None`` writing nothing; metrics are strict JSON; the lock file's owner line."""

from __future__ import annotations

import fcntl
import json
import os
import re

import pytest
import torch

from ebmref.config import TrainConfig, with_overrides
from ebmref.energy import Gaussian
from ebmref.rundir import RunDirectoryBusy, RunFiles, RunLock, _truncate_metrics, preflight
from ebmref.training import TrainState


def _state(n_updates=5):
    config = with_overrides(TrainConfig(), {"run.device": "cpu", "run.n_updates": n_updates})
    return TrainState.create(Gaussian(torch.zeros(2), torch.eye(2)), config)


def _old_run(out):
    """A finished earlier run: its files hold marks we can look for."""
    out.mkdir(parents=True)
    (out / "metrics.jsonl").write_text('{"step": 1, "old": true}\n')
    (out / "config.json").write_text('{"old": true}\n')


def _as_json(obj):
    return json.loads(json.dumps(obj))


def _names(directory):
    return sorted(p.name for p in directory.iterdir())


def test_replacing_run_swaps_in_at_its_first_checkpoint(tmp_path):
    """overwrite=True: at the first save the new run takes the directory's name, the old run
    is gone (no .old-/.new- directories left), and later saves and logs go to the directory."""
    out = tmp_path / "run"
    _old_run(out)
    state = _state()
    files = RunFiles(out, state, overwrite=True)
    files.log({"step": 1, "new": True})
    assert (out / "config.json").read_text() == '{"old": true}\n'  # untouched until then
    files.save(state.state_dict())
    assert files.dir == out and files.staging is None
    assert files.last_good == out / "checkpoint.pt"
    assert _names(tmp_path) == [".run.lock", "run"]
    assert _names(out) == ["checkpoint.pt", "config.json", "metrics.jsonl"]
    assert json.loads((out / "config.json").read_text()) == _as_json(state.config.to_dict())
    assert (out / "metrics.jsonl").read_text() == '{"step": 1, "new": true}\n'
    files.log({"step": 2})
    state.step = 2
    files.save(state.state_dict())
    files.close()
    assert (out / "metrics.jsonl").read_text().splitlines()[-1] == '{"step": 2}'
    assert _names(tmp_path) == ["run"]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2


def test_an_old_run_that_cannot_be_removed_does_not_fail_the_checkpoint(tmp_path, monkeypatch):
    """Removing the old run after the swap is best effort: a file that cannot be deleted
    leaves the .old- copy behind, the checkpoint stands, and the next start removes it."""
    out = tmp_path / "run"
    _old_run(out)
    (out / "stuck").write_text("x")
    state = _state()
    files = RunFiles(out, state, overwrite=True)
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if os.fspath(path).endswith("stuck"):
            raise PermissionError(1, "Operation not permitted")
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    files.save(state.state_dict())
    monkeypatch.undo()
    files.close()
    assert (out / "checkpoint.pt").is_file() and not (out / "stuck").exists()
    assert _names(tmp_path) == [f".run.old-{os.getpid()}", "run"]
    RunFiles(out, _state(), resume=True).close()  # the next start cleans up
    assert _names(tmp_path) == ["run"]


def test_replacing_needs_overwrite(tmp_path):
    """Without overwrite (the default) a directory holding a run is refused, untouched."""
    out = tmp_path / "run"
    _old_run(out)
    with pytest.raises(ValueError, match=r"holds another run"):
        RunFiles(out, _state())
    assert _names(out) == ["config.json", "metrics.jsonl"]


@pytest.mark.parametrize("content", [[], ["notes.txt"]])
def test_a_fresh_run_writes_into_an_existing_directory_without_run_files(tmp_path, content):
    """An existing directory without run files (empty, or unrelated files) is no run: a fresh
    run writes there directly (config.json before any checkpoint), keeping the other files."""
    out = tmp_path / "run"
    out.mkdir()
    for name in content:
        (out / name).write_text("mine")
    state = _state()
    files = RunFiles(out, state)
    assert files.dir == out and files.staging is None and files.last_good is None
    assert _names(out) == sorted(["config.json", *content])
    files.close()


def test_a_fresh_run_creates_its_directory(tmp_path):
    """A new directory (and its parents) is made; nothing lands beside it but the lock,
    which goes when the run is closed."""
    out = tmp_path / "a" / "b" / "run"
    files = RunFiles(out, _state())
    assert _names(out) == ["config.json"] and _names(out.parent) == [".run.lock", "run"]
    files.close()
    assert _names(out.parent) == ["run"]


def test_records_are_written_and_config_records_merged(tmp_path):
    """records: each {file name: object} is written as JSON; a record named config.json is
    merged into the config's own file."""
    out = tmp_path / "run"
    state = _state()
    records = {"run.json": {"argv": ["--x"]}, "config.json": {"energy_class": "Gaussian"}}
    RunFiles(out, state, records=records).close()
    assert json.loads((out / "run.json").read_text()) == {"argv": ["--x"]}
    assert json.loads((out / "config.json").read_text()) == _as_json(
        {**state.config.to_dict(), "energy_class": "Gaussian"})


def test_resuming_restores_state_and_drops_later_metrics(tmp_path):
    """resume=True loads the checkpoint into the state, counts it as the last good one, and
    keeps the metrics records up to and including the checkpoint's step."""
    out = tmp_path / "run"
    state = _state(n_updates=10)
    files = RunFiles(out, state)
    state.step = 3
    files.save(state.state_dict())
    for step in range(1, 6):
        files.log({"step": step})
    files.close()
    fresh = _state(n_updates=10)
    files = RunFiles(out, fresh, resume=True)
    try:
        assert fresh.step == 3 and files.last_good == out / "checkpoint.pt"
        assert files.dir == out and files.staging is None
        assert (out / "metrics.jsonl").read_text() == "".join(
            f'{{"step": {s}}}\n' for s in (1, 2, 3))
    finally:
        files.close()


def test_resuming_past_n_updates_names_the_checkpoint(tmp_path):
    """A checkpoint beyond the new run.n_updates is refused naming both steps and its file."""
    out = tmp_path / "run"
    state = _state(n_updates=10)
    files = RunFiles(out, state)
    state.step = 6
    files.save(state.state_dict())
    files.close()
    ckpt = re.escape(str(out / "checkpoint.pt"))
    with pytest.raises(ValueError, match=rf"^run\.n_updates: 5 is below the step 6 of the "
                       rf"checkpoint {ckpt} being resumed$"):
        RunFiles(out, _state(n_updates=5), resume=True)


def test_truncate_metrics_keeps_the_checkpoint_step_and_ignores_a_missing_log(tmp_path):
    """Records after ``step`` go, the record at ``step`` stays; no log, no file made."""
    path = tmp_path / "metrics.jsonl"
    _truncate_metrics(path, 2)
    assert not path.exists()
    path.write_text('{"step": 2, "a": 1}\n{"step": 1}\n{"step": 3}\n')
    _truncate_metrics(path, 2)
    assert path.read_text() == '{"step": 2, "a": 1}\n{"step": 1}\n'


def test_an_open_run_holds_the_directory(tmp_path):
    """While a RunFiles is open a second one on the directory is refused; close releases it,
    and closing twice is harmless (also for a replacing run that never reached a checkpoint);
    releasing a lock that was never acquired does nothing."""
    out = tmp_path / "run"
    files = RunFiles(out, _state())
    with pytest.raises(RunDirectoryBusy):
        RunFiles(out, _state(), resume="if_exists")
    files.close()
    files.close()
    assert files.lock is None and files.staging is None
    RunFiles(out, _state(), resume="if_exists").close()
    replacing = RunFiles(out, _state(), overwrite=True)  # closed before its first checkpoint
    replacing.close()
    replacing.close()
    assert replacing.staging is None and replacing.lock is None
    RunLock(tmp_path / "other").release()  # never acquired: nothing to release
    assert _names(tmp_path) == ["run"]


def test_no_directory_means_no_files(tmp_path, monkeypatch):
    """out=None: saving and logging do nothing and nothing is written anywhere."""
    monkeypatch.chdir(tmp_path)
    state = _state()
    files = RunFiles(None, state)
    files.log({"step": 1})
    files.save(state.state_dict())
    files.close()
    assert files.dir is None and files.last_good is None and os.listdir(tmp_path) == []


def test_metrics_are_strict_json(tmp_path):
    """A NaN in a record is refused (metrics.jsonl is strict JSON), nothing is appended."""
    out = tmp_path / "run"
    files = RunFiles(out, _state())
    try:
        files.log({"step": 1, "loss": 0.5})
        with pytest.raises(ValueError):
            files.log({"step": 2, "loss": float("nan")})
    finally:
        files.close()
    assert (out / "metrics.jsonl").read_text() == '{"step": 1, "loss": 0.5}\n'


def test_no_checkpoint_to_resume_and_a_file_in_the_way(tmp_path):
    """resume=True without a checkpoint, and an output path that is a file, are refused with
    their whole messages."""
    out = tmp_path / "run"
    ckpt = re.escape(str(out / "checkpoint.pt"))
    with pytest.raises(ValueError, match=rf"^resume: no checkpoint at {ckpt} \(use "
                       r"resume='if_exists' / --resume-if-exists to start fresh when "
                       r"missing\)$"):
        preflight(out, True, False)
    out.write_text("a file")
    with pytest.raises(ValueError, match=rf"^out_dir: {re.escape(str(out))} exists and is not "
                       r"a directory$"):
        preflight(out, False, True)


def test_lock_file_and_a_foreign_owner_line(tmp_path):
    """The lock file is readable by all (0644 less the umask) so other users see the owner; a
    foreign owner line is read up to 512 bytes, undecodable bytes replaced."""
    out = tmp_path / "run"
    lock = RunLock(out).acquire()
    umask = os.umask(0)
    os.umask(umask)
    assert lock.path.stat().st_mode & 0o777 == 0o644 & ~umask
    lock.release()
    fd = os.open(tmp_path / ".run.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"pid 7 \xff" + b"x" * 600)
        with pytest.raises(RunDirectoryBusy) as info:
            RunLock(out).acquire()
    finally:
        os.close(fd)
    assert str(info.value) == f"{out}: in use by another run (pid 7 \ufffd{'x' * 505})"
