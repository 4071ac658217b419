"""The data minibatches x⁺ of a training run (paper §3: the positive phase's samples)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


class DataSource:
    """Minibatches x⁺: random rows of a tensor (with the run's generator, reproducible), or the
    items of an iterable (restarted when exhausted; ``(x, y)`` pairs keep x)."""

    def __init__(self, data: Tensor | Iterable, batch_size: int, device, dtype):
        self.batch_size, self.device, self.dtype = batch_size, device, dtype
        self.tensor: Tensor | None = None
        self.iterable, self._it = None, None
        if isinstance(data, Tensor):
            if data.ndim < 2 or data.shape[0] == 0:
                raise ValueError(f"data: expected a tensor (N, *event) with N >= 1, got shape "
                                 f"{tuple(data.shape)}")
            if not torch.isfinite(data).all():
                raise ValueError("data: must be finite (no NaN or inf)")
            self.tensor = data.to(device=device, dtype=dtype)
        elif isinstance(data, Iterable):
            self.iterable = data
        else:
            raise ValueError(f"data: expected a Tensor or an iterable of batches, "
                             f"got {type(data)}")

    def next(self, generator: torch.Generator) -> Tensor:
        if self.tensor is not None:
            idx = torch.randint(0, self.tensor.shape[0], (self.batch_size,), generator=generator,
                                device=self.device)
            return self.tensor[idx]
        if self._it is None:
            self._it = iter(self.iterable)
        try:
            batch = next(self._it)
        except StopIteration:
            self._it = iter(self.iterable)
            batch = next(self._it)
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        return batch.to(device=self.device, dtype=self.dtype)
