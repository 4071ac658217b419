"""Run directories under faults, with real processes: two runs on one directory, kill -9 during
sampling and during a run that replaces another, a flipped bit in a checkpoint, a torn metrics
line, --resume without a checkpoint; and the atomic-write helpers on their own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ebmref.checkpoint import CheckpointError, load_checkpoint
from ebmref.files import WriteError, atomic_write_text, read_jsonl, remove_stale_temps
from mnist.data import load_mnist
from mnist.evaluate import main as evaluate_main
from mnist.runs import load_trained
from mnist.train import main as train_main
from mnist.train import train_preset

REPO = Path(__file__).resolve().parents[1]
TINY = ["-m", "mnist.train", "--preset", "tiny"]


def _popen(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    proc = _popen(args)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny run (3 updates), the 'old run' of the tests below (copy it to modify)."""
    run = tmp_path_factory.mktemp("runs") / "old"
    train_preset("tiny", run, load_mnist("train"))
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


_PAUSING_RUN = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from mnist.train import train_preset
    out, go = Path(sys.argv[1]), Path(sys.argv[2])
    def wait_at_step_5(step, record):  # holds the run (and its lock) until told to go on
        if step == 5:
            (out.parent / "a_paused").touch()
            while not go.exists():
                time.sleep(0.02)
    train_preset("tiny", out, overrides={"run.n_updates": 12}, callback=wait_at_step_5)
""")
_SECOND_RUN = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from mnist.train import main
    while not (Path(sys.argv[1]).parent / "a_paused").exists():  # imports done meanwhile
        time.sleep(0.02)
    sys.exit(main(["--preset", "tiny", "--out", sys.argv[1], "--overwrite", "--run.seed", "9"]))
""")


def test_a_second_run_on_a_busy_directory_stops_at_once(tmp_path):
    """Run A holds its directory (paused at update 5); run B on it, even with --overwrite,
    ends with exit 1 and one line naming A's pid while A waits (it does not wait for the
    lock); A then goes on and finishes intact: its records 1..12 once, its checkpoint."""
    out, go = tmp_path / "run", tmp_path / "go"
    (tmp_path / "a.py").write_text(_PAUSING_RUN)
    (tmp_path / "b.py").write_text(_SECOND_RUN)
    a = _popen([str(tmp_path / "a.py"), str(out), str(go)])
    b = _popen([str(tmp_path / "b.py"), str(out)])  # both start (import torch) at once
    try:
        _, b_err = b.communicate(timeout=120)
        assert a.poll() is None  # A is still paused: B did not wait for it
    finally:
        go.touch()
    assert b.returncode == 1 and f"pid {a.pid}" in b_err, b_err
    assert len(b_err.strip().splitlines()) == 1 and "Traceback" not in b_err
    assert a.wait(timeout=300) == 0, a.communicate()[1][-2000:]
    assert json.loads((out / "run.json").read_text())["train"]["run"]["seed"] == 0
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == list(range(1, 13))
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 12


def _wait_for_line(proc: subprocess.Popen, text: str, timeout: float = 120) -> None:
    """Read the child's stderr until a line containing ``text`` (a stage line)."""
    end = time.monotonic() + timeout
    for line in proc.stderr:
        if text in line:
            return
        assert time.monotonic() < end, f"no line with {text!r}"
    raise AssertionError(f"the process ended before {text!r}: rc {proc.wait()}")


def test_kill_during_a_replacing_run_leaves_the_old_run(trained, tmp_path):
    """--overwrite into an existing run, killed before its first checkpoint: the old run is
    untouched (its checkpoint loads with its own model config); the next start cleans up."""
    trained = _copy(trained, tmp_path)
    before = {p.name: p.read_bytes() for p in trained.iterdir()}
    new = _popen([*TINY, "--out", str(trained), "--overwrite", "--run.n-updates", "100000",
                  "--run.ckpt-every", "0", "--model.width", "6"])
    end = time.monotonic() + 120
    while not any((s / "metrics.jsonl").exists()
                  for s in trained.parent.glob(f".{trained.name}.new-*")):
        assert new.poll() is None and time.monotonic() < end, new.communicate()[1][-2000:]
        time.sleep(0.05)
    _kill(new)
    assert {p.name: p.read_bytes() for p in trained.iterdir()} == before
    _, info = load_trained(trained)
    assert info["model"]["width"] == 4 and info["step"] == 3
    assert train_main(["--preset", "tiny", "--out", str(trained), "--resume",
                       "--run.n-updates", "4"]) == 0
    assert not list(trained.parent.glob(f".{trained.name}.*"))  # staging and lock gone


def test_kill_during_sampling_leaves_no_torn_chains(trained, tmp_path, capsys):
    out = tmp_path / "chains"
    proc = _popen(["-m", "mnist.sample", "--run", str(trained), "--out", str(out),
                   "--no-metrics", "--sampler.n-steps", "100000", "--record-every", "50000",
                   "--n-chains", "4"])
    _wait_for_line(proc, "sampling 4 chains")
    time.sleep(0.5)
    _kill(proc)
    assert not (out / "chains.pt").exists()
    assert evaluate_main(["--samples", str(out)]) == 1
    err = capsys.readouterr().err
    assert "chains.pt" in err and "Traceback" not in err


def test_a_flipped_bit_in_a_checkpoint_tensor_is_an_error_naming_it(trained, tmp_path):
    path = tmp_path / "checkpoint.pt"
    raw = bytearray((trained / "checkpoint.pt").read_bytes())
    weight = load_checkpoint(trained / "checkpoint.pt")["model"]["fc2.weight"]
    at = bytes(raw).find(weight.numpy().tobytes())
    assert at > 0
    raw[at + 5] ^= 0x10  # one bit of one float of fc2.weight
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"'model/fc2\.weight' does not match"):
        load_checkpoint(path)


def test_torn_metrics_line_and_resume_without_checkpoint(trained, tmp_path, capsys):
    """A metrics log whose last line was cut by a kill resumes (the torn line is dropped with
    a warning); a --resume into a directory without a checkpoint fails and writes nothing."""
    trained = _copy(trained, tmp_path)
    with open(trained / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "loss": 0.1')  # killed mid-line
    with pytest.warns(UserWarning, match="torn last line"):
        assert train_main(["--preset", "tiny", "--out", str(trained), "--resume",
                           "--run.n-updates", "6"]) == 0
    assert [r["step"] for r in read_jsonl(trained / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert train_main(["--preset", "tiny", "--out", str(empty / "typo"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert not list(empty.iterdir())  # nothing written, not even the directory


def test_atomic_write_keeps_the_old_file_and_names_the_cause(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_text(target, "old")

    def fail(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    from ebmref.files import atomic_write
    with pytest.raises(WriteError, match=r"a\.json: cannot write \(No space left on device\)"):
        atomic_write(target, fail)
    assert target.read_text() == "old" and not remove_stale_temps(tmp_path)
    with pytest.raises(WriteError, match="cannot write"):
        atomic_write_text(tmp_path / "missing" / "b.txt", "x")
    (tmp_path / ".a.json.x1.tmp").write_text("crashed writer")
    assert [p.name for p in remove_stale_temps(tmp_path)] == [".a.json.x1.tmp"]
    with pytest.raises(ValueError, match="allow_nan|JSON compliant|Out of range"):
        from ebmref.files import atomic_write_json
        atomic_write_json(tmp_path / "n.json", {"x": float("nan")})
