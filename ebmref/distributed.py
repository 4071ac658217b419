"""Multi-process data-parallel training with ``torch.distributed``.

Launch any training entry point with ``torchrun --nproc_per_node=N -m mnist.train ...``:
torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT, and
:func:`init_from_env` (called by ``ebmref.training.train``) joins the process group — NCCL when
CUDA is available, gloo on CPU — and pins rank r to GPU ``LOCAL_RANK``.

The scheme is synchronous data parallelism, as in Du et al. (2020)'s ``mp.spawn`` code:

* the energy is wrapped in ``DistributedDataParallel`` (:func:`data_parallel`), whose
  constructor broadcasts rank 0's parameters and buffers (so θ is identical on every rank, also
  after a resume) and whose backward hooks average the weight gradients over ranks bucket by
  bucket while backward runs, so every rank applies the same Adam step;
* only the loss forwards E(x⁺), E(x⁻) go through the DDP wrapper; the sampler and the KL loss call
  the bare module: they need ∇ₓE (``torch.autograd.grad`` w.r.t. x, which never runs the
  parameters' gradient-accumulation hooks, so DDP's reducer is not involved), and going through
  the wrapper would re-broadcast the buffers at each of the dozens of sampler calls. Weight
  gradients that reach θ through the differentiated sampler steps (§5.4.2) land in the same
  accumulation hooks and are averaged with the rest;
* rank r draws its own minibatch x⁺ and runs its own chains from its own replay-buffer shard
  of ``shard_sizes(buffer_size, W)[r]`` states, with its own generator seeded by
  :func:`rank_seed` (rank 0 keeps the run's seed, so W = 1 is the single-process run);
* divergence statistics are reduced over ranks (:func:`all_reduce_stats`) so that all ranks
  stop at the same step;
* only rank 0 writes metrics and checkpoints; a checkpoint holds every rank's buffer shard and
  generator state (:func:`gather_buffer_states`) plus the merged buffer, so it resumes
  bit-for-bit at the same world size and, resharded (:func:`buffer_state_for_rank`), at any
  other world size, including a plain single-process run. The checkpoint stores the bare
  module's ``state_dict`` (no ``module.`` prefixes).
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ebmref.validation import check_choice, check_int_range

BACKENDS = ("gloo", "nccl")
_SEED_STRIDE = 0x9E3779B1  # odd, so rank seeds never collide modulo 2**63


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size``; ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """True when a process group with more than one rank is active."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, total: int, name: str = "total") -> int:
        """This rank's share of ``total`` items (batch, buffer capacity)."""
        return shard_sizes(total, self.world_size, name)[self.rank]


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}: expected an integer in the environment, got {raw!r}") from None


def current() -> DistContext:
    """The context of the active process group, or a single-process context."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(),
                           _env_int("LOCAL_RANK", dist.get_rank()), dist.get_backend())
    return DistContext()


def init_from_env(backend: str | None = None) -> DistContext:
    """Join the process group described by torchrun's environment variables.

    Idempotent: returns the active context if a group exists already. Without WORLD_SIZE (or
    with WORLD_SIZE=1) nothing is initialised and a single-process context comes back.
    ``backend=None`` picks NCCL when CUDA is available, gloo otherwise.
    """
    if dist.is_available() and dist.is_initialized():
        return current()
    world = _env_int("WORLD_SIZE", 1)
    check_int_range(world, "WORLD_SIZE", 1)
    if world == 1:
        return DistContext()
    rank = _env_int("RANK", -1)
    check_int_range(rank, "RANK", 0, world - 1)
    local_rank = _env_int("LOCAL_RANK", rank)
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(var):
            raise ValueError(f"{var}: must be set when WORLD_SIZE={world} (use torchrun)")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    check_choice(backend, "backend", BACKENDS)
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    atexit.register(shutdown)  # we opened the group: close it when the process ends
    return DistContext(rank, world, local_rank, backend)


def shutdown() -> None:
    """Leave the process group (no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def is_main() -> bool:
    """True on rank 0 or without a process group: the process that writes files."""
    return current().is_main


def shard_sizes(total: int, world_size: int, name: str = "total") -> list[int]:
    """Split ``total`` into ``world_size`` near-equal parts (the first ones one larger)."""
    check_int_range(world_size, "world_size", 1)
    check_int_range(total, name, world_size)
    base, extra = divmod(total, world_size)
    return [base + (1 if r < extra else 0) for r in range(world_size)]


def rank_seed(seed: int, rank: int) -> int:
    """Seed of rank r's generator: ``seed`` itself on rank 0, distinct streams elsewhere."""
    check_int_range(rank, "rank", 0)
    return (int(seed) + rank * _SEED_STRIDE) % (2**63)


def data_parallel(module: nn.Module) -> nn.Module:
    """``module`` wrapped in ``DistributedDataParallel`` under an active process group (its
    constructor broadcasts rank 0's parameters and buffers); ``module`` itself otherwise."""
    ctx = current()
    if not ctx.enabled:
        return module
    device_ids = [ctx.local_rank] if ctx.backend == "nccl" else None
    return DistributedDataParallel(module, device_ids=device_ids)


def all_reduce_stats(stats: Tensor, maxima: tuple[int, ...] = (),
                     minima: tuple[int, ...] = ()) -> Tensor:
    """Reduce a vector of per-rank statistics: entries in ``maxima`` / ``minima`` by max / min
    (a NaN anywhere becomes +inf / −inf, so no rank misses a divergence), the rest by mean."""
    ctx = current()
    if not ctx.enabled:
        return stats
    out = stats.clone()  # a NaN on any rank makes the mean NaN: still caught
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    out /= ctx.world_size
    if maxima:
        hi = torch.nan_to_num(stats[list(maxima)], nan=float("inf"))
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        out[list(maxima)] = hi
    if minima:
        lo = torch.nan_to_num(-stats[list(minima)], nan=float("inf"))
        dist.all_reduce(lo, op=dist.ReduceOp.MAX)
        out[list(minima)] = -lo
    return out


# -- checkpoints: buffer shards and generator states --------------------------------------------

def _to_cpu(obj):
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def gather_objects(obj) -> list:
    """Every rank's ``obj`` (tensors moved to CPU), in rank order, on every rank."""
    ctx = current()
    obj = _to_cpu(obj)
    if not ctx.enabled:
        return [obj]
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def merge_buffer_states(shards: list[dict | None]) -> dict | None:
    """One buffer state from per-rank shard states: storage concatenated in rank order,
    capacity and states-seen summed. FIFO order restarts at slot 0 (not bitwise)."""
    if any(s is None for s in shards):
        return None
    if len(shards) == 1:
        return shards[0]
    storages = [s["storage"] for s in shards]
    merged = dict(shards[0])
    merged["storage"] = None if any(t is None for t in storages) else torch.cat(storages)
    merged["capacity"] = sum(int(s["capacity"]) for s in shards)
    merged["n_seen"] = sum(int(s["n_seen"]) for s in shards)
    merged["ptr"] = 0
    return merged


def gather_buffer_states(state: dict | None) -> tuple[dict | None, list[dict | None]]:
    """(merged buffer state, per-rank shard states) from this rank's ``buffer.state_dict()``
    (a collective: call it on every rank)."""
    shards = gather_objects(state)
    return merge_buffer_states(shards), shards


def buffer_state_for_rank(merged: dict | None, shards: list[dict | None] | None,
                          ctx: DistContext, seed: int,
                          device: str | torch.device = "cpu") -> dict | None:
    """The buffer state rank ``ctx.rank`` resumes from: its own saved shard when the world size
    is unchanged, else its slice of the merged buffer (FIFO from slot 0, and the buffer's own
    generator, on ``device`` like the buffer, reseeded from (seed, rank))."""
    if merged is None:
        return None
    if shards is None:  # written by a single process: it is its own only shard
        shards = [merged]
    if len(shards) == ctx.world_size:
        return shards[ctx.rank]
    sizes = shard_sizes(int(merged["capacity"]), ctx.world_size, "buffer capacity")
    start = sum(sizes[:ctx.rank])
    part = dict(merged)
    if merged["storage"] is not None:
        part["storage"] = merged["storage"][start:start + sizes[ctx.rank]].clone()
    part["capacity"] = sizes[ctx.rank]
    part["n_seen"] = max(sizes[ctx.rank], int(merged["n_seen"]) * sizes[ctx.rank]
                         // int(merged["capacity"]))
    part["ptr"] = 0
    part["generator"] = torch.Generator(device=device).manual_seed(
        rank_seed(seed, ctx.rank)).get_state()
    return part


def generator_state_for_rank(states: list[Tensor] | None, fallback: Tensor, ctx: DistContext,
                             seed: int, step: int, device: torch.device) -> Tensor:
    """Rank r's saved generator state at an unchanged world size; otherwise rank 0 takes the
    checkpoint's main state ``fallback`` and the others a fresh stream from (seed, step, r)."""
    if states is None:  # written by a single process
        states = [fallback]
    if len(states) == ctx.world_size:
        return states[ctx.rank]
    if ctx.rank == 0:
        return fallback
    g = torch.Generator(device=device).manual_seed(rank_seed(seed + step, ctx.rank))
    return g.get_state()
