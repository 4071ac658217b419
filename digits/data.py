"""The 8×8 digits of scikit-learn (``sklearn.datasets.load_digits``: 1,797 real handwritten
digits, 16 grey levels, shipped with scikit-learn, no download) with a fixed split.

Split: stratified and seeded. Per class, the digits are permuted with
``numpy.random.default_rng(seed)`` (default seed 0) and the first 60 % (rounded) go to the
training split, the next 20 % to validation, the rest to test. :func:`split_record` gives the
sizes, per-class counts and a SHA-256 of the index lists, which every result records.

Images are v/16 in [0, 1] with shape (N, 1, 8, 8) (clean grey levels v ∈ {0, …, 16}).

The density the energies model (paper §1, made measurable): the digits smoothed by Gaussian
noise, x = v/16 + σₙ ξ, ξ ~ N(0, I₆₄), σₙ = :data:`NOISE_STD`. Uniform dequantisation would make
the target piecewise constant with jumps at every grey-level edge, a landscape no Langevin step
size resolves (a model trained on it rejected every MALA proposal at the training step); the
smoothed density is continuous, so an exact sampler (MALA) and annealed importance sampling
work on it, and its negative log-likelihood in nats is well defined. Training draws fresh noise
for every batch; validation and test NLLs use fixed noise draws (:func:`noisy`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ebmref.validation import check_choice, check_int_range, check_nonnegative

SPLITS = ("train", "val", "test")
FRACTIONS = (0.6, 0.2, 0.2)
NOISE_STD = 0.1
IMAGE_SIZE = 8
DIM = IMAGE_SIZE * IMAGE_SIZE
LEVELS = 16


@dataclass
class DigitsData:
    """One split: clean images (N, 1, 8, 8) float32 in [0, 1], labels (N,) int64, and the
    indices into ``load_digits()`` they came from."""

    images: Tensor
    labels: Tensor
    indices: Tensor
    source: str

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def flat(self) -> Tensor:
        """(N, 64) clean pixels."""
        return self.images.flatten(1)


@functools.lru_cache(maxsize=1)
def _arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64)


def split_indices(seed: int = 0) -> dict[str, np.ndarray]:
    """{split: sorted indices into load_digits()} — stratified, seeded (module docstring)."""
    check_int_range(seed, "seed", 0)
    _, y = _arrays()
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(y == digit))
        n_train = round(FRACTIONS[0] * idx.size)
        n_val = round(FRACTIONS[1] * idx.size)
        out["train"].append(idx[:n_train])
        out["val"].append(idx[n_train:n_train + n_val])
        out["test"].append(idx[n_train + n_val:])
    return {s: np.sort(np.concatenate(v)) for s, v in out.items()}


def load_split(split: str, seed: int = 0) -> DigitsData:
    """The ``split`` of the fixed stratified split with ``seed``."""
    check_choice(split, "split", SPLITS)
    x, y = _arrays()
    idx = split_indices(seed)[split]
    images = torch.from_numpy(x[idx] / LEVELS).view(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
    return DigitsData(images.contiguous(), torch.from_numpy(y[idx]), torch.from_numpy(idx),
                      f"sklearn-digits ({split}, {idx.size}, split seed {seed})")


def split_record(seed: int = 0) -> dict:
    """Sizes, per-class counts and a SHA-256 of the index lists (what results record)."""
    _, y = _arrays()
    parts = split_indices(seed)
    digest = hashlib.sha256(json.dumps({s: v.tolist() for s, v in parts.items()},
                                       sort_keys=True).encode()).hexdigest()
    return {"seed": seed, "fractions": list(FRACTIONS), "sha256": digest,
            "sizes": {s: int(v.size) for s, v in parts.items()},
            "per_class": {s: np.bincount(y[v], minlength=10).tolist() for s, v in parts.items()}}


def noisy(clean: Tensor, generator: torch.Generator, std: float = NOISE_STD) -> Tensor:
    """x = clean + std·ξ (the smoothed digits the energies model), same shape as ``clean``."""
    check_nonnegative(std, "std")
    return clean + std * torch.randn(clean.shape, generator=generator, dtype=clean.dtype)


def fixed_noisy(clean: Tensor, seed: int, copies: int = 1, std: float = NOISE_STD) -> Tensor:
    """``copies`` fixed noisy versions of each row of ``clean`` (copies·N rows, copy-major):
    the evaluation sets of validation and test NLLs."""
    check_int_range(copies, "copies", 1)
    g = torch.Generator().manual_seed(seed)
    return torch.cat([noisy(clean, g, std) for _ in range(copies)])
