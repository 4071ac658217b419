"""Multi-process training: a real 2-process gloo run of ``ebmref.training.train``.

One ``torch.multiprocessing.spawn`` of two ranks (CPU, gloo) runs these:

1. a 2-rank training run on a tiny problem whose answer is known — a Gaussian energy
   N(μ, I) fitted by persistent contrastive divergence to data from N(μ*, I) — recording θ on
   every rank after every update;
2. the same run without the DistributedDataParallel wrapper (the deliberately broken variant);
3. the same run stopped at step 8 and resumed at the same world size;
4. a short run with the KL loss (gradients through differentiated sampler steps);
5. the statistics reduction of the divergence checks and the logged metrics on its own.
The main process then resumes the 2-rank checkpoint of run 1 on a single rank. A last test runs
the README's command line: ``torchrun --nproc_per_node=2 -m mnist.train``, then a resume
without torchrun.

Assertions: θ is bitwise identical across ranks after every step (and is not without
DDP); the 2-rank resume is bitwise; the fit improves (‖μ − μ*‖ shrinks by more than half:
learning, not noise); each rank runs its share of the chains; the checkpoint holds both ranks'
buffer shards and generator states; a single process resumes it at the saved step with the
merged buffer and continues to improve; the statistics are averaged (maxima and minima where
asked), not summed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.multiprocessing as mp

from ebmref import distributed
from ebmref.checkpoint import load_checkpoint
from ebmref.config import TrainConfig, with_overrides
from ebmref.energy import Gaussian
from ebmref.training import train

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="this torch build has no torch.distributed")

MU_STAR = torch.tensor([3.0, -2.0], dtype=torch.float64)
STEPS = 12
WORLD = 2


def _config(steps: int = STEPS, **extra) -> TrainConfig:
    # PCD on a Gaussian energy with eq.-1 Langevin: E(μ) moves μ towards the data mean.
    return with_overrides(TrainConfig(), {
        "run.n_updates": steps, "run.batch_size": 64, "run.seed": 5, "run.device": "cpu",
        "run.dtype": "float64", "buffer.init": "data", "buffer.size": 128,
        "sampler.n_steps": 5, "sampler.step_size": 0.2, "sampler.noise": None,
        "sampler.grad_clip": None, "sampler.clamp": None, "optim.l2": 0.0, "optim.lr": 0.3,
        "optim.betas": (0.0, 0.999), "optim.max_grad_norm": None, "run.log_every": 1,
        "run.ckpt_every": 4, "run.progress": False, **extra})


def _data() -> torch.Tensor:
    g = torch.Generator().manual_seed(11)
    return MU_STAR + torch.randn(512, 2, generator=g, dtype=torch.float64)


def _energy() -> Gaussian:
    return Gaussian(torch.zeros(2), torch.eye(2), dtype=torch.float64)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ctx = distributed.init_from_env("gloo")
    assert ctx.enabled and ctx.rank == rank
    try:
        results = {}
        for name, broken in (("ok", False), ("broken", True)):
            # Different θ₀ per rank: the start broadcast must make them equal.
            energy = _energy()
            with torch.no_grad():
                energy.mu.add_(float(rank))
            trace = []

            def record(step, rec, energy=energy, trace=trace):
                trace.append(torch.cat([p.detach().reshape(-1).clone()
                                        for p in energy.parameters()]))

            # Broken: no DistributedDataParallel (no start broadcast, no gradient averaging).
            patch = (mock.patch.object(distributed, "data_parallel", lambda module: module)
                     if broken else contextlib.nullcontext())
            with patch:
                train(energy, _data(), _config(), out_dir=Path(out) / name, callback=record)
            results[name] = torch.stack(trace)
        # Stop at step 8 and resume at the same world size: must continue bit for bit.
        for steps, resume in ((8, False), (STEPS, True)):
            energy = _energy()
            train(energy, _data(), _config(steps), out_dir=Path(out) / "split", resume=resume)
        results["split"] = torch.cat([p.detach().reshape(-1) for p in energy.parameters()])
        # With the KL loss, part of ∂L/∂θ flows through the differentiated sampler steps, which
        # call the bare module, not the DDP wrapper: it must be averaged all the same.
        energy = _energy()
        kl = _config(4, **{"kl.weight": 1.0, "kl.differentiable_steps": 2,
                           "kl.entropy_weight": 0.1, "kl.entropy_reference": 32})
        res = train(energy, _data(), kl)
        results["kl"] = torch.cat([p.detach().reshape(-1) for p in energy.parameters()])
        results["chains_per_rank"] = res.buffer.n_seen - res.buffer.capacity  # pushed x⁻
        # Rank r reports r + 1 in every entry: mean 1.5, max 2, min 1; NaN on one rank wins.
        v = torch.full((4,), float(rank + 1), dtype=torch.float64)
        results["stats"] = distributed.all_reduce_stats(v, maxima=(1,), minima=(2,))
        nan = torch.tensor([1.0, float("nan") if rank else 1.0, 1.0], dtype=torch.float64)
        results["stats_nan"] = distributed.all_reduce_stats(nan, maxima=(1,), minima=(2,))
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        distributed.shutdown()


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(WORLD, _free_port(), str(out)), nprocs=WORLD, join=True)
    return out, [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def test_parameters_agree_across_ranks_after_every_step(two_rank_run):
    _, ranks = two_rank_run
    ok0, ok1 = ranks[0]["ok"], ranks[1]["ok"]
    assert ok0.shape == (STEPS, 2 + 4)  # μ and the Cholesky factor, one row per update
    assert torch.equal(ok0, ok1)  # bitwise
    assert torch.equal(ranks[0]["kl"], ranks[1]["kl"])
    assert not torch.equal(ranks[0]["kl"], ok0[3])  # the KL term changed the update
    # Broken variant (no DDP): each rank follows its own data and chains.
    b0, b1 = ranks[0]["broken"], ranks[1]["broken"]
    assert not torch.equal(b0[-1], b1[-1])
    assert (b0[-1] - b1[-1]).abs().max() > 1e-3


def test_statistics_are_averaged_over_ranks(two_rank_run):
    """The reduction behind every logged metric and divergence check: means by default, max
    and min where asked, a NaN on any rank seen by all (summing, the broken variant, would
    log 3.0 for the mean: W times too large)."""
    _, ranks = two_rank_run
    for r in ranks:
        assert r["stats"].tolist() == [1.5, 2.0, 1.0, 1.5]
        mean, hi, lo = r["stats_nan"].tolist()
        assert mean == 1.0 and hi == float("inf") and lo == 1.0


def test_each_rank_runs_its_share_of_the_chains(two_rank_run):
    """run.batch_size = 64 chains per update in all: 32 per rank, 4 updates."""
    _, ranks = two_rank_run
    assert [r["chains_per_rank"] for r in ranks] == [4 * 32, 4 * 32]


def _nll(theta: torch.Tensor, data: torch.Tensor) -> float:
    """Exact mean negative log-likelihood of the data under the Gaussian with parameters θ."""
    model = _energy()
    with torch.no_grad():
        model.mu.copy_(theta[:2])
        model.scale_tril.copy_(theta[2:].view(2, 2))
        return float(-model.log_prob(data).mean())


def test_resume_at_the_same_world_size_is_bitwise(two_rank_run):
    _, ranks = two_rank_run
    for r in ranks:
        assert torch.equal(r["split"], r["ok"][-1])


def test_two_rank_training_learns(two_rank_run):
    _, ranks = two_rank_run
    trace, data = ranks[0]["ok"], _data()
    mu = trace[:, :2]
    start = float(torch.linalg.vector_norm(MU_STAR))  # μ₀ = 0 after the broadcast from rank 0
    end = float(torch.linalg.vector_norm(mu[-1] - MU_STAR))
    assert end < 0.5 * start, (start, end)
    # The loss that matters, the exact NLL (log Z is known), falls by more than half of the
    # way from θ₀ to the data's maximum-likelihood Gaussian.
    theta0 = torch.cat([torch.zeros(2), torch.eye(2).reshape(-1)]).to(torch.float64)
    mle = torch.cat([data.mean(0), torch.linalg.cholesky(torch.cov(data.T, correction=0))
                     .reshape(-1)])
    nll0, nll_end, nll_best = _nll(theta0, data), _nll(trace[-1], data), _nll(mle, data)
    assert nll_end - nll_best < 0.5 * (nll0 - nll_best), (nll0, nll_end, nll_best)


def test_checkpoint_holds_every_rank_and_resumes_on_one(two_rank_run):
    out, ranks = two_rank_run
    run = out / "ok"
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["step"] == STEPS
    shards = state["buffer_shards"]
    assert len(shards) == WORLD and [s["capacity"] for s in shards] == [64, 64]
    assert state["buffer"]["capacity"] == 128
    assert torch.equal(state["buffer"]["storage"], torch.cat([s["storage"] for s in shards]))
    gens = state["rng"]["generators"]
    assert len(gens) == WORLD and not torch.equal(gens[0], gens[1])  # per-rank streams
    mu_saved = state["model"]["mu"].clone()
    torch.testing.assert_close(mu_saved, ranks[0]["ok"][-1, :2], rtol=0, atol=0)

    # Resume the 2-rank checkpoint in this (single) process and train 6 more steps.
    assert not distributed.current().enabled
    energy = _energy()
    res = train(energy, _data(), _config(STEPS + 6), out_dir=run, resume=True)
    assert res.step == STEPS + 6
    assert res.buffer.capacity == 128 and len(res.buffer) == 128
    assert res.history[0]["step"] == STEPS + 1  # continued, not restarted
    before = float(torch.linalg.vector_norm(mu_saved - MU_STAR))
    after = float(torch.linalg.vector_norm(energy.mu.detach() - MU_STAR))
    assert after < max(before, 0.5), (before, after)  # still converged, no reset to μ₀ = 0


# -- the collectives on their own: a second, short 2-rank spawn ---------------------------------

def _collectives_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ctx = distributed.init_from_env("gloo")
    res: dict = {"ctx": ctx, "again": distributed.init_from_env("nccl"),  # a no-op now
                 "current": distributed.current(), "is_main": distributed.is_main()}
    try:
        # Entry 0 by mean, 1 by max, 2 and 3 by min; rank 0 holds the larger maximum and
        # the smaller minimum in entry 2, rank 1 in entry 3.
        v = torch.tensor([[1.0, 5.0, -3.0, 7.0], [3.0, 2.0, 4.0, -1.0]],
                         dtype=torch.float64)[rank]
        res["stats"] = distributed.all_reduce_stats(v, maxima=(1,), minima=(2, 3))
        res["stats_input"] = v
        res["means"] = distributed.all_reduce_stats(v[:2].clone())
        nan = float("nan")
        w = torch.tensor([1.0, nan if rank else 0.0, nan if rank else 0.0], dtype=torch.float64)
        res["stats_nan"] = distributed.all_reduce_stats(w, maxima=(1,), minima=(2,))
        t = torch.full((2,), float(rank), requires_grad=True)
        res["gathered"] = distributed.gather_objects(
            {"t": t * 2, "list": [t + 1], "tuple": (t + 2, "x"), "rank": rank})
        shard = {"storage": torch.full((3 - rank, 1), float(rank)), "capacity": 3 - rank,
                 "n_seen": 10 + rank, "ptr": 1, "init": "data"}
        res["buffer"] = distributed.gather_buffer_states(shard)
        res["no_buffer"] = distributed.gather_buffer_states(None)
        layer = torch.nn.Linear(2, 1)
        with torch.no_grad():
            layer.weight.fill_(float(rank + 1))
        wrapped = distributed.data_parallel(layer)
        res["ddp"] = (type(wrapped).__name__, wrapped.device_ids, layer.weight.detach().clone())
        distributed.barrier()
    finally:
        distributed.shutdown()
    res["after"] = distributed.current()
    torch.save(res, Path(out) / f"rank{rank}.pt")


def test_collectives_on_two_ranks(tmp_path):
    """The process-group helpers on 2 gloo ranks: context, reductions (mean, max, min, NaN),
    gathers in rank order on CPU, buffer shards merged, DDP's start broadcast, shutdown."""
    mp.spawn(_collectives_worker, args=(WORLD, _free_port(), str(tmp_path)), nprocs=WORLD,
             join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for r, res in enumerate(ranks):
        expected = distributed.DistContext(r, WORLD, r, "gloo")
        assert res["ctx"] == res["again"] == res["current"] == expected
        assert res["is_main"] is (r == 0) and res["ctx"].enabled
        assert res["after"] == distributed.DistContext()  # the group is gone
        assert res["stats"].tolist() == [2.0, 5.0, -3.0, -1.0]
        assert res["stats_input"].tolist() == [[1.0, 5.0, -3.0, 7.0], [3.0, 2.0, 4.0, -1.0]][r]
        assert res["means"].tolist() == [2.0, 3.5]
        mean, hi, lo = res["stats_nan"].tolist()
        assert mean == 1.0 and hi == math.inf and lo == -math.inf
        gathered = res["gathered"]
        assert [g["rank"] for g in gathered] == [0, 1]
        for k, g in enumerate(gathered):
            assert type(g["list"]) is list and type(g["tuple"]) is tuple and g["tuple"][1] == "x"
            for t, add in ((g["t"], 0.0), (g["list"][0], 1.0), (g["tuple"][0], 2.0)):
                assert not t.requires_grad and t.device.type == "cpu"
                assert t.tolist() == [2.0 * k if add == 0.0 else k + add] * 2
        merged, shards = res["buffer"]
        assert [s["capacity"] for s in shards] == [3, 2]
        assert merged["storage"].flatten().tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
        assert (merged["capacity"], merged["n_seen"], merged["ptr"]) == (5, 21, 0)
        assert merged["init"] == "data" and shards[0]["ptr"] == 1  # the shards are untouched
        assert res["no_buffer"] == (None, [None, None])
        name, device_ids, weight = res["ddp"]
        assert name == "DistributedDataParallel" and device_ids is None
        assert weight.tolist() == [[1.0, 1.0]]  # rank 0's parameters on every rank


# -- the helpers on their own (no process group) ------------------------------------------------

def test_shard_sizes_and_rank_seeds():
    assert distributed.shard_sizes(10, 3) == [4, 3, 3]
    assert sum(distributed.shard_sizes(10_000, 7)) == 10_000
    with pytest.raises(ValueError, match="batch_size"):
        distributed.shard_sizes(1, 2, "batch_size")
    assert distributed.rank_seed(5, 0) == 5  # rank 0 is the single-process run
    seeds = {distributed.rank_seed(5, r) for r in range(64)}
    assert len(seeds) == 64


def test_buffer_reshard_covers_the_merged_buffer_once():
    storage = torch.arange(10.0)[:, None]
    merged = {"storage": storage, "capacity": 10, "n_seen": 30, "ptr": 3, "init": "data",
              "replacement": "fifo", "generator": torch.Generator().get_state()}
    parts = [distributed.buffer_state_for_rank(merged, [merged, merged],
                                               distributed.DistContext(r, 3), seed=1)
             for r in range(3)]
    assert torch.equal(torch.cat([p["storage"] for p in parts]), storage)
    assert [p["capacity"] for p in parts] == [4, 3, 3] and all(p["ptr"] == 0 for p in parts)
    # Same world size as saved: each rank gets its own shard back unchanged.
    shards = [dict(merged, capacity=5, storage=storage[:5]), dict(merged, capacity=5,
                                                                    storage=storage[5:])]
    mine = distributed.buffer_state_for_rank(merged, shards, distributed.DistContext(1, 2), 1)
    assert mine is shards[1]
    # A single-process checkpoint (no shards) resumes unchanged in a single process.
    assert distributed.buffer_state_for_rank(merged, None, distributed.DistContext(), 1) is merged


def test_single_process_helpers_are_identities_or_no_ops():
    """Without a process group: one rank's object (tensors detached, on CPU), stats as given,
    the module unwrapped, a merged buffer equal to the only shard."""
    t = torch.ones(2, requires_grad=True) * 3
    (got,) = distributed.gather_objects({"a": [t], "b": (t, 1)})
    assert not got["a"][0].requires_grad and type(got["b"]) is tuple and got["b"][1] == 1
    stats = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_stats(stats, maxima=(0,), minima=(1,)) is stats
    layer = torch.nn.Linear(1, 1)
    assert distributed.data_parallel(layer) is layer
    shard = {"storage": torch.zeros(2, 1), "capacity": 2, "n_seen": 7, "ptr": 1}
    merged, shards = distributed.gather_buffer_states(shard)
    assert merged is shards[0] and merged["ptr"] == 1 and merged["n_seen"] == 7
    assert distributed.merge_buffer_states([shard, None]) is None
    distributed.shutdown()  # no group to leave: a no-op, not torch's "not initialized" error
    distributed.barrier()


def test_merge_keeps_an_empty_storage_empty():
    shards = [{"storage": None, "capacity": 2, "n_seen": 0, "ptr": 0},
              {"storage": torch.zeros(2, 1), "capacity": 2, "n_seen": 1, "ptr": 1}]
    merged = distributed.merge_buffer_states(shards)
    assert merged["storage"] is None and merged["capacity"] == 4 and merged["n_seen"] == 1


@pytest.mark.parametrize(("env", "message"), [
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE: expected an integer in the environment, got 'two'"),
    ({"WORLD_SIZE": "0"}, r"WORLD_SIZE: must be an integer in \[1, ∞\], got 0"),
    ({"WORLD_SIZE": "2"}, r"RANK: must be an integer in \[0, 1\], got -1"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, r"RANK: must be an integer in \[0, 1\], got 2"),
    ({"WORLD_SIZE": "2", "RANK": "1"},
     r"MASTER_ADDR: must be set when WORLD_SIZE=2 \(use torchrun\)"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1"},
     r"MASTER_PORT: must be set when WORLD_SIZE=2 \(use torchrun\)"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"},
     r"backend: must be one of \('gloo', 'nccl'\), got 'mpi'"),
])
def test_init_from_env_refuses_a_bad_environment(monkeypatch, env, message):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(ValueError, match=f"^{message}$"):
        distributed.init_from_env("mpi")
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize("world", ["", "1"])
def test_init_from_env_without_torchrun_is_a_single_process(monkeypatch, world):
    monkeypatch.setenv("WORLD_SIZE", world)
    assert distributed.init_from_env() == distributed.DistContext()
    assert distributed.is_main() and not torch.distributed.is_initialized()


# -- the README's command line: torchrun, then a single-process resume ------------------------

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *args], check=False, cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_torchrun_two_ranks_then_resume_on_one(tmp_path):
    out = tmp_path / "ddp"
    train_args = ["-m", "mnist.train", "--preset", "tiny", "--out", str(out)]
    proc = _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                 *train_args])
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = load_checkpoint(out / "checkpoint.pt")
    steps = int(state["step"])
    assert steps >= 1 and len(state["buffer_shards"]) == 2  # both ranks' shards, one file
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, steps + 1))  # rank 0 alone writes

    proc = _run([*train_args, "--resume", "--run.n-updates", str(steps + 2)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(load_checkpoint(out / "checkpoint.pt")["step"]) == steps + 2
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, steps + 3))
