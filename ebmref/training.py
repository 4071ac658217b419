"""One training loop for MCMC-trained energy-based models (paper §3, §5; DESIGN.md).

Each step:

1. a data minibatch x⁺ (drawn with the run's generator from a data tensor, or the next item of
   an iterable);
2. chain starts x₀: from the replay buffer with its policy (``"noise"``: Du's NLL with
   re-initialisation, ``"data"``: PCD, ``"true_cd"``: the paper's true CD, §5.1.1, §6.1), or
   ``"cd"``: the data batch itself (CD-k), optionally passed through a transition (§5.3.2);
3. the sampler: ULA (``samplers.langevin``, paper eq. 1 when ``noise is None``, Du's decoupled
   step x − α∇E + σξ otherwise) or MALA; chain ends x⁻ go back into the buffer;
4. the loss: ``objectives.contrastive_loss(E(x⁺), E(x⁻), l2)`` (eq. 3) plus, when
   ``kl_weight > 0``, ``kl_weight · objectives.kl_loss`` on the last ``kl_steps`` differentiated
   sampler steps with sign ``"du2020"`` or ``"cd"`` and an entropy term against buffer samples
   (§5.4);
5. Adam (β₁ = 0 by default, §8.4) after clipping the weight-gradient norm.

Every ``log_every`` steps a JSON line goes to ``out_dir/metrics.jsonl``; every ``ckpt_every``
steps (and at the end) an atomic checkpoint with model, optimiser, buffer, generator state and
step goes to ``out_dir/checkpoint.pt``. ``resume=True`` continues from it bit-for-bit on CPU when
the data is a tensor. Non-finite energies, samples, loss or gradients, or |E| above
``max_energy``, stop the run with :class:`TrainingDiverged` *before* the optimiser step; the last
good checkpoint is left as it was. Parameters θ_s count as good once they have produced finite,
bounded energies and gradients at step s + 1, so a checkpoint due at step s is held in memory and
written then (the final one after a validation pass).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ebmref import distributed
from ebmref.buffer import INIT_POLICIES, REPLACEMENTS, ReplayBuffer, UniformNoise
from ebmref.checkpoint import load_checkpoint, save_checkpoint
from ebmref.energy import Energy
from ebmref.objectives import ENTROPY_ESTIMATORS, KL_SIGNS, contrastive_loss, kl_loss
from ebmref.samplers import langevin, mala
from ebmref.validation import (
    check_choice,
    check_int_range,
    check_nonnegative,
    check_positive,
    check_probability,
)

CHAIN_INITS = (*INIT_POLICIES, "cd")
SAMPLERS = ("ula", "mala")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# Fields that may change between a checkpoint and its resumption.
RESUMABLE_CHANGES = ("steps", "log_every", "ckpt_every", "progress", "max_energy")

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.json"


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite or exploding quantity; raised before the bad update."""

    def __init__(self, step: int, quantity: str, value: float, detail: str = ""):
        self.step, self.quantity, self.value = step, quantity, value
        super().__init__(f"training diverged at step {step}: {quantity} = {value!r}{detail}")


@dataclass
class TrainConfig:
    """Every knob of :func:`train`; defaults follow IGEBM on MNIST (PEERS.md) and the paper's §8.4.

    Chain initialisation (§5.1.1, §6.1):
        init: ``"noise"`` | ``"data"`` | ``"true_cd"`` (replay-buffer policies) | ``"cd"`` (CD-k:
            chains start at the data batch, no buffer).
        buffer_size, reinit_prob (``"noise"``), data_fraction (``"true_cd"``),
        replacement (``"fifo"`` | ``"reservoir"``), noise_low/noise_high (uniform noise box).
    Sampler (§2.3, §5.3):
        sampler: ``"ula"`` | ``"mala"``; n_steps; step_size (λ of eq. 1 or α of Du's step);
        noise: σ of Du's decoupled step, ``None`` for eq. 1 (required for MALA);
        grad_clip_x: clip each entry of ∇ₓE (IGEBM: 0.01); clamp: (low, high) box for x.
    Objectives (§3, §5.4):
        l2 (energy-magnitude penalty), kl_weight, kl_sign (``"du2020"`` | ``"cd"``), kl_steps
        (differentiated sampler steps), kl_chains (0: the KL loss uses every chain; k > 0: the
        last kl_steps are rerun with a graph on the first k chains only, as Du et al. 2020 do
        with 32, to save memory), entropy_weight, entropy_estimator (``"nn"`` | ``"kl"``),
        entropy_reference (buffer samples the entropy is measured against).
    Optimiser (§8.4): lr, betas (β₁ = 0), weight_grad_clip (max ℓ2 norm of ∇_θ; ``None``: off).
    Transitions (§5.3.2): transition_on_read applies ``train(transition=...)`` to chain starts;
        transition_every=N applies it every N sampler steps (0: never); with ``clamp`` set, the
        transition's output is clamped to the box too.
    Run: steps, batch_size, seed, device (``"auto"``: cuda if available), dtype, log_every,
        ckpt_every (0: only at the end), max_energy (divergence threshold on |E|), progress.
    """

    steps: int = 1000
    batch_size: int = 128
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    init: str = "noise"
    buffer_size: int = 10_000
    reinit_prob: float = 0.05
    data_fraction: float = 0.1
    replacement: str = "fifo"
    noise_low: float = 0.0
    noise_high: float = 1.0
    sampler: str = "ula"
    n_steps: int = 60
    step_size: float = 10.0
    noise: float | None = 0.005
    grad_clip_x: float | None = 0.01
    clamp: tuple[float, float] | None = (0.0, 1.0)
    l2: float = 1.0
    kl_weight: float = 0.0
    kl_sign: str = "du2020"
    kl_steps: int = 1
    kl_chains: int = 0
    entropy_weight: float = 0.0
    entropy_estimator: str = "nn"
    entropy_reference: int = 100
    lr: float = 1e-4
    betas: tuple[float, float] = (0.0, 0.999)
    weight_grad_clip: float | None = 0.1
    transition_on_read: bool = False
    transition_every: int = 0
    log_every: int = 10
    ckpt_every: int = 100
    max_energy: float = 1e6
    progress: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field, its value and the allowed range."""
        check_int_range(self.steps, "steps", 1)
        check_int_range(self.batch_size, "batch_size", 1)
        check_int_range(self.seed, "seed", 0)
        if not (self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device: must be 'auto', 'cpu' or 'cuda[:i]', got {self.device!r}")
        check_choice(self.dtype, "dtype", tuple(DTYPES))
        check_choice(self.init, "init", CHAIN_INITS)
        check_int_range(self.buffer_size, "buffer_size", 1)
        if self.init != "cd":
            check_int_range(self.batch_size, "batch_size", 1, self.buffer_size)
        check_probability(self.reinit_prob, "reinit_prob")
        check_probability(self.data_fraction, "data_fraction")
        check_choice(self.replacement, "replacement", REPLACEMENTS)
        for name in ("noise_low", "noise_high"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise ValueError(f"{name}: must be a finite number, got {v!r}")
        if not self.noise_low < self.noise_high:
            raise ValueError(f"noise_high: must exceed noise_low={self.noise_low!r}, "
                             f"got {self.noise_high!r}")
        check_choice(self.sampler, "sampler", SAMPLERS)
        check_int_range(self.n_steps, "n_steps", 1)
        check_positive(self.step_size, "step_size")
        if self.noise is not None:
            check_nonnegative(self.noise, "noise")
        if self.grad_clip_x is not None:
            check_positive(self.grad_clip_x, "grad_clip_x")
        if self.clamp is not None:
            ok = (len(self.clamp) == 2 and all(isinstance(c, (int, float)) for c in self.clamp)
                  and self.clamp[0] < self.clamp[1])
            if not ok:
                raise ValueError(f"clamp: expected (low, high) with low < high, got {self.clamp!r}")
            self.clamp = (float(self.clamp[0]), float(self.clamp[1]))
        if self.sampler == "mala":
            # MALA is eq. 1 plus a Metropolis test: Du's knobs would break its invariance.
            for name in ("noise", "grad_clip_x", "clamp"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: must be None with sampler='mala' (it would break "
                                     f"MALA's exactness), got {getattr(self, name)!r}")
            if self.transition_every:
                raise ValueError("transition_every: not supported with sampler='mala', got "
                                 f"{self.transition_every}")
        check_nonnegative(self.l2, "l2")
        check_nonnegative(self.kl_weight, "kl_weight")
        check_choice(self.kl_sign, "kl_sign", KL_SIGNS)
        check_int_range(self.kl_steps, "kl_steps", 1, self.n_steps)
        check_int_range(self.kl_chains, "kl_chains", 0, self.batch_size)
        if self.kl_chains and self.transition_every:
            raise ValueError(f"kl_chains: the split sampler run does not support transitions "
                             f"every N steps, got kl_chains={self.kl_chains} with "
                             f"transition_every={self.transition_every}")
        if self.kl_weight > 0 and self.sampler != "ula":
            raise ValueError(f"kl_weight: the KL loss differentiates ULA steps; needs sampler="
                             f"'ula', got kl_weight={self.kl_weight} with sampler={self.sampler!r}")
        check_nonnegative(self.entropy_weight, "entropy_weight")
        if self.entropy_weight > 0 and self.kl_weight == 0:
            raise ValueError(f"entropy_weight: the entropy term is part of the KL loss; set "
                             f"kl_weight > 0, got entropy_weight={self.entropy_weight}")
        check_choice(self.entropy_estimator, "entropy_estimator", ENTROPY_ESTIMATORS)
        check_int_range(self.entropy_reference, "entropy_reference", 1,
                        self.buffer_size if self.entropy_weight > 0 else None)
        check_positive(self.lr, "lr")
        if not (len(self.betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1
                                             for b in self.betas)):
            raise ValueError(f"betas: expected two numbers in [0, 1), got {self.betas!r}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        if self.weight_grad_clip is not None:
            check_positive(self.weight_grad_clip, "weight_grad_clip")
        if not isinstance(self.transition_on_read, bool):
            raise ValueError(  # noqa: TRY004 - the project reports bad config as ValueError
                f"transition_on_read: must be a bool, got {self.transition_on_read!r}")
        check_int_range(self.transition_every, "transition_every", 0, self.n_steps)
        check_int_range(self.log_every, "log_every", 1)
        check_int_range(self.ckpt_every, "ckpt_every", 0)
        check_positive(self.max_energy, "max_energy")

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    """What :func:`train` returns: the final step, this session's metric records, the buffer
    (``None`` for ``init="cd"``) and the path of the last checkpoint (``None`` without out_dir)."""

    step: int
    history: list[dict] = field(default_factory=list)
    buffer: ReplayBuffer | None = None
    checkpoint: Path | None = None


class _DataSource:
    """Minibatches x⁺: random rows of a tensor (with the run's generator, reproducible), or the
    items of an iterable (restarted when exhausted; ``(x, y)`` pairs keep x)."""

    def __init__(self, data: Tensor | Iterable, batch_size: int, device, dtype):
        self.batch_size, self.device, self.dtype = batch_size, device, dtype
        if isinstance(data, Tensor):
            if data.ndim < 2 or data.shape[0] == 0:
                raise ValueError(f"data: expected a tensor (N, *event) with N >= 1, got shape "
                                 f"{tuple(data.shape)}")
            if not torch.isfinite(data).all():
                raise ValueError("data: must be finite (no NaN or inf)")
            self.tensor: Tensor | None = data.to(device=device, dtype=dtype)
            self.iterable = None
        elif isinstance(data, Iterable):
            self.tensor, self.iterable = None, data
            self._it: Iterator | None = None
        else:
            raise ValueError(  # noqa: TRY004 - bad arguments are ValueErrors here
                f"data: expected a Tensor or an iterable of batches, got {type(data)}")

    @property
    def event_shape(self) -> tuple[int, ...] | None:
        return None if self.tensor is None else tuple(self.tensor.shape[1:])

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


def _make_buffer(config: TrainConfig, event_shape, device, dtype) -> ReplayBuffer | None:
    if config.init == "cd":
        return None
    noise = UniformNoise(event_shape, config.noise_low, config.noise_high, dtype, device)
    ctx = distributed.current()  # one buffer shard per rank (ebmref.distributed)
    return ReplayBuffer(ctx.shard(config.buffer_size, "buffer_size"), config.init,
                        config.reinit_prob, config.data_fraction, config.replacement,
                        noise_fn=noise, device=device,
                        seed=distributed.rank_seed(config.seed, ctx.rank))


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records written after the checkpoint we resume from (they will be recomputed)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))


def _check_resumable(saved: dict, config: TrainConfig) -> None:
    current = config.to_dict()
    changed = sorted(k for k in current if k not in RESUMABLE_CHANGES
                     and _jsonable(saved.get(k)) != _jsonable(current[k]))
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise ValueError(f"resume: the config differs from the checkpoint's in {diffs}; only "
                         f"{RESUMABLE_CHANGES} may change")


class _Clamped:
    """transition followed by clamping to the (low, high) box."""

    def __init__(self, transition, clamp: tuple[float, float]):
        self.transition, self.clamp = transition, clamp

    def __call__(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        return self.transition(x, generator).clamp(self.clamp[0], self.clamp[1])


def _where(last_ckpt: Path | None) -> str:
    return (f"; last good checkpoint: {last_ckpt}" if last_ckpt is not None
            else "; no checkpoint written yet")


def _check_quantities(step: int, energies, others, max_energy: float,
                      last_ckpt: Path | None) -> None:
    """Raise TrainingDiverged for a non-finite quantity or an |energy| above ``max_energy``."""
    for name, value in energies:
        if not math.isfinite(value):
            raise TrainingDiverged(step, name, value, _where(last_ckpt))
        if value > max_energy:
            raise TrainingDiverged(step, name, value,
                                   f" > max_energy={max_energy}{_where(last_ckpt)}")
    for name, value in others:
        if not math.isfinite(value):
            raise TrainingDiverged(step, name, value, _where(last_ckpt))


def _save_on_main(ctx: distributed.DistContext, state: dict, path: Path) -> Path:
    """Only rank 0 writes checkpoints; every rank gets the path back."""
    return save_checkpoint(state, path) if ctx.is_main else path


def _jsonable(v):
    return json.loads(json.dumps(v))


def train(
    energy: Energy,
    data: Tensor | Iterable,
    config: TrainConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    callback: Callable[[int, dict], None] | None = None,
    *,
    transition: Callable[[Tensor, torch.Generator | None], Tensor] | None = None,
) -> TrainResult:
    """Train ``energy`` on ``data`` with ``config`` (module docstring for the step).

    Args:
        energy: E_θ (moved to the config's device and dtype in place).
        data: a tensor (N, *event) — minibatches drawn with the run's generator, so runs and
            resumptions are reproducible — or an iterable of batches (resumption then restarts
            the iterable and is not bitwise).
        out_dir: where config.json, metrics.jsonl and checkpoint.pt go (``None``: nothing
            written, no checkpoints).
        resume: continue from ``out_dir/checkpoint.pt`` if it exists (the config must match it
            except for the fields in ``RESUMABLE_CHANGES``).
        callback: called as ``callback(step, record)`` at every logged step.
        transition: ``(x, generator) → x`` used on chain starts (``transition_on_read``) and/or
            every ``transition_every`` sampler steps.

    Raises:
        ValueError: invalid config/data/arguments, before any work.
        TrainingDiverged: a non-finite or exploding quantity; the last checkpoint is intact.
    """
    config.validate()
    if not isinstance(energy, Energy):
        raise ValueError(  # noqa: TRY004 - bad arguments are ValueErrors here
            f"energy: expected an ebmref.energy.Energy, got {type(energy)}")
    if (config.transition_on_read or config.transition_every) and transition is None:
        raise ValueError("transition: config asks for transitions (transition_on_read/"
                         "transition_every) but no transition callable was given")
    if resume and out_dir is None:
        raise ValueError("resume: needs out_dir, got out_dir=None")
    # torchrun: join the process group (no-op in a single process); rank r trains on its own
    # share of the batch with its own generator and buffer shard, gradients are averaged.
    ctx = distributed.init_from_env()
    device, dtype = config.resolved_device(), DTYPES[config.dtype]
    source = _DataSource(data, ctx.shard(config.batch_size, "batch_size"), device, dtype)
    recorded_transition = repr(transition)
    if transition is not None and config.clamp is not None:
        # Chain states live in the clamp box; a transition (e.g. a cubic-spline elastic
        # deformation, which overshoots) must not carry them out of it.
        transition = _Clamped(transition, config.clamp)
    energy.to(device=device, dtype=dtype)
    energy.train()

    generator = torch.Generator(device=device).manual_seed(
        distributed.rank_seed(config.seed, ctx.rank))
    optimizer = torch.optim.Adam(energy.parameters(), lr=config.lr, betas=config.betas)
    buffer: ReplayBuffer | None = None
    if source.event_shape is not None:
        buffer = _make_buffer(config, source.event_shape, device, dtype)
    step = 0
    resumed = False

    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / CHECKPOINT_NAME if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if resume and ckpt_path.exists():
            state = load_checkpoint(ckpt_path, map_location=device)
            _check_resumable(state["config"], config)
            energy.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(distributed.generator_state_for_rank(
                state["rng"].get("generators"), state["rng"]["generator"], ctx, config.seed,
                int(state["step"]), device).cpu())
            if state["buffer"] is not None:
                if buffer is None:  # iterable data: event shape known from the saved buffer
                    buffer = _make_buffer(config, tuple(state["buffer"]["storage"].shape[1:]),
                                          device, dtype)
                buffer.load_state_dict(distributed.buffer_state_for_rank(
                    state["buffer"], state.get("buffer_shards"), ctx, config.seed, device))
            step = int(state["step"])
            resumed = True
            if ctx.is_main:
                _truncate_metrics(out / METRICS_NAME, step)
        elif not resume and ctx.is_main:
            (out / METRICS_NAME).unlink(missing_ok=True)
        record_config = {**config.to_dict(), "resolved_device": str(device),
                         "transition": recorded_transition, "energy": type(energy).__name__}
        if ctx.is_main:
            (out / CONFIG_NAME).write_text(json.dumps(record_config, indent=2) + "\n")
    # Under torchrun: DDP (broadcasts rank 0's θ now, averages weight gradients in backward).
    # Only the loss forwards go through it; the sampler calls the bare module (∇ₓE only).
    model = distributed.data_parallel(energy)

    def snapshot(copy_tensors: bool) -> dict:
        """The full training state after ``step`` updates (copied when it must outlive them)."""
        model = energy.state_dict()
        opt = optimizer.state_dict()
        if copy_tensors:
            model = {k: v.detach().clone() for k, v in model.items()}
            opt = copy.deepcopy(opt)
        state = {"step": step, "model": model, "optimizer": opt,
                 "buffer": None if buffer is None else buffer.state_dict(),
                 "rng": {"generator": generator.get_state()}, "config": config.to_dict()}
        if ctx.enabled:  # every rank's buffer shard and generator (collectives: all ranks call)
            state["buffer"], state["buffer_shards"] = distributed.gather_buffer_states(
                state["buffer"])
            state["rng"]["generators"] = distributed.gather_objects(generator.get_state())
        return state

    history: list[dict] = []
    params = [p for p in energy.parameters() if p.requires_grad]
    max_norm = config.weight_grad_clip if config.weight_grad_clip is not None else math.inf
    bar = tqdm(total=config.steps, initial=step, disable=not (config.progress and ctx.is_main),
               desc="train")
    t0 = time.perf_counter()
    start_step = step
    pending: dict | None = None
    last_ckpt = ckpt_path if resumed else None  # a stale file of an earlier run is not "ours"
    while step < config.steps:
        current = step + 1  # 1-based index of the update being computed
        x_pos = source.next(generator)

        # Chain starts (§5.1.1): buffer policy, or the data batch itself for CD-k.
        if config.init == "cd":
            x0 = x_pos.detach().clone()
        else:
            if buffer is None:
                buffer = _make_buffer(config, tuple(x_pos.shape[1:]), device, dtype)
            pool = source.tensor if source.tensor is not None else x_pos
            x0, _ = buffer.sample(config.batch_size, generator, data=pool)
        if config.transition_on_read:
            x0 = transition(x0, generator)

        # Sampler: the last kl_steps ULA steps keep their graph when the KL loss is on (§5.4.2).
        acceptance = None
        x_diff = None
        if config.sampler == "mala":
            out_s = mala(energy, x0, config.n_steps, config.step_size, generator=generator)
            acceptance, x_neg = out_s.acceptance, out_s.x.detach()
        else:
            ula = {"generator": generator, "grad_clip": config.grad_clip_x, "clamp": config.clamp,
                   "transition": transition if config.transition_every else None,
                   "transition_every": config.transition_every}
            kl_on = config.kl_weight > 0
            if kl_on and 0 < config.kl_chains < config.batch_size:
                # Du et al. (2020): all chains detached; the last kl_steps rerun with a graph
                # on a subset of chains only (fresh noise), which bounds the memory.
                x_mid = langevin(energy, x0, config.n_steps - config.kl_steps,
                                 config.step_size, config.noise, **ula).x
                x_neg = langevin(energy, x_mid, config.kl_steps, config.step_size,
                                 config.noise, **ula).x
                x_diff = langevin(energy, x_mid[:config.kl_chains], config.kl_steps,
                                  config.step_size, config.noise,
                                  differentiable_steps=config.kl_steps, **ula).x
            else:
                out_x = langevin(energy, x0, config.n_steps, config.step_size, config.noise,
                                 differentiable_steps=config.kl_steps if kl_on else 0,
                                 **ula).x
                x_neg = out_x.detach()
                x_diff = out_x if kl_on else None
        # The entropy reference is drawn from past chain ends, before x⁻ joins the buffer
        # (a point is not its own nearest neighbour).
        reference = None
        if config.kl_weight > 0 and config.entropy_weight > 0 and buffer is not None:
            reference = buffer.peek(config.entropy_reference, generator)
        if buffer is not None:
            buffer.push(x_neg, generator)

        # Loss (eq. 3 + L2) and optional KL loss (§5.4).
        e_pos, e_neg = model(x_pos), model(x_neg)
        loss_c = contrastive_loss(e_pos, e_neg, config.l2)
        loss = loss_c
        loss_kl = torch.zeros((), device=device, dtype=dtype)
        if config.kl_weight > 0:
            loss_kl = kl_loss(energy, x_diff, sign=config.kl_sign,
                              entropy_weight=config.entropy_weight, reference=reference,
                              entropy=config.entropy_estimator)
            loss = loss + config.kl_weight * loss_kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)

        # One host sync per update: divergence checks and metrics.
        with torch.no_grad():
            stats = distributed.all_reduce_stats(torch.stack([
                e_pos.detach().abs().max(), e_neg.detach().abs().max(),
                torch.isfinite(x_neg).all().to(dtype), loss.detach(), grad_norm.to(dtype),
                e_pos.detach().mean(), e_neg.detach().mean(), loss_c.detach(), loss_kl.detach(),
                acceptance.mean() if acceptance is not None else torch.zeros((), dtype=dtype,
                                                                              device=device),
            ]), maxima=(0, 1), minima=(2,)).tolist()
        (abs_pos, abs_neg, x_ok, loss_v, gnorm, mean_pos, mean_neg, loss_c_v, loss_kl_v,
         acc_v) = stats
        if x_ok != 1.0:
            raise TrainingDiverged(current, "samples x⁻ (non-finite entries)", float("nan"),
                                   _where(last_ckpt))
        _check_quantities(current, (("|energy| of data E(x⁺)", abs_pos),
                                    ("|energy| of samples E(x⁻)", abs_neg)),
                          (("loss", loss_v), ("weight-gradient norm", gnorm)),
                          config.max_energy, last_ckpt)
        # θ_{step} (and the state captured with it) just passed the checks: now it is "good".
        if pending is not None:
            last_ckpt = _save_on_main(ctx, pending, ckpt_path)
            pending = None
        optimizer.step()
        step = current
        bar.update(1)

        if step % config.log_every == 0:
            record = {"step": step, "loss": loss_v, "loss_contrastive": loss_c_v,
                      "loss_kl": loss_kl_v, "energy_data": mean_pos, "energy_samples": mean_neg,
                      "grad_norm": gnorm, "time_s": time.perf_counter() - t0}
            if acceptance is not None:
                record["acceptance"] = acc_v
            history.append(record)
            if out is not None and ctx.is_main:
                with open(out / METRICS_NAME, "a") as f:
                    f.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{loss_v:.3g}", e_data=f"{mean_pos:.3g}",
                            e_samp=f"{mean_neg:.3g}")
            if callback is not None:
                callback(step, record)
        if (ckpt_path is not None and config.ckpt_every and step % config.ckpt_every == 0
                and step < config.steps):
            # Written only once θ_step has produced finite, bounded energies at the next step,
            # so a checkpoint on disk never holds parameters that already diverged.
            pending = snapshot(copy_tensors=True)
    bar.close()
    if step > start_step:
        # Validate the final parameters on the last batches; eval mode so that e.g. spectral
        # norm's power iteration does not advance (resumed runs must match uninterrupted ones).
        energy.eval()
        with torch.no_grad():
            final = distributed.all_reduce_stats(torch.stack(
                [energy(x_pos).abs().max(), energy(x_neg).abs().max()]), maxima=(0, 1)).tolist()
        energy.train()
        _check_quantities(step, (("|energy| of data E(x⁺) after the final update", final[0]),
                                 ("|energy| of samples E(x⁻) after the final update", final[1])),
                          (), config.max_energy, last_ckpt)
        if ckpt_path is not None:
            last_ckpt = _save_on_main(ctx, snapshot(copy_tensors=False), ckpt_path)
    distributed.barrier()  # the checkpoint is on disk before any rank returns
    return TrainResult(step=step, history=history, buffer=buffer, checkpoint=last_ckpt)
