"""Argument checks shared by the library: each raises ``ValueError`` naming the argument,
the value it got and the allowed range (DESIGN.md, conventions)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def check_positive(value: float, name: str) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")


def check_nonnegative(value: float, name: str) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")


def check_probability(value: float, name: str) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name}: must lie in [0, 1], got {value!r}")


def check_int_range(value: int, name: str, low: int, high: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        upper = "∞" if high is None else str(high)
        raise ValueError(f"{name}: must be an integer in [{low}, {upper}], got {value!r}")


def check_choice(value: str, name: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: must be one of {allowed}, got {value!r}")


def check_finite(t: Tensor, name: str) -> None:
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: must be finite (no NaN or inf), got non-finite entries")


def check_shape(t: Tensor, shape: tuple[int, ...], name: str) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(t.shape)}")


def check_positive_definite(m: Tensor, name: str) -> None:
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"{name}: expected a square matrix, got shape {tuple(m.shape)}")
    if not torch.allclose(m, m.T, atol=1e-10 * max(1.0, float(m.abs().max()))):
        raise ValueError(f"{name}: must be symmetric")
    eig_min = float(torch.linalg.eigvalsh(m).min())
    if eig_min <= 0:
        raise ValueError(f"{name}: must be positive definite, smallest eigenvalue {eig_min:.3g}")
