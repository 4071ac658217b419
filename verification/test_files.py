"""Writing and reading the project's files (ebmref.files): atomic writes, strict JSON, the
stale-temp cleanup, JSON-lines logs and the output-path checks. Deterministic, on tmp_path.

(Crash safety against a real SIGKILL is tested in test_run_integrity.py and test_training.py;
these are the functions' contracts on their own.)"""

from __future__ import annotations

import errno
import json
import os
import warnings
from pathlib import Path

import pytest

from ebmref import files
from ebmref.files import WriteError


def test_atomic_write_replaces_the_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.txt"
    assert files.atomic_write_text(target, "één") == target
    files.atomic_write_text(target, "twee")
    assert target.read_bytes() == b"twee"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    # The usual mode of a new file (mkstemp's 0600 would hide runs from other users).
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_the_bytes_go_to_a_hidden_temp_file_beside_the_target(tmp_path):
    """Same directory (os.replace is atomic only within a file system), named
    ``.<name>.<random>.tmp`` so that remove_stale_temps finds it after a crash."""
    during = []
    files.atomic_write(tmp_path / "c.pt", lambda f: during.extend(os.listdir(tmp_path)))
    assert len(during) == 1 and during[0].startswith(".c.pt.") and during[0].endswith(".tmp")
    assert os.listdir(tmp_path) == ["c.pt"]


def test_a_missing_directory_is_a_write_error_with_its_errno(tmp_path):
    with pytest.raises(WriteError, match=r"b\.txt: cannot write \(No such file or directory\)$") \
            as info:
        files.atomic_write_text(tmp_path / "missing" / "b.txt", "x")
    assert info.value.errno == errno.ENOENT


def test_a_failing_writer_keeps_the_old_file_and_names_path_and_cause(tmp_path):
    target = tmp_path / "a.bin"
    files.atomic_write(target, lambda f: f.write(b"old"))

    def fail(f):
        f.write(b"half")
        raise RuntimeError("encoder broke\nsecond line")

    with pytest.raises(WriteError, match=r"a\.bin: cannot write \(encoder broke\)$"):
        files.atomic_write(target, fail)
    assert target.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["a.bin"]
    with pytest.raises(WriteError, match=r"cannot write \(RuntimeError\)$"):  # no message
        files.atomic_write(target, lambda f: (_ for _ in ()).throw(RuntimeError()))
    with pytest.raises(WriteError, match=r"cannot write \(No space left on device\)$") as info:
        files.atomic_write(target, lambda f: (_ for _ in ()).throw(OSError(28, "No space left "
                                                                           "on device")))
    assert info.value.errno == 28
    with pytest.raises(KeyboardInterrupt):  # not turned into a WriteError
        files.atomic_write(target, lambda f: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert sorted(os.listdir(tmp_path)) == ["a.bin"]


def test_json_is_strict_indented_and_writes_other_objects_as_text(tmp_path):
    path = tmp_path / "r.json"
    files.atomic_write_json(path, {"run": Path("runs/a"), "x": [1, 2]})
    text = path.read_text()
    assert json.loads(text) == {"run": "runs/a", "x": [1, 2]} and text.endswith("}\n")
    assert text == json.dumps({"run": "runs/a", "x": [1, 2]}, indent=2) + "\n"
    files.atomic_write_json(path, {"x": 1}, indent=None)
    assert path.read_text() == '{"x": 1}\n'
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError):
            files.atomic_write_json(tmp_path / "n.json", {"x": bad})
    assert not (tmp_path / "n.json").exists()


def test_remove_stale_temps_removes_only_hidden_temp_files(tmp_path):
    keep = [".lock", "a.tmp", "b.json", ".dir.tmp"]
    for name in keep[:3]:
        (tmp_path / name).write_text("x")
    (tmp_path / ".dir.tmp").mkdir()
    (tmp_path / ".a.json.k2.tmp").write_text("crashed writer")
    assert [p.name for p in files.remove_stale_temps(tmp_path)] == [".a.json.k2.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
    assert files.remove_stale_temps(tmp_path / "missing") == []


def test_read_jsonl_skips_blank_lines_and_a_torn_last_line(tmp_path):
    path = tmp_path / "m.jsonl"
    assert files.read_jsonl(path) == []
    path.write_text('{"step": 1}\n\n{"step": 2}\n{"step": 3, "lo')
    with pytest.warns(UserWarning, match="m.jsonl: skipping a torn last line"):
        assert files.read_jsonl(path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\n{"step": 2}\n')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert files.read_jsonl(path) == [{"step": 1}, {"step": 2}]


def test_read_jsonl_names_a_bad_line_that_is_not_the_last(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\n{"st\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"m\.jsonl: line 2 is not JSON"):
        files.read_jsonl(path)


def test_check_output_dir(tmp_path, monkeypatch):
    assert files.check_output_dir(tmp_path / "new" / "deeper", "--out") == tmp_path / "new" / \
        "deeper"
    assert files.check_output_dir(tmp_path, "--out") == tmp_path
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"^--out: .*f exists and is not a directory"):
        files.check_output_dir(tmp_path / "f", "--out")
    asked = []

    def no_write(path, mode):  # the tests run as root, who may write anywhere
        asked.append((Path(path), mode))
        return False

    monkeypatch.setattr(os, "access", no_write)
    with pytest.raises(ValueError, match=r"^--out: .* is not writable"):
        files.check_output_dir(tmp_path / "new" / "deeper", "--out")
    assert asked == [(tmp_path, os.W_OK)]  # the nearest existing ancestor


def test_check_output_file(tmp_path, monkeypatch):
    assert files.check_output_file(tmp_path / "a.pt", "--out") == tmp_path / "a.pt"
    with pytest.raises(ValueError, match=r"^--out: .* is a directory, expected a file name"):
        files.check_output_file(tmp_path, "--out")
    with pytest.raises(ValueError, match=r"^--out: directory .*missing does not exist"):
        files.check_output_file(tmp_path / "missing" / "a.pt", "--out")
    asked = []

    def no_write(path, mode):
        asked.append((Path(path), mode))
        return False

    monkeypatch.setattr(os, "access", no_write)
    with pytest.raises(ValueError, match=r"^--out: .* is not writable"):
        files.check_output_file(tmp_path / "a.pt", "--out")
    assert asked == [(tmp_path, os.W_OK)]
