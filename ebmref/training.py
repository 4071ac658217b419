"""One training loop for MCMC-trained energy-based models (paper §3, §5).

An update θ_s → θ_{s+1} (:func:`train_step`, on a :class:`TrainState`):

1. a data minibatch x⁺ (drawn by :func:`train` with the run's generator);
2. chain starts x₀: from the replay buffer with its policy (``"noise"``: Du's NLL with
   re-initialisation, ``"data"``: PCD, ``"true_cd"``: true CD, §5.1.1, §6.1), or ``"cd"``: the
   data batch itself (CD-k), optionally passed through a transition (§5.3.2);
3. the negatives x⁻ (:func:`ebmref.negatives.sample_negatives`: ULA, eq. 1 or Du's decoupled
   step, or MALA); they go back into the buffer;
4. the loss: ``contrastive_loss(E(x⁺), E(x⁻), l2)`` (eq. 3) plus, with the KL loss on,
   ``kl.weight · kl_loss`` on the differentiated chain ends x̃ (§5.4), its entropy term measured
   against buffer states drawn before x⁻ joins the buffer;
5. Adam (β₁ = 0 by default, §8.4) after clipping the weight-gradient norm.

:func:`train` drives it: every ``run.log_every`` updates a JSON line goes to
``out_dir/metrics.jsonl``; every ``run.ckpt_every`` updates (and at the end) an atomic
checkpoint of the whole :class:`TrainState` goes to ``out_dir/checkpoint.pt``. ``resume=True``
continues from it bit for bit on CPU when the data is a tensor. Non-finite energies, samples,
loss or gradients, or |E| above ``run.max_energy``, stop the run with :class:`TrainingDiverged`
*before* the optimiser step. Parameters θ_s count as good once they have produced finite,
bounded energies and gradients at update s + 1, so a checkpoint due at s is held in memory and
written then (the final one after a validation pass): a checkpoint on disk never holds
parameters that already diverged.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ebmref import distributed
from ebmref.batches import DataSource
from ebmref.buffer import ReplayBuffer, UniformNoise
from ebmref.checkpoint import energy_record
from ebmref.config import DTYPES, TrainConfig
from ebmref.energy import Energy
from ebmref.negatives import sample_negatives
from ebmref.objectives import contrastive_loss, kl_loss
from ebmref.rundir import CHECKPOINT_NAME, RunFiles
from ebmref.samplers import Transition
from ebmref.transitions import Clamped

__all__ = ["CHECKPOINT_NAME", "StepOutput", "TrainResult", "TrainState", "TrainingDiverged",
           "train", "train_step"]


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite or exploding quantity; raised before the bad update."""

    def __init__(self, step: int, quantity: str, value: float, detail: str = ""):
        self.step, self.quantity, self.value, self.detail = step, quantity, value, detail
        super().__init__(f"training diverged at step {step}: {quantity} = {value!r}{detail}")


@dataclass
class TrainResult:
    """What :func:`train` returns: the final step, this session's metric records, the buffer
    (``None`` for ``buffer.init="cd"``) and the path of the last checkpoint (``None`` without
    out_dir)."""

    step: int
    history: list[dict] = field(default_factory=list)
    buffer: ReplayBuffer | None = None
    checkpoint: Path | None = None


@dataclass
class TrainState:
    """Everything an update changes: E_θ, the optimiser, the run's generator, the replay
    buffer (``None`` for CD-k, and until the event shape is known for iterable data) and the
    number of updates done. :meth:`state_dict` is the checkpoint."""

    energy: Energy
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    config: TrainConfig
    buffer: ReplayBuffer | None = None
    step: int = 0
    spec: dict | None = None  # the energy's construction arguments, when the caller knows them

    @classmethod
    def create(cls, energy: Energy, config: TrainConfig) -> TrainState:
        """Fresh state on the config's device; rank r of a process group gets its own generator
        stream (:func:`ebmref.distributed.rank_seed`)."""
        rank = distributed.current().rank
        generator = torch.Generator(device=config.run.resolved_device()).manual_seed(
            distributed.rank_seed(config.run.seed, rank))
        optimizer = torch.optim.Adam(energy.parameters(), lr=config.optim.lr,
                                     betas=config.optim.betas)
        return cls(energy, optimizer, generator, config)

    def ensure_buffer(self, event_shape: tuple[int, ...]) -> ReplayBuffer | None:
        """The replay buffer (this rank's shard), built on first use; ``None`` for CD-k."""
        b, run = self.config.buffer, self.config.run
        if self.buffer is None and b.init != "cd":
            device, dtype = run.resolved_device(), DTYPES[run.dtype]
            ctx = distributed.current()
            self.buffer = ReplayBuffer(
                ctx.shard(b.size, "buffer.size"), b.init, b.reinit_prob, b.data_fraction,
                b.replacement, noise_fn=UniformNoise(event_shape, b.noise_low, b.noise_high,
                                                     dtype, device),
                device=device, seed=distributed.rank_seed(run.seed, ctx.rank),
                n_members=self.energy.n_members)
        return self.buffer

    def state_dict(self, copy_tensors: bool = False) -> dict:
        """The checkpoint (copied when it must outlive later updates). Under a process group
        it holds every rank's buffer shard and generator (a collective: all ranks call it)."""
        model, opt = self.energy.state_dict(), self.optimizer.state_dict()
        if copy_tensors:
            model = {k: v.detach().clone() for k, v in model.items()}
            opt = copy.deepcopy(opt)
        state = {"step": self.step, "model": model, "optimizer": opt,
                 "buffer": None if self.buffer is None else self.buffer.state_dict(),
                 "rng": {"generator": self.generator.get_state()},
                 "config": self.config.to_dict(), "energy": energy_record(self.energy, self.spec)}
        if distributed.current().enabled:
            state["buffer"], state["buffer_shards"] = distributed.gather_buffer_states(
                state["buffer"])
            state["rng"]["generators"] = distributed.gather_objects(self.generator.get_state())
        return state

    def load_state_dict(self, state: dict) -> None:
        """Resume from a checkpoint, at this or any other world size (rank shards resharded)."""
        ctx, seed = distributed.current(), self.config.run.seed
        device = self.config.run.resolved_device()
        self.energy.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(distributed.generator_state_for_rank(
            state["rng"].get("generators"), state["rng"]["generator"], ctx, seed,
            int(state["step"]), device).cpu())
        if state["buffer"] is not None:
            buffer = self.ensure_buffer(tuple(state["buffer"]["storage"].shape[1:]))
            buffer.load_state_dict(distributed.buffer_state_for_rank(
                state["buffer"], state.get("buffer_shards"), ctx, seed, device))
        self.step = int(state["step"])


@dataclass
class StepOutput:
    """:func:`train_step`'s report: the update's rank-averaged statistics and its negatives."""

    stats: dict[str, float]
    x_neg: Tensor


def train_step(state: TrainState, x_pos: Tensor, *, pool: Tensor | None = None,
               transition: Transition | None = None,
               model: torch.nn.Module | None = None) -> StepOutput:
    """One update θ_s → θ_{s+1} on the data batch x⁺ (module docstring, steps 2–5).

    ``pool``: data the buffer's data policies pick from (default: the batch); ``transition``:
    ``(x, generator) → x`` for chain starts and/or every N sampler steps; ``model``: what the
    loss forwards go through (a ``DistributedDataParallel`` wrapper of ``state.energy``).
    Raises :class:`TrainingDiverged` before the optimiser step when a quantity is non-finite or
    |E| exceeds ``run.max_energy``.
    """
    cfg, energy, g, members = state.config, state.energy, state.generator, state.energy.n_members
    model = energy if model is None else model
    buffer = state.ensure_buffer(tuple(x_pos.shape[1:]))
    if buffer is None:  # CD-k: chains start at the data batch
        x0 = x_pos.detach().clone()
    else:  # this rank's share of the batch of chains, like its share of the data batch
        n_chains = distributed.current().shard(cfg.run.batch_size, "run.batch_size") * members
        x0, _ = buffer.sample(n_chains, g, data=x_pos if pool is None else pool)
    if cfg.buffer.transition_on_read:
        x0 = transition(x0, g)
    neg = sample_negatives(energy, x0, cfg.sampler, cfg.kl, generator=g, transition=transition)
    # The entropy reference is drawn from past chain ends, before x⁻ joins the buffer (a point
    # is not its own nearest neighbour).
    reference = None
    if cfg.kl.enabled and cfg.kl.entropy_weight > 0 and buffer is not None:
        reference = buffer.peek(cfg.kl.entropy_reference * members, g)
    if buffer is not None:
        buffer.push(neg.x, g, check_finite=False)  # checked with the stats, over all ranks

    e_pos, e_neg = model(x_pos), model(neg.x)
    loss_c = contrastive_loss(e_pos, e_neg, cfg.optim.l2, check_finite=False)
    loss, loss_kl = loss_c, torch.zeros((), device=e_pos.device, dtype=e_pos.dtype)
    if cfg.kl.enabled:
        loss_kl = kl_loss(energy, neg.x_diff, sign=cfg.kl.sign,
                          entropy_weight=cfg.kl.entropy_weight, reference=reference,
                          entropy=cfg.kl.entropy_estimator, groups=members, check_finite=False)
        loss = loss + cfg.kl.weight * loss_kl
    state.optimizer.zero_grad(set_to_none=True)
    # An ensemble's losses are means over its members: the sum gives each its own gradient.
    (loss * members if members > 1 else loss).backward()
    max_norm = cfg.optim.max_grad_norm if cfg.optim.max_grad_norm is not None else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(
        [p for p in energy.parameters() if p.requires_grad], max_norm)

    stats = _reduced_stats(e_pos, e_neg, neg, loss, loss_c, loss_kl, grad_norm)
    _check_finite_and_bounded(state.step + 1, stats, cfg.run.max_energy)
    state.optimizer.step()
    state.step += 1
    return StepOutput({k: v for k, v in stats.items() if not k.startswith("_")}, neg.x)


def _reduced_stats(e_pos, e_neg, neg, loss, loss_c, loss_kl, grad_norm) -> dict[str, float]:
    """One host sync per update: the divergence checks' inputs and the logged metrics,
    averaged over ranks (maxima of |E|, minimum of the finite-samples flag)."""
    zero = torch.zeros((), dtype=e_pos.dtype, device=e_pos.device)
    values = distributed.all_reduce_stats(torch.stack([
        e_pos.detach().abs().max(), e_neg.detach().abs().max(),
        torch.isfinite(neg.x).all().to(e_pos.dtype), loss.detach(), grad_norm.to(e_pos.dtype),
        e_pos.detach().mean(), e_neg.detach().mean(), loss_c.detach(), loss_kl.detach(),
        neg.acceptance.mean() if neg.acceptance is not None else zero,
    ]), maxima=(0, 1), minima=(2,)).tolist()
    names = ("_abs_pos", "_abs_neg", "_x_finite", "loss", "grad_norm", "energy_data",
             "energy_samples", "loss_contrastive", "loss_kl", "acceptance")
    stats = dict(zip(names, values))
    logged = ("loss", "loss_contrastive", "loss_kl", "energy_data", "energy_samples",
              "grad_norm") + (("acceptance",) if neg.acceptance is not None else ())
    return {**{k: stats[k] for k in logged}, **{k: v for k, v in stats.items() if k[0] == "_"}}


def _check_finite_and_bounded(step: int, stats: dict[str, float], max_energy: float) -> None:
    if stats["_x_finite"] != 1.0:
        raise TrainingDiverged(step, "samples x⁻ (non-finite entries)", float("nan"))
    for name, value in (("|energy| of data E(x⁺)", stats["_abs_pos"]),
                        ("|energy| of samples E(x⁻)", stats["_abs_neg"])):
        _check_energy(step, name, value, max_energy)
    for name, key in (("loss", "loss"), ("weight-gradient norm", "grad_norm")):
        if not math.isfinite(stats[key]):
            raise TrainingDiverged(step, name, stats[key])


def _check_energy(step: int, name: str, value: float, max_energy: float) -> None:
    if not math.isfinite(value) or value > max_energy:
        raise TrainingDiverged(step, name, value, f" > max_energy={max_energy}"
                               if math.isfinite(value) else "")


def _located(err: TrainingDiverged, last_good: Path | None) -> TrainingDiverged:
    """The same divergence, its message naming the checkpoint a user can go back to."""
    where = (f"; last good checkpoint: {last_good}" if last_good is not None
             else "; no checkpoint written yet")
    return TrainingDiverged(err.step, err.quantity, err.value, err.detail + where)


def _validate_final(state: TrainState, x_pos: Tensor, x_neg: Tensor) -> None:
    """The final parameters on the last batches; eval mode so that e.g. spectral norm's power
    iteration does not advance (resumed runs must match uninterrupted ones)."""
    state.energy.eval()
    with torch.no_grad():
        final = distributed.all_reduce_stats(torch.stack(
            [state.energy(x_pos).abs().max(), state.energy(x_neg).abs().max()]),
            maxima=(0, 1)).tolist()
    state.energy.train()
    for name, value in zip(("|energy| of data E(x⁺) after the final update",
                            "|energy| of samples E(x⁻) after the final update"), final):
        _check_energy(state.step, name, value, state.config.run.max_energy)


def _check_arguments(energy, data, config: TrainConfig, out_dir, resume, transition) -> None:
    config.validate()
    if not isinstance(energy, Energy):
        raise ValueError(f"energy: expected an ebmref.energy.Energy, got {type(energy)}")
    if config.uses_transition and transition is None:
        raise ValueError("transition: config asks for transitions (buffer.transition_on_read/"
                         "sampler.transition_every) but no transition callable was given")
    if resume and out_dir is None:
        raise ValueError("resume: needs out_dir, got out_dir=None")
    if energy.n_members > 1 and config.optim.max_grad_norm is not None:
        raise ValueError("optim.max_grad_norm: must be None for an ensemble (a norm over all "
                         f"members would couple them), got {config.optim.max_grad_norm}")
    device = config.run.resolved_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"run.device: {config.run.device!r} asked for, but no CUDA device is "
                         "available here")
    if isinstance(data, Tensor) and config.buffer.init != "cd":
        _check_buffer_memory(config, tuple(data.shape[1:]), energy.n_members, device)


def _check_buffer_memory(config: TrainConfig, event: tuple[int, ...], members: int,
                         device: torch.device) -> None:
    need = config.buffer.size * members * math.prod(event) * DTYPES[config.run.dtype].itemsize
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > free:
        raise ValueError(f"buffer.size: {config.buffer.size} states of shape {event} need "
                         f"{need / 2**30:.1f} GiB, more than the {free / 2**30:.1f} GiB free on "
                         f"{device}")


def _loop(state: TrainState, source: DataSource, files: RunFiles, callback, transition,
          model) -> tuple[list[dict], Tensor, StepOutput | None]:
    """Updates until ``run.n_updates``: log, checkpoint a state once the next update has shown
    it is good (module docstring)."""
    run, history, pending, out, x_pos = state.config.run, [], None, None, None
    bar = tqdm(total=run.n_updates, initial=state.step, desc="train",
               disable=not (run.progress and files.is_main))
    t0 = time.perf_counter()
    while state.step < run.n_updates:
        x_pos = source.next(state.generator)
        try:
            out = train_step(state, x_pos, pool=source.tensor, transition=transition,
                             model=model)
        except TrainingDiverged as err:
            raise _located(err, files.last_good) from None
        if pending is not None:  # θ_{step−1}, captured with its state, just passed the checks
            files.save(pending)
            pending = None
        bar.update(1)
        if state.step % run.log_every == 0:
            record = {"step": state.step, **out.stats, "time_s": time.perf_counter() - t0}
            history.append(record)
            files.log(record)
            bar.set_postfix({k: f"{record[k]:.3g}" for k in ("loss", "energy_data",
                                                               "energy_samples")})
            if callback is not None:
                callback(state.step, record)
        if files.out and run.ckpt_every and state.step % run.ckpt_every == 0 \
                and state.step < run.n_updates:
            pending = state.state_dict(copy_tensors=True)
    bar.close()
    return history, x_pos, out


def train(energy: Energy, data: Tensor | Iterable, config: TrainConfig,
          out_dir: str | Path | None = None, resume: bool | str = False,
          callback: Callable[[int, dict], None] | None = None, *,
          transition: Transition | None = None, overwrite: bool = False,
          records: dict | None = None, model_spec: dict | None = None) -> TrainResult:
    """Train ``energy`` on ``data`` with ``config`` (module docstring for the update).

    Args:
        energy: E_θ (moved to the config's device and dtype in place).
        data: a tensor (N, *event) — minibatches drawn with the run's generator, so runs and
            resumptions are reproducible — or an iterable of batches (resumption then restarts
            the iterable and is not bitwise).
        out_dir: the run directory (:mod:`ebmref.rundir`: config.json, metrics.jsonl,
            checkpoint.pt; locked while the run lives); ``None``: nothing written.
        resume: ``True`` continues from ``out_dir/checkpoint.pt`` (which must exist; the config
            must match it except for ``ebmref.config.RESUMABLE_CHANGES``); ``"if_exists"``
            starts fresh when there is none.
        callback: called as ``callback(step, record)`` at every logged step.
        transition: ``(x, generator) → x`` used on chain starts (``buffer.transition_on_read``)
            and/or every ``sampler.transition_every`` sampler steps; clamped to the sampler's box.
        overwrite: a fresh run may replace another run's directory (swapped in at its first
            checkpoint); without it such a directory is refused.
        records: extra JSON files to write beside config.json, {name: object}.
        model_spec: the energy's construction arguments, recorded in checkpoints and checked on
            resumption.

    Raises:
        ValueError: invalid config, data, arguments or run directory, before anything is
            written; ``RunDirectoryBusy``: another live run owns ``out_dir``.
        TrainingDiverged: a non-finite or exploding quantity; the last checkpoint is intact.
    """
    _check_arguments(energy, data, config, out_dir, resume, transition)
    # torchrun: join the process group (no-op in a single process); rank r trains on its own
    # share of the batch with its own generator and buffer shard, gradients are averaged.
    ctx, run = distributed.init_from_env(), config.run
    device, dtype = run.resolved_device(), DTYPES[run.dtype]
    if ctx.enabled and energy.n_members > 1:
        raise ValueError("energy: ensembles do not run under a process group (torchrun)")
    source = DataSource(data, ctx.shard(run.batch_size, "run.batch_size") * energy.n_members,
                        device, dtype)
    recorded = {"resolved_device": str(device), "transition": repr(transition),
                "energy": type(energy).__name__}
    if transition is not None and config.sampler.clamp is not None:
        transition = Clamped(transition, config.sampler.clamp)
    energy.to(device=device, dtype=dtype).train()
    state = TrainState.create(energy, config)
    state.spec = model_spec
    if source.tensor is not None:
        state.ensure_buffer(tuple(source.tensor.shape[1:]))
    files = RunFiles(Path(out_dir) if out_dir is not None else None, state, resume, overwrite,
                     {"config.json": recorded, **(records or {})})
    try:
        start = state.step
        # Under torchrun: DDP (broadcasts rank 0's θ now, averages weight gradients in
        # backward). Only the loss forwards go through it; the sampler calls the bare module.
        history, x_pos, out = _loop(state, source, files, callback, transition,
                                    distributed.data_parallel(energy))
        if state.step > start:
            try:
                _validate_final(state, x_pos, out.x_neg)
            except TrainingDiverged as err:
                raise _located(err, files.last_good) from None
            files.save(state.state_dict())  # a collective under a process group: all ranks
        distributed.barrier()  # the checkpoint is on disk before any rank returns
    finally:
        files.close()
    return TrainResult(step=state.step, history=history, buffer=state.buffer,
                       checkpoint=files.last_good)
