"""ebmref.files beyond test_files.py: the torn-line warning of ``read_jsonl`` points at its
caller (``stacklevel``) with the whole message, an ``OSError`` without ``strerror`` raised by a
writer is reported by its text, and ``remove_stale_temps`` tolerates a temporary file that
vanishes before it is removed (another cleaner got there first)."""

from __future__ import annotations

import errno
import json
import os
import sys
import warnings
from pathlib import Path

import pytest

from ebmref import files
from ebmref.files import WriteError


def test_torn_line_warning_names_the_file_and_points_at_the_caller(tmp_path, monkeypatch):
    """The warning's text names the log and json's reason; its location is the line that
    called read_jsonl (stacklevel=2), not ebmref/files.py. The caller's frame is taken from
    inside read_jsonl (its json.loads call), so the check also holds when a wrapper such as
    mutmut's trampoline stands between this test and read_jsonl."""
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "lo')
    try:
        json.loads('{"step": 2, "lo')
    except json.JSONDecodeError as err:
        reason = err.msg
    callers, real_loads = [], json.loads

    def loads(text, *args, **kwargs):
        caller = sys._getframe(2)  # 0: here, 1: read_jsonl, 2: whoever called read_jsonl
        callers.append((Path(caller.f_code.co_filename).resolve(), caller.f_lineno))
        return real_loads(text, *args, **kwargs)

    monkeypatch.setattr(json, "loads", loads)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = files.read_jsonl(path)
    monkeypatch.undo()
    assert records == [{"step": 1}]
    assert len(caught) == 1 and caught[0].category is UserWarning
    assert str(caught[0].message) == f"{path}: skipping a torn last line ({reason})"
    where = (Path(caught[0].filename).resolve(), caught[0].lineno)
    assert where == callers[-1] and where[0] != Path(files.__file__).resolve()


def test_read_jsonl_accepts_str_paths_and_a_missing_log(tmp_path):
    """A missing log has no records; a str path works like a Path."""
    assert files.read_jsonl(str(tmp_path / "none.jsonl")) == []
    (tmp_path / "m.jsonl").write_text('{"a": 1}\n\n\n{"a": 2}\n')
    assert files.read_jsonl(str(tmp_path / "m.jsonl")) == [{"a": 1}, {"a": 2}]


def test_an_oserror_without_strerror_is_reported_by_its_text(tmp_path):
    """A writer's OSError("...") (no errno, no strerror) keeps its own words and errno None."""
    def fail(f):
        raise OSError("quota exceeded for user\nsecond line")

    with pytest.raises(WriteError) as info:
        files.atomic_write(tmp_path / "q.bin", fail)
    assert info.value.strerror == f"{tmp_path / 'q.bin'}: cannot write (quota exceeded for user)"
    assert info.value.errno is None
    assert os.listdir(tmp_path) == []


def test_a_write_error_prints_as_its_message_with_or_without_errno(tmp_path):
    """str(WriteError) is the message naming the path and the cause, which is what a command
    prints: no "[Errno None]" (a writer's own error) nor "[Errno 2]" prefix."""
    def fail(f):
        raise RuntimeError("encoder broke")

    with pytest.raises(WriteError) as info:
        files.atomic_write(tmp_path / "a.bin", fail)
    assert str(info.value) == f"{tmp_path / 'a.bin'}: cannot write (encoder broke)"
    with pytest.raises(WriteError) as info:
        files.atomic_write(tmp_path / "missing" / "b.txt", lambda f: None)
    assert info.value.errno == errno.ENOENT
    assert str(info.value) == (f"{tmp_path / 'missing' / 'b.txt'}: cannot write "
                               "(No such file or directory)")


def test_remove_stale_temps_tolerates_a_temp_removed_meanwhile(tmp_path, monkeypatch):
    """A stale temp that disappears between the listing and its removal is not an error
    (best effort); it is still reported among the stale files."""
    stale = tmp_path / ".c.pt.x1.tmp"
    stale.write_text("crashed writer")
    real_is_file = Path.is_file

    def is_file_then_gone(self):
        result = real_is_file(self)
        if self == stale:
            os.unlink(self)  # another process cleans up at this moment
        return result

    monkeypatch.setattr(Path, "is_file", is_file_then_gone)
    assert files.remove_stale_temps(tmp_path) == [stale]
    assert os.listdir(tmp_path) == []
