"""Shared helpers for the benchmark scripts: machine description, interleaved timing, tables.

Timing rule: every competitor runs once per round, rounds repeat, and we report the median per
competitor. Interleaving keeps slow drifts of a shared machine from favouring one column.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from ebmref.machine import cpu_model


def machine_info(device: str = "cpu") -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    parts = [f"CPU: {cpu_model()} ({os.cpu_count()} logical cores)",
             f"torch {torch.__version__}", f"intra-op threads {torch.get_num_threads()}",
             f"python {platform.python_version()}",
             f"load average at start {load[0]:.2f}"]
    if device.startswith("cuda") and torch.cuda.is_available():
        parts.insert(1, f"GPU: {torch.cuda.get_device_name(0)}")
    return "; ".join(parts)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def clock(kind: str) -> Callable[[], float]:
    """``"wall"``: time.perf_counter; ``"cpu"``: this process's CPU time (time.process_time),
    steadier than wall time on a CPU shared with other jobs when torch runs single-threaded."""
    if kind not in ("wall", "cpu"):
        raise ValueError(f"clock: expected 'wall' or 'cpu', got {kind!r}")
    return time.perf_counter if kind == "wall" else time.process_time


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, device: str = "cpu",
                        warmup: int = 1, clock_kind: str = "wall") -> dict[str, float]:
    """Median time (s) of each callable over ``repeats`` interleaved rounds."""
    now = clock(clock_kind)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
            sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            sync(device)
            t0 = now()
            fn()
            sync(device)
            times[k].append(now() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def fmt(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "–"
    if v >= 1e4:
        return f"{v:.3g}"
    return f"{v:.{digits}g}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
