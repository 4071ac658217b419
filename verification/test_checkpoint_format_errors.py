"""ebmref.checkpoint's file format and every refusal of ``load_checkpoint`` with its whole
message: unreadable files (empty, garbage, pickled code), a torch file that is not an ebmref
checkpoint, an unknown version, missing entries, missing checksums and a tensor with no stored
digest; version-1 files (no checksums) still load; the tensor paths of the checksums (nested
dicts, lists, mixed key types); ``save_checkpoint`` makes parent directories; and the class
message of ``check_energy``."""

from __future__ import annotations

import hashlib
import pickle
import re

import pytest
import torch

from ebmref.checkpoint import (
    CheckpointError,
    check_energy,
    checksums,
    load_checkpoint,
    save_checkpoint,
)
from ebmref.energy import Gaussian

BASE = {"step": 3, "model": {"w": torch.tensor([1.0, 2.0])}, "optimizer": {}, "buffer": None,
        "rng": {}, "config": {"run": {"seed": 1}}}


def _digest(t):
    data = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return hashlib.sha256(f"{t.dtype}:{tuple(t.shape)}:".encode() + data).hexdigest()


class _Pickled:
    """An object whose unpickling would run this module's code."""


def _message(path, text):
    return rf"^checkpoint {re.escape(str(path))}: {text}$"


def test_saved_file_is_tagged_versioned_and_checksummed(tmp_path):
    """save_checkpoint writes (making parent directories) the state plus format tag, version
    2 and one SHA-256 digest per tensor path; load_checkpoint gives the state back."""
    path = save_checkpoint(BASE, tmp_path / "a" / "b" / "c.pt")
    assert path == tmp_path / "a" / "b" / "c.pt"
    raw = torch.load(path, weights_only=True)
    assert (raw["format"], raw["version"]) == ("ebmref-checkpoint", 2)
    assert raw["checksums"] == {"model/w": _digest(BASE["model"]["w"])}
    loaded = load_checkpoint(path)
    assert "checksums" not in loaded and loaded["step"] == 3
    assert torch.equal(loaded["model"]["w"], BASE["model"]["w"])


def test_checksum_paths_of_nested_containers():
    """Paths join dict keys and list/tuple indices with '/'; int and str keys may be mixed
    (an optimizer's state is keyed by ints)."""
    t = torch.zeros(1)
    got = checksums({"opt": {"state": {0: {"m": t}}, 1: t}, "rng": [t, (t, t)], "x": t})
    assert sorted(got) == ["opt/1", "opt/state/0/m", "rng/0", "rng/1/0", "rng/1/1", "x"]
    assert set(got.values()) == {_digest(t)}


def test_unreadable_files_are_checkpoint_errors(tmp_path):
    """An empty file, bytes that are not a torch file, and a file whose loading would run
    pickled code: CheckpointError naming the file, the exception class and its first line."""
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=_message(empty, r"cannot be read as a torch "
                       r"checkpoint \(corrupted, truncated or not a torch file\): EOFError: ")):
        load_checkpoint(empty)
    for name, write in (("garbage.pt", lambda p: p.write_bytes(b"\x00not a torch file")),
                        ("code.pt", lambda p: torch.save({**BASE, "format": "ebmref-checkpoint",
                                                          "version": 1, "x": _Pickled()}, p))):
        path = tmp_path / name
        write(path)
        try:
            torch.load(path, weights_only=True)
        except (pickle.UnpicklingError, RuntimeError) as exc:  # what torch says
            first = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert str(info.value) == (f"checkpoint {path}: cannot be read as a torch checkpoint "
                                   f"(corrupted, truncated or not a torch file): {first}")
    assert first.startswith("UnpicklingError: ")  # pickled code is refused, not run


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"^checkpoint: no file at "
                       rf"{re.escape(str(tmp_path / 'none.pt'))}$"):
        load_checkpoint(tmp_path / "none.pt")


@pytest.mark.parametrize("payload,text", [
    ({"step": 1}, r"not an ebmref checkpoint \(format tag None, expected 'ebmref-checkpoint'\)"),
    ([1, 2], r"not an ebmref checkpoint \(format tag None, expected 'ebmref-checkpoint'\)"),
    ({"format": "other"}, (r"not an ebmref checkpoint \(format tag 'other', expected "
                          r"'ebmref-checkpoint'\)")),
    ({"format": "ebmref-checkpoint", "version": 3}, (r"version 3 is not supported \(this ebmref "
                                                    r"reads versions \(1, 2\)\)")),
    ({"format": "ebmref-checkpoint"}, (r"version None is not supported \(this ebmref reads "
                                      r"versions \(1, 2\)\)")),
    ({"format": "ebmref-checkpoint", "version": 2, "step": 0, "model": {}, "optimizer": {},
      "buffer": None}, r"missing entries \['rng', 'config'\]"),
    ({**BASE, "format": "ebmref-checkpoint", "version": 2}, r"the checksums are missing"),
])
def test_files_that_are_not_usable_checkpoints(tmp_path, payload, text):
    """Each refusal of a readable torch file names the file and what is wrong."""
    path = tmp_path / "c.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=_message(path, text)):
        load_checkpoint(path)


def test_a_tensor_without_stored_digest_is_corruption(tmp_path):
    """A tensor the checksums do not list (or a listed one that is gone) is a mismatch whose
    missing side reads None."""
    path = save_checkpoint(BASE, tmp_path / "c.pt")
    raw = torch.load(path, weights_only=True)
    digest = raw["checksums"].pop("model/w")
    raw["checksums"]["model/gone"] = "abcdef0123456789"
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=_message(path, r"tensor 'model/gone' does not "
                       r"match its checksum \(stored abcdef012345…, computed None…\): the file "
                       r"is corrupted")):
        load_checkpoint(path)
    del raw["checksums"]["model/gone"]
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=_message(path, rf"tensor 'model/w' does not match "
                       rf"its checksum \(stored None…, computed {digest[:12]}…\): the file is "
                       r"corrupted")):
        load_checkpoint(path)


def test_version_one_files_load_without_checksums(tmp_path):
    """Version 1 had no checksums (nor an energy record): such a file loads as it is."""
    path = tmp_path / "v1.pt"
    torch.save({**BASE, "format": "ebmref-checkpoint", "version": 1}, path)
    assert load_checkpoint(path)["step"] == 3
    check_energy(None, Gaussian(torch.zeros(2), torch.eye(2)), path)


def test_check_energy_names_both_classes():
    """A checkpoint of another energy class is refused naming both classes."""
    energy = Gaussian(torch.zeros(2), torch.eye(2))
    saved = {"class": "MLPEnergy", "spec": None, "shapes": {}}
    with pytest.raises(CheckpointError, match=r"^checkpoint c\.pt: holds a MLPEnergy, not a "
                       r"Gaussian$"):
        check_energy(saved, energy, "c.pt")


def test_map_location_is_handed_to_torch_load(tmp_path):
    """load_checkpoint places the tensors with ``map_location`` as torch.load does; torch also
    takes a function (storage, location) → storage, which sees every stored tensor's device."""
    path = save_checkpoint(BASE, tmp_path / "c.pt")
    seen = []

    def place(storage, location):
        seen.append(location)
        return storage

    assert load_checkpoint(path, map_location=place)["step"] == 3
    assert seen == ["cpu"]


def test_torch_load_is_asked_for_weights_only_explicitly(tmp_path, monkeypatch):
    """load_checkpoint passes ``weights_only=True`` itself rather than relying on torch's
    default, which was False before torch 2.6 (pyproject allows older torch): a pickled
    checkpoint must never run code, whichever torch is installed."""
    path = save_checkpoint(BASE, tmp_path / "c.pt")
    calls, real_load = [], torch.load

    def load(*args, **kwargs):
        calls.append(kwargs.get("weights_only", "not given"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    assert load_checkpoint(path)["step"] == 3
    assert calls == [True]
