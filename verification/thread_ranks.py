"""A process group of ``world`` ranks emulated by threads in one process, for in-process tests
of ebmref.distributed and ebmref.training: a fake torch.distributed whose collectives
(``all_reduce`` with SUM/MAX/MIN, ``all_gather_object``, ``barrier``) wait for every rank's
contribution, as real ones do, and a recorder in place of DistributedDataParallel (it counts the
forwards through it; no gradient averaging — test_distributed.py checks that with real
processes)."""

from __future__ import annotations

import copy
import threading

import torch
import torch.distributed as dist

from ebmref import distributed

_REDUCE = {dist.ReduceOp.SUM: lambda s: s.sum(0), dist.ReduceOp.MAX: lambda s: s.amax(0),
           dist.ReduceOp.MIN: lambda s: s.amin(0)}


class Recorder(torch.nn.Module):
    """Stands in for the DDP wrapper: calls the module, counting the forwards through it."""

    def __init__(self, module):
        super().__init__()
        self.module, self.calls = module, 0

    def forward(self, x):
        self.calls += 1
        return self.module(x)


class ThreadGroup:
    """``world`` ranks as threads; each collective waits for every rank's contribution."""

    def __init__(self, world: int = 2):
        self.world, self.local = world, threading.local()
        self.gate = threading.Barrier(world, timeout=120)
        self.slots: list = [None] * world
        self.ddp: list = []  # (rank, Recorder, device_ids) per DDP construction

    def rank(self) -> int:
        return self.local.rank

    def _exchange(self, obj) -> list:
        self.slots[self.rank()] = obj
        self.gate.wait()
        got = list(self.slots)
        self.gate.wait()  # nobody overwrites a slot before every rank has read them all
        return got

    def all_reduce(self, t, op=dist.ReduceOp.SUM):
        t.copy_(_REDUCE[op](torch.stack(self._exchange(t.clone()))))

    def all_gather_object(self, out, obj):
        out[:] = [copy.deepcopy(o) for o in self._exchange(obj)]

    def fake_ddp(self, module, device_ids=None):
        wrapper = Recorder(module)
        self.ddp.append((self.rank(), wrapper, device_ids))
        return wrapper

    def install(self, monkeypatch) -> ThreadGroup:
        """Make torch.distributed (and ebmref.distributed's DDP) this group, LOCAL_RANK unset."""
        for name, value in {"is_initialized": lambda: True, "get_rank": self.rank,
                            "get_world_size": lambda: self.world,
                            "get_backend": lambda: "gloo", "all_reduce": self.all_reduce,
                            "all_gather_object": self.all_gather_object,
                            "barrier": lambda: self.gate.wait()}.items():
            monkeypatch.setattr(dist, name, value)
        monkeypatch.setattr(distributed, "DistributedDataParallel", self.fake_ddp)
        monkeypatch.delenv("LOCAL_RANK", raising=False)
        return self

    def run(self, fn) -> list:
        """fn(rank) on every rank at once; the results in rank order (the first error raised)."""
        results, errors = [None] * self.world, []

        def body(r):
            self.local.rank = r
            try:
                results[r] = fn(r)
            except BaseException as err:  # noqa: BLE001 - reported below
                errors.append(err)
                self.gate.abort()

        threads = [threading.Thread(target=body, args=(r,)) for r in range(self.world)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return results
