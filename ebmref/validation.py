"""Argument checks shared by the library: each raises ``ValueError`` naming the argument,
the value it got and the allowed range (the library's convention for bad arguments)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _is_number(value) -> bool:
    """A real number: int or float, not a bool (True is an int in Python, not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_positive(value: float, name: str) -> None:
    if not (_is_number(value) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")


def check_nonnegative(value: float, name: str) -> None:
    if not (_is_number(value) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")


def check_probability(value: float, name: str) -> None:
    if not (_is_number(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name}: must lie in [0, 1], got {value!r}")


def check_int_range(value: int, name: str, low: int, high: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        upper = "∞" if high is None else str(high)
        raise ValueError(f"{name}: must be an integer in [{low}, {upper}], got {value!r}")


def check_bool(value: bool, name: str) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: must be a bool (true/false), got {value!r}")


def check_pair(value, name: str, *, increasing: bool = False, low: float | None = None,
               high_open: float | None = None) -> tuple[float, float]:
    """Two finite numbers (a tuple, list or other sequence), returned as a tuple of floats;
    ``increasing``: first < second; ``low`` ≤ each < ``high_open`` when given."""
    ok = (not isinstance(value, (str, bytes)) and hasattr(value, "__len__") and len(value) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                  for v in value))
    if ok:
        a, b = float(value[0]), float(value[1])
        ok = ((not increasing or a < b) and (low is None or min(a, b) >= low)
              and (high_open is None or max(a, b) < high_open))
    if not ok:
        rule = "low < high" if increasing else f"each in [{low}, {high_open})"
        raise ValueError(f"{name}: expected two numbers ({rule}), got {value!r}")
    return a, b


def check_choice(value: str, name: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: must be one of {allowed}, got {value!r}")


def check_finite(t: Tensor, name: str) -> None:
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: must be finite (no NaN or inf), got non-finite entries")


def check_points(t, name: str) -> Tensor:
    """A non-empty floating-point tensor (B, ...) of finite chain states or samples."""
    if not isinstance(t, Tensor) or t.ndim < 1 or t.shape[0] == 0:
        raise ValueError(f"{name}: expected a tensor of shape (B, ...) with B >= 1, got "
                         f"{type(t).__name__} of shape {getattr(t, 'shape', None)}")
    if not t.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")
    check_finite(t, name)
    return t


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
