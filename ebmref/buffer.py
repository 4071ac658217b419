"""The replay buffer and its chain-initialisation policies (paper §5.1.1, §6.1).

Three policies decide where the sampler's chains start (``init``):

* ``"noise"`` — Du & Mordatch (2019): the buffer is filled with noise; at every read each start
  is replaced by fresh noise with probability ``reinit_prob`` (5 % in IGEBM, 0.1 % in Du et al.
  2020). Chains then run "approximately like one very long chain" from noise: the objective is
  maximum likelihood (NLL), not CD (§5.1.1; C18).
* ``"data"`` — persistent CD (PCD): the buffer is filled with data points, then only chain ends
  are written back; no re-initialisation.
* ``"true_cd"`` — the paper's "true CD" (§6.1): like ``"data"``, and at every read a fraction
  ``data_fraction`` (10 %) of the starts is re-picked from the dataset, so chains keep starting
  near the data.

The buffer is filled to ``capacity`` on the first :meth:`ReplayBuffer.sample` (noise, or picks
from ``data``). Chain ends go back with :meth:`ReplayBuffer.push`: ``"fifo"`` overwrites the
oldest entries, ``"reservoir"`` keeps a uniform sample of everything ever pushed (reservoir
sampling, Du et al. 2020). Entries are stored as floating-point tensors on ``device`` (never as
uint8: a uint8 buffer, as in Du et al. (2020)'s code, wraps MNIST values around).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ebmref.validation import check_choice, check_int_range, check_probability

NoiseFn = Callable[[int, torch.Generator | None], Tensor]

INIT_POLICIES = ("noise", "data", "true_cd")
REPLACEMENTS = ("fifo", "reservoir")


class UniformNoise:
    """n draws of U(box) with box [low, high]^event_shape (images: [0, 1]); a ``NoiseFn``."""

    def __init__(self, event_shape: tuple[int, ...], low: float = 0.0, high: float = 1.0,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        for name, v in (("low", low), ("high", high)):
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)):
                raise ValueError(f"{name}: must be a finite number, got {v!r}")
        if not low < high:
            raise ValueError(f"low, high: need low < high, got low={low!r}, high={high!r}")
        self.event_shape = tuple(event_shape)
        self.low, self.high, self.dtype, self.device = float(low), float(high), dtype, device

    def __call__(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        u = torch.rand((n, *self.event_shape), generator=generator, dtype=self.dtype,
                       device=self.device)
        return self.low + (self.high - self.low) * u

    def __repr__(self) -> str:
        return f"UniformNoise(event_shape={self.event_shape}, low={self.low}, high={self.high})"


def _pick(data: Tensor, n: int, generator: torch.Generator | None, device) -> Tensor:
    idx = torch.randint(0, data.shape[0], (n,), generator=generator, device=data.device)
    return data[idx].to(device)


class ReplayBuffer:
    """A fixed-capacity store of chain states with an initialisation policy (module docstring).

    Args:
        capacity: number of stored states (IGEBM, Du et al.: 10 000).
        init: ``"noise"``, ``"data"`` or ``"true_cd"``.
        reinit_prob: per-read probability of restarting a chain from noise (``"noise"`` only).
        data_fraction: fraction of starts re-picked from data at every read (``"true_cd"`` only).
        replacement: ``"fifo"`` or ``"reservoir"``.
        noise_fn: ``(n, generator) → (n, *event)`` noise draws (e.g. :class:`UniformNoise`);
            required for ``init="noise"``.
        device: where states are stored.
        seed: seeds the buffer's own generator, used by reservoir pushes when no generator is
            passed to :meth:`push` (saved in :meth:`state_dict`).
        n_members: G > 1 keeps G independent buffers of ``capacity`` states each, one per
            member of an ensemble (:class:`ebmref.ensemble.EnsembleEnergy`): every read, push
            and peek of G·n states is G consecutive blocks of n, block g from and to member g's
            buffer only.
    """

    def __init__(self, capacity: int, init: str = "noise", reinit_prob: float = 0.05,
                 data_fraction: float = 0.1, replacement: str = "fifo",
                 noise_fn: NoiseFn | None = None, device: str | torch.device = "cpu",
                 seed: int = 0, n_members: int = 1):
        check_int_range(capacity, "capacity", 1)
        check_int_range(n_members, "n_members", 1)
        check_choice(init, "init", INIT_POLICIES)
        check_probability(reinit_prob, "reinit_prob")
        check_probability(data_fraction, "data_fraction")
        check_choice(replacement, "replacement", REPLACEMENTS)
        if init == "noise" and noise_fn is None:
            raise ValueError("noise_fn: required when init='noise', got None")
        self.capacity = capacity
        self.n_members = n_members
        self.init = init
        self.reinit_prob = float(reinit_prob)
        self.data_fraction = float(data_fraction)
        self.replacement = replacement
        self.noise_fn = noise_fn
        self.device = torch.device(device)
        self.storage: Tensor | None = None
        self.ptr = 0  # next FIFO slot (of every member's buffer)
        self.n_seen = 0  # states ever written per member (reservoir sampling's counter)
        self._gen = torch.Generator(device=self.device).manual_seed(seed)

    def __len__(self) -> int:
        return 0 if self.storage is None else self.storage.shape[0]

    # -- filling and reading -------------------------------------------------------------
    def _fill(self, generator: torch.Generator | None, data: Tensor | None) -> None:
        total = self.capacity * self.n_members
        if self.init == "noise":
            x = self.noise_fn(total, generator)
        else:
            if data is None:
                raise ValueError(f"data: required to fill a buffer with init={self.init!r}")
            x = _pick(data, total, generator, self.device)
        self.storage = x.detach().to(self.device).clone()
        self.n_seen = self.capacity
        self.ptr = 0

    def _per_member(self, n: int, name: str) -> int:
        if n % self.n_members:
            raise ValueError(f"{name}: {n} states do not split into n_members="
                             f"{self.n_members} equal blocks")
        return n // self.n_members

    def _slots(self, idx: Tensor) -> Tensor:
        """Member-local indices (G·n,) → rows of the storage (member g's block for block g)."""
        if self.n_members == 1:
            return idx
        per = idx.shape[0] // self.n_members
        offsets = torch.arange(self.n_members, device=idx.device).repeat_interleave(per)
        return idx + offsets * self.capacity

    def sample(self, batch: int, generator: torch.Generator | None = None,
               data: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Chain starts ``x`` (batch, *event) and the buffer slots ``idx`` they came from.

        Applies the policy: noise restarts with ``reinit_prob`` (``"noise"``), data re-picks with
        ``data_fraction`` (``"true_cd"``). ``data`` is a tensor of data points to pick from
        (the dataset or the current minibatch); needed by the data policies.
        Random draws have a fixed count per call (no data-dependent branching), so a run is
        reproducible from the generator state alone.
        """
        check_int_range(batch, "batch", 1)
        self._per_member(batch, "batch")
        if self.storage is None:
            self._fill(generator, data)
        idx = self._slots(torch.randint(0, self.capacity, (batch,), generator=generator,
                                        device=self.device))
        x = self.storage[idx].clone()
        if self.init == "noise" and self.reinit_prob > 0:
            x = self._replace(x, self.reinit_prob, self.noise_fn(batch, generator), generator)
        elif self.init == "true_cd" and self.data_fraction > 0:
            if data is None:
                raise ValueError("data: required by init='true_cd' at every read, got None")
            x = self._replace(x, self.data_fraction, _pick(data, batch, generator, self.device),
                              generator)
        return x, idx

    def _replace(self, x: Tensor, prob: float, fresh: Tensor, generator) -> Tensor:
        u = torch.rand(x.shape[0], generator=generator, device=self.device)
        mask = (u < prob).view(-1, *([1] * (x.ndim - 1)))
        return torch.where(mask, fresh.to(dtype=x.dtype, device=x.device), x)

    def peek(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n stored states drawn uniformly, without the policy (e.g. the entropy reference set
        of Du et al. 2020, §5.4.3)."""
        if self.storage is None:
            raise ValueError("peek: the buffer is empty; call sample() first")
        self._per_member(n, "n")
        idx = self._slots(torch.randint(0, self.capacity, (n,), generator=generator,
                                        device=self.device))
        return self.storage[idx].clone()

    def push(self, x: Tensor, generator: torch.Generator | None = None, *,
             check_finite: bool = True) -> None:
        """Write chain ends back: FIFO overwrites the oldest slots; reservoir keeps the i-th
        state ever written with probability capacity / i (uniform over history). Non-finite
        states raise ValueError unless ``check_finite=False``."""
        if self.storage is None:
            raise ValueError("push: the buffer is empty; call sample() first")
        if check_finite and not bool(torch.isfinite(x).all()):
            raise ValueError("x: chain ends to push must be finite (no NaN or inf)")
        x = x.detach().to(device=self.device, dtype=self.storage.dtype)
        if tuple(x.shape[1:]) != tuple(self.storage.shape[1:]):
            raise ValueError(f"x: expected shape (n, {tuple(self.storage.shape[1:])}), "
                             f"got {tuple(x.shape)}")
        n = self._per_member(x.shape[0], "x.shape[0]")
        check_int_range(n, "x.shape[0] per member", 1, self.capacity)
        if self.replacement == "fifo":
            slots = (self.ptr + torch.arange(n, device=self.device)) % self.capacity
            self.storage[self._slots(slots.repeat(self.n_members))] = x
            self.ptr = (self.ptr + n) % self.capacity
        else:
            g = generator if generator is not None else self._gen
            # The i-th state ever written (count c) goes to slot j ~ U{0..c−1} if j < capacity.
            counts = self._reservoir_counts(n)
            u = torch.rand(x.shape[0], generator=g, device=self.device, dtype=torch.float64)
            j = (u * counts.repeat(self.n_members)).long().tolist()  # one host sync per push
            winner = {}
            for i, slot in enumerate(j):  # a later state wins the same slot
                if slot < self.capacity:
                    winner[slot + (i // n) * self.capacity] = i
            if winner:
                slots = torch.tensor(list(winner), device=self.device)
                rows = torch.tensor(list(winner.values()), device=self.device)
                self.storage[slots] = x[rows]
        self.n_seen += n

    def _reservoir_counts(self, n: int) -> Tensor:
        """The counts c = n_seen + 1, …, n_seen + n of the next n states ever written; the state
        with count c is kept with probability capacity / c."""
        return self.n_seen + 1 + torch.arange(n, device=self.device, dtype=torch.float64)

    # -- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "storage": None if self.storage is None else self.storage.clone(),
            "ptr": self.ptr,
            "n_seen": self.n_seen,
            "capacity": self.capacity,
            "n_members": self.n_members,
            "init": self.init,
            "replacement": self.replacement,
            "generator": self._gen.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        for key, mine in (("capacity", self.capacity), ("init", self.init),
                          ("replacement", self.replacement), ("n_members", self.n_members)):
            if state.get(key, 1 if key == "n_members" else None) != mine:
                raise ValueError(f"buffer state: {key} is {state.get(key)!r} in the saved state "
                                 f"but {mine!r} in this buffer")
        storage = state["storage"]
        rows = self.capacity * self.n_members
        if storage is not None and (not isinstance(storage, Tensor) or storage.ndim < 2
                                    or storage.shape[0] != rows):
            raise ValueError(f"buffer state: storage must hold {rows} states (N, ...), got "
                             f"{getattr(storage, 'shape', type(storage).__name__)}")
        self.storage = None if storage is None else storage.to(self.device).clone()
        self.ptr = int(state["ptr"])
        self.n_seen = int(state["n_seen"])
        self._gen.set_state(state["generator"].cpu())  # map_location may have moved it
