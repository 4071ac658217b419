"""The configuration of :func:`ebmref.training.train`, nested by what each part configures.

``TrainConfig`` = ``sampler`` (how negatives are drawn, paper §2.3, §5.3) + ``buffer`` (where
chains start, §5.1.1, §6.1) + ``kl`` (the auxiliary KL loss, §5.4) + ``optim`` (the loss's
energy penalty and Adam, §8.4) + ``run`` (updates, batch, seed, device, logging). Each group
validates itself; :meth:`TrainConfig.validate` adds the checks that span groups. Errors are
``ValueError`` naming the field by its dotted path (``"sampler.step_size: ..."``).

Defaults follow IGEBM on MNIST (Du & Mordatch, 2019) and the paper's §8.4. Dotted paths
(``"sampler.n_steps"``) address fields in :func:`with_overrides`, in presets and on the command
line (:mod:`ebmref.cli`); :data:`FLAT_NAMES` maps the flat names of earlier versions onto them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ebmref.buffer import INIT_POLICIES, REPLACEMENTS
from ebmref.objectives import ENTROPY_ESTIMATORS, KL_SIGNS
from ebmref.validation import (
    check_bool,
    check_choice,
    check_int_range,
    check_nonnegative,
    check_pair,
    check_positive,
    check_probability,
)

SAMPLERS = ("ula", "mala")
CHAIN_INITS = (*INIT_POLICIES, "cd")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class SamplerConfig:
    """The sampler of the negatives (§2.3, §5.3.1).

    kind: ``"ula"`` (:func:`ebmref.samplers.langevin`) or ``"mala"``
        (:func:`ebmref.samplers.mala`).
    n_steps: sampler steps per chain run. step_size: λ of eq. 1, or α of Du's step.
    noise: σ of Du's decoupled step x − α∇E + σξ; ``None`` selects eq. 1 (required for MALA).
    grad_clip: clip each entry of ∇ₓE to [−c, c] (IGEBM: 0.01). clamp: (low, high) box for x.
    transition_every: apply the run's transition every N sampler steps (0: never, §5.3.2).
    """

    kind: str = "ula"
    n_steps: int = 60
    step_size: float = 10.0
    noise: float | None = 0.005
    grad_clip: float | None = 0.01
    clamp: tuple[float, float] | None = (0.0, 1.0)
    transition_every: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_choice(self.kind, "sampler.kind", SAMPLERS)
        check_int_range(self.n_steps, "sampler.n_steps", 1)
        check_positive(self.step_size, "sampler.step_size")
        if self.noise is not None:
            check_nonnegative(self.noise, "sampler.noise")
        if self.grad_clip is not None:
            check_positive(self.grad_clip, "sampler.grad_clip")
        if self.clamp is not None:
            self.clamp = check_pair(self.clamp, "sampler.clamp", increasing=True)
        check_int_range(self.transition_every, "sampler.transition_every", 0, self.n_steps)
        if self.kind == "mala":
            # MALA is eq. 1 plus a Metropolis test: Du's knobs would break its invariance.
            for name in ("noise", "grad_clip", "clamp"):
                if getattr(self, name) is not None:
                    raise ValueError(f"sampler.{name}: must be None with sampler.kind='mala' (it "
                                     f"would break MALA's exactness), got {getattr(self, name)!r}")
            if self.transition_every:
                raise ValueError("sampler.transition_every: not supported with sampler.kind="
                                 f"'mala', got {self.transition_every}")

    def langevin_kwargs(self) -> dict:
        """The keyword arguments of :func:`ebmref.samplers.langevin` this config sets."""
        return {"grad_clip": self.grad_clip, "clamp": self.clamp}


@dataclass
class BufferConfig:
    """Where chains start (§5.1.1, §6.1): the replay buffer's policy, or CD-k's data batch.

    init: ``"noise"`` (Du's NLL buffer with re-initialisation), ``"data"`` (PCD), ``"true_cd"``
        (the paper's true CD), ``"cd"`` (CD-k: chains start at the data batch, no buffer).
    size: stored states; reinit_prob (``"noise"``); data_fraction (``"true_cd"``);
    replacement: ``"fifo"`` | ``"reservoir"``; noise_low/noise_high: the uniform noise box.
    transition_on_read: apply the run's transition to every chain start (§5.3.2).
    """

    init: str = "noise"
    size: int = 10_000
    reinit_prob: float = 0.05
    data_fraction: float = 0.1
    replacement: str = "fifo"
    noise_low: float = 0.0
    noise_high: float = 1.0
    transition_on_read: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_choice(self.init, "buffer.init", CHAIN_INITS)
        check_int_range(self.size, "buffer.size", 1)
        check_probability(self.reinit_prob, "buffer.reinit_prob")
        check_probability(self.data_fraction, "buffer.data_fraction")
        check_choice(self.replacement, "buffer.replacement", REPLACEMENTS)
        for name in ("noise_low", "noise_high"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)):
                raise ValueError(f"buffer.{name}: must be a finite number, got {v!r}")
        if not self.noise_low < self.noise_high:
            raise ValueError(f"buffer.noise_high: must exceed buffer.noise_low="
                             f"{self.noise_low!r}, got {self.noise_high!r}")
        check_bool(self.transition_on_read, "buffer.transition_on_read")


@dataclass
class KLConfig:
    """The auxiliary KL loss of Du et al. (2020) (§5.4); off while ``weight`` is 0.

    sign: ``"du2020"`` (published, minimises KL[q‖p]) | ``"cd"`` (the sign CD needs, §4.2).
    differentiable_steps: the last sampler steps that keep their graph (§5.4.2; Du: 1).
    n_chains: 0 — the loss uses every chain; k > 0 — the last ``differentiable_steps`` are rerun
        with a graph on the first k chains only (Du et al. 2020 use 32, to save memory).
    entropy_weight, entropy_estimator (``"nn"`` | ``"kl"``), entropy_reference (buffer states
        the entropy is measured against).
    """

    weight: float = 0.0
    sign: str = "du2020"
    differentiable_steps: int = 1
    n_chains: int = 0
    entropy_weight: float = 0.0
    entropy_estimator: str = "nn"
    entropy_reference: int = 100

    def __post_init__(self) -> None:
        self.validate()

    @property
    def enabled(self) -> bool:
        return self.weight > 0

    def validate(self) -> None:
        check_nonnegative(self.weight, "kl.weight")
        check_choice(self.sign, "kl.sign", KL_SIGNS)
        check_int_range(self.differentiable_steps, "kl.differentiable_steps", 1)
        check_int_range(self.n_chains, "kl.n_chains", 0)
        check_nonnegative(self.entropy_weight, "kl.entropy_weight")
        if self.entropy_weight > 0 and self.weight == 0:
            raise ValueError(f"kl.entropy_weight: the entropy term is part of the KL loss; set "
                             f"kl.weight > 0, got kl.entropy_weight={self.entropy_weight}")
        check_choice(self.entropy_estimator, "kl.entropy_estimator", ENTROPY_ESTIMATORS)
        check_int_range(self.entropy_reference, "kl.entropy_reference", 1)


@dataclass
class OptimConfig:
    """The loss's energy penalty and the optimiser (§8.4): l2 (Du & Mordatch's penalty on
    E², eq. 3), Adam's lr and betas (β₁ = 0 as in IGEBM), max_grad_norm (clip the ℓ2 norm of
    ∇_θ; ``None``: off)."""

    l2: float = 1.0
    lr: float = 1e-4
    betas: tuple[float, float] = (0.0, 0.999)
    max_grad_norm: float | None = 0.1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_nonnegative(self.l2, "optim.l2")
        check_positive(self.lr, "optim.lr")
        self.betas = check_pair(self.betas, "optim.betas", low=0.0, high_open=1.0)
        if self.max_grad_norm is not None:
            check_positive(self.max_grad_norm, "optim.max_grad_norm")


@dataclass
class RunConfig:
    """n_updates (optimiser steps), batch_size, seed, device (``"auto"``: cuda if available),
    dtype, log_every, ckpt_every (0: only at the end), max_energy (divergence threshold on |E|),
    progress (a tqdm bar)."""

    n_updates: int = 1000
    batch_size: int = 128
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    log_every: int = 10
    ckpt_every: int = 100
    max_energy: float = 1e6
    progress: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_int_range(self.n_updates, "run.n_updates", 1)
        check_int_range(self.batch_size, "run.batch_size", 1)
        check_int_range(self.seed, "run.seed", 0)
        if not (isinstance(self.device, str) and (self.device in ("auto", "cpu")
                                                   or self.device.startswith("cuda"))):
            raise ValueError(f"run.device: must be 'auto', 'cpu' or 'cuda[:i]', "
                             f"got {self.device!r}")
        check_choice(self.dtype, "run.dtype", tuple(DTYPES))
        check_int_range(self.log_every, "run.log_every", 1)
        check_int_range(self.ckpt_every, "run.ckpt_every", 0)
        check_positive(self.max_energy, "run.max_energy")
        check_bool(self.progress, "run.progress")

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


# Fields that may change between a checkpoint and its resumption.
RESUMABLE_CHANGES = ("run.n_updates", "run.log_every", "run.ckpt_every", "run.progress",
                     "run.max_energy")


@dataclass
class TrainConfig:
    """Every knob of :func:`ebmref.training.train`, by group (module docstring)."""

    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    kl: KLConfig = field(default_factory=KLConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Each group's own checks, then the ones that span groups."""
        for name in ("sampler", "buffer", "kl", "optim", "run"):
            getattr(self, name).validate()
        s, b, kl, batch = self.sampler, self.buffer, self.kl, self.run.batch_size
        if b.init != "cd":
            check_int_range(batch, "run.batch_size", 1, b.size)
        check_int_range(kl.differentiable_steps, "kl.differentiable_steps", 1, s.n_steps)
        check_int_range(kl.n_chains, "kl.n_chains", 0, batch)
        if kl.n_chains and s.transition_every:
            raise ValueError(f"kl.n_chains: the split sampler run does not support transitions "
                             f"every N steps, got kl.n_chains={kl.n_chains} with "
                             f"sampler.transition_every={s.transition_every}")
        if kl.enabled and s.kind != "ula":
            raise ValueError(f"kl.weight: the KL loss differentiates ULA steps; needs "
                             f"sampler.kind='ula', got kl.weight={kl.weight} with "
                             f"sampler.kind={s.kind!r}")
        if kl.entropy_weight > 0:
            check_int_range(kl.entropy_reference, "kl.entropy_reference", 1, b.size)

    @property
    def uses_transition(self) -> bool:
        return self.buffer.transition_on_read or self.sampler.transition_every > 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def differences(self, other: TrainConfig, ignore: tuple[str, ...] = ()
                    ) -> dict[str, tuple[Any, Any]]:
        """{dotted path: (self's value, other's value)} for every field that differs (tuples
        and lists compare equal), except the paths in ``ignore``."""
        mine, theirs = _flat(self.to_dict()), _flat(other.to_dict())
        return {k: (mine[k], theirs[k]) for k in field_paths(TrainConfig)
                if k not in ignore and mine[k] != theirs[k]}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """The inverse of :meth:`to_dict`; also reads the flat configs of earlier versions
        (:data:`FLAT_NAMES`), as stored in their checkpoints."""
        if not any(isinstance(v, Mapping) for v in values.values()):
            return with_overrides(cls(), {FLAT_NAMES[k]: v for k, v in values.items()
                                          if k in FLAT_NAMES})
        return cls(**{name: group(**values.get(name, {})) for name, group in _GROUPS.items()})


_GROUPS = {"sampler": SamplerConfig, "buffer": BufferConfig, "kl": KLConfig,
           "optim": OptimConfig, "run": RunConfig}

FLAT_NAMES: dict[str, str] = {
    "steps": "run.n_updates", "batch_size": "run.batch_size", "seed": "run.seed",
    "device": "run.device", "dtype": "run.dtype", "log_every": "run.log_every",
    "ckpt_every": "run.ckpt_every", "max_energy": "run.max_energy", "progress": "run.progress",
    "init": "buffer.init", "buffer_size": "buffer.size", "reinit_prob": "buffer.reinit_prob",
    "data_fraction": "buffer.data_fraction", "replacement": "buffer.replacement",
    "noise_low": "buffer.noise_low", "noise_high": "buffer.noise_high",
    "transition_on_read": "buffer.transition_on_read", "sampler": "sampler.kind",
    "n_steps": "sampler.n_steps", "step_size": "sampler.step_size", "noise": "sampler.noise",
    "grad_clip_x": "sampler.grad_clip", "clamp": "sampler.clamp",
    "transition_every": "sampler.transition_every", "l2": "optim.l2", "lr": "optim.lr",
    "betas": "optim.betas", "weight_grad_clip": "optim.max_grad_norm", "kl_weight": "kl.weight",
    "kl_sign": "kl.sign", "kl_steps": "kl.differentiable_steps", "kl_chains": "kl.n_chains",
    "entropy_weight": "kl.entropy_weight", "entropy_estimator": "kl.entropy_estimator",
    "entropy_reference": "kl.entropy_reference",
}
"""Flat field names of earlier ebmref versions → dotted paths (old checkpoints, CLI aliases)."""


def with_overrides(config, overrides: Mapping[str, Any]):
    """A copy of the dataclass ``config`` with fields set by dotted path (``"sampler.noise"``),
    validated once at the end. Raises ValueError naming an unknown path."""
    config = _deep_copy(config)
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        target = config
        for p in parents:
            target = getattr(target, p, None) if dataclasses.is_dataclass(target) else None
        if not (dataclasses.is_dataclass(target)
                and leaf in {f.name for f in dataclasses.fields(target)}):
            raise ValueError(f"overrides: unknown field {path!r}; allowed: "
                             f"{', '.join(field_paths(type(config)))}")
        object.__setattr__(target, leaf, value)
    return _deep_copy(config)  # rebuilding runs every group's __post_init__ validation


def field_paths(cls: type, prefix: str = "") -> list[str]:
    """Every leaf field of the dataclass ``cls`` as a dotted path."""
    out = []
    for f in dataclasses.fields(cls):
        sub = nested_type(f)
        out += field_paths(sub, f"{prefix}{f.name}.") if sub else [prefix + f.name]
    return out


def nested_type(f: dataclasses.Field) -> type | None:
    """The dataclass type of a nested-config field (its default factory builds one), else
    ``None`` for a leaf field."""
    if f.default_factory is not dataclasses.MISSING:
        made = f.default_factory()
        return type(made) if dataclasses.is_dataclass(made) else None
    return None


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{dotted path: value} of a nested dict, tuples as lists (as JSON would store them)."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = list(v) if isinstance(v, tuple) else v
    return out


def _deep_copy(config):
    """A fresh copy of a (nested) dataclass config, each part rebuilt through its __init__."""
    changes = {f.name: _deep_copy(getattr(config, f.name)) for f in dataclasses.fields(config)
               if dataclasses.is_dataclass(getattr(config, f.name))}
    return dataclasses.replace(config, **changes)
