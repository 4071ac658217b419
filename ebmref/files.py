"""Every file the project writes goes through :func:`atomic_write`: the bytes go to a temporary
file in the target's directory, are flushed and fsync'ed, and the temporary file is renamed over
the target (``os.replace``, atomic on POSIX), then the directory is fsync'ed. A crash at any
moment leaves either the old file or the new one, never a torn one; the temporary file of a
crashed writer (``.<name>.<random>.tmp``) is removed by :func:`remove_stale_temps` on the next
start. Readers of append-only logs (:func:`read_jsonl`) skip a torn last line with a warning.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

TEMP_SUFFIX = ".tmp"
_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: mkstemp creates 0600 files, written files get the usual mode


class WriteError(OSError):
    """A file could not be written; the message names the path and the cause."""

    def __str__(self) -> str:
        # OSError's own str prefixes "[Errno None] " when the cause had no errno (a writer's
        # own exception); the message already says everything.
        return str(self.strerror)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` atomically with ``write(binary file)``; returns the path.

    Raises :class:`WriteError` naming the path and the cause (disk full, permission denied,
    a missing directory, or the writer's own error) — the old file, if any, is untouched."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as err:
        raise WriteError(err.errno, f"{path}: cannot write ({err.strerror or err})") from err
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        cause = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        first = cause.splitlines()[0] if cause else type(err).__name__
        raise WriteError(getattr(err, "errno", None), f"{path}: cannot write ({first})") from err
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (no-op where directories cannot be fsync'ed)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Strict JSON (``NaN`` and ``Infinity`` are not JSON: they raise ValueError here, so write
    ``None`` with a reason beside it instead)."""
    text = json.dumps(obj, indent=indent, allow_nan=False, default=str)
    return atomic_write_text(path, text + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda f: torch.save(obj, f))


def remove_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporary files a crashed :func:`atomic_write` left in ``directory`` (call it
    only while no writer is active there, e.g. holding the run's lock)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = [p for p in directory.iterdir()
             if p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX) and p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines log; a torn last line (a writer killed mid-line) is skipped
    with a warning, a bad line elsewhere raises ValueError naming the file and line."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if i == len(lines) - 1:
                warnings.warn(f"{path}: skipping a torn last line ({err.msg})", stacklevel=2)
                break
            raise ValueError(f"{path}: line {i + 1} is not JSON ({err.msg})") from None
    return records


def check_output_dir(path: str | os.PathLike, name: str) -> Path:
    """An output directory that can be created or written: not an existing file, its nearest
    existing ancestor writable. Raises ValueError naming ``name`` (the option)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name}: {path} exists and is not a directory")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise ValueError(f"{name}: {parent} is not writable")
    return path


def check_output_file(path: str | os.PathLike, name: str) -> Path:
    """A file that can be written: not a directory, in a directory that exists and is
    writable. Raises ValueError naming ``name``."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{name}: {path} is a directory, expected a file name")
    if not path.parent.is_dir():
        raise ValueError(f"{name}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise ValueError(f"{name}: {path.parent} is not writable")
    return path

