"""Training presets of the section-6 experiments and the command-line mapping onto them.

A run is a :class:`ebmref.config.TrainConfig` (the library's training loop, every field) plus a
:class:`ModelConfig` (which energy network, which transition). A preset sets some fields of
both; the command line can override *any* field (``--sampler.n-steps 30``, ``--model.width 16``),
the parser being generated from the two dataclasses (:mod:`ebmref.cli`).

Presets (paper §6 and the published IGEBM / Du et al. 2020 code):

* ``nll`` — IGEBM (Du & Mordatch 2019) on MNIST: buffer of 10k noise images, 5 % re-initialised
  to noise at each read (NLL, §5.1.1), 60 Langevin steps x − 10∇E + 0.005ξ with ∇ clipped to
  ±0.01, clamp [0, 1], L2 1.0 on energies, Adam β=(0, .999) lr 1e-4, weight-gradient clip 0.1.
* ``true_cd`` — §6.1: the buffer starts from data and 10 % of every read is re-picked from the
  dataset; nothing else changed (no tricks).
* ``kl_cd_sign`` — §6.1's second experiment: ``true_cd`` plus the KL loss with the sign CD
  requires (``kl.sign="cd"``, weight 1, last step differentiated on 32 chains).
* ``du2020`` — Du et al. (2020)'s tricks on the NLL buffer: KL loss with the published sign
  (``"du2020"``, last step differentiated on 32 chains as Du et al.'s MNIST code) and the
  −0.3·mean log NN entropy term against 100 buffer samples, random-crop
  augmentation on every buffer read, reservoir buffer with 1 % re-initialisation (the paper's
  §5.1.1 value), Adam β=(0, .9) lr 2e-4. The sampler stays IGEBM's (step 10, noise 0.005) so
  that only the tricks differ from ``nll``.
* ``du2020_code`` — ``du2020`` with the re-initialisation probability of Du et al.'s released
  code, 0.1 %.
* ``elastic`` — §6.3: ``nll`` plus an elastic deformation of every image read from the buffer
  (at test time ``mnist.sample --sampler.transition-every 100``).
* ``tiny`` — seconds on a CPU (tests, smoke runs): narrow net, 4 sampler steps, 3 updates.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from ebmref.cli import add_config_arguments
from ebmref.config import FLAT_NAMES, TrainConfig, with_overrides
from ebmref.transitions import Augment, ElasticDeform, GridElasticDeform
from ebmref.validation import check_choice, check_int_range, check_nonnegative
from mnist.models import ARCH_ALIASES, ARCHS, build_energy

TRANSITIONS = ("none", "elastic", "elastic_cpu", "augment")


@dataclass
class ModelConfig:
    """The energy network and the transition used by a run.

    arch: ``"igebm"`` (the paper's net at width 64, same topology at other ``width``s),
        ``"multiscale"`` (sum over 28/14/7 resolutions, §5.2.1).
    transition: ``"elastic"`` (batched grid_sample on the run's device,
        :class:`ebmref.transitions.GridElasticDeform`), ``"elastic_cpu"`` (elasticdeform on the
        CPU, :class:`ebmref.transitions.ElasticDeform`), ``"augment"`` (random crops,
        :class:`ebmref.transitions.Augment`) or ``"none"``.
    elastic_sigma / elastic_points: displacement std (pixels) and control grid size.
    crop_scale_low: smallest crop area fraction of ``"augment"``.
    bf16: run the training loop under CUDA bf16 autocast (off by default: not measured here).
    """

    arch: str = "igebm"
    width: int = 64
    spectral_norm: bool = False
    transition: str = "none"
    elastic_sigma: float = 1.0
    elastic_points: int = 3
    crop_scale_low: float = 0.7
    bf16: bool = False

    def __post_init__(self):
        self.arch = ARCH_ALIASES.get(self.arch, self.arch)
        check_choice(self.arch, "arch", ARCHS)
        check_int_range(self.width, "width", 1)
        check_choice(self.transition, "transition", TRANSITIONS)
        check_nonnegative(self.elastic_sigma, "elastic_sigma")
        check_int_range(self.elastic_points, "elastic_points", 2)
        if not 0 < self.crop_scale_low <= 1:
            raise ValueError(f"crop_scale_low: must lie in (0, 1], got {self.crop_scale_low!r}")

    def build_energy(self):
        return build_energy(self.arch, self.width, self.spectral_norm)

    def build_transition(self):
        if self.transition == "elastic":
            return GridElasticDeform(self.elastic_sigma, self.elastic_points)
        if self.transition == "elastic_cpu":
            return ElasticDeform(self.elastic_sigma, self.elastic_points)
        if self.transition == "augment":
            return Augment(crop_scale=(self.crop_scale_low, 1.0))
        return None


@dataclass
class RunSpec:
    """What a preset configures: the training loop (every field) and the model."""

    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)


_KL = {"kl.weight": 1.0, "kl.differentiable_steps": 1, "kl.n_chains": 32}
# Du et al. (2020): re-initialisation 1 % as the paper states (§5.1.1); their code uses 0.1 %
# (preset du2020_code).
_DU2020 = {**_KL, "kl.sign": "du2020", "kl.entropy_weight": 0.3, "kl.entropy_reference": 100,
           "buffer.reinit_prob": 0.01, "buffer.replacement": "reservoir",
           "buffer.transition_on_read": True, "optim.lr": 2e-4, "optim.betas": (0.0, 0.9),
           "model.transition": "augment"}
PRESETS: dict[str, dict[str, object]] = {
    "nll": {},
    "true_cd": {"buffer.init": "true_cd", "buffer.data_fraction": 0.1},
    "kl_cd_sign": {"buffer.init": "true_cd", "buffer.data_fraction": 0.1, **_KL,
                   "kl.sign": "cd"},
    "du2020": _DU2020,
    "du2020_code": {**_DU2020, "buffer.reinit_prob": 0.001},
    "elastic": {"buffer.transition_on_read": True, "model.transition": "elastic"},
    "tiny": {"run.n_updates": 3, "run.batch_size": 8, "buffer.size": 64, "sampler.n_steps": 4,
             "run.log_every": 1, "run.ckpt_every": 2, "run.progress": False, "run.device": "cpu",
             "model.arch": "igebm", "model.width": 4},
}
"""Each preset as dotted-path overrides of the defaults (``model.*``: the ModelConfig)."""


def resolve(preset: str, overrides: dict | None = None) -> tuple[TrainConfig, ModelConfig]:
    """Preset values, then ``overrides`` {dotted path: value} (``model.*`` for the model)."""
    check_choice(preset, "preset", tuple(PRESETS))
    values = {**PRESETS[preset], **(overrides or {})}
    spec = with_overrides(RunSpec(),
                          {(k if k.startswith("model.") else "train." + k): v
                           for k, v in values.items()})
    return spec.train, spec.model


def preset_lines(preset: str) -> list[str]:
    """What a preset sets, one ``--option value`` per line (for ``--show-preset``)."""
    check_choice(preset, "preset", tuple(PRESETS))
    return [f"--{k.replace('_', '-')} {v!r}" for k, v in PRESETS[preset].items()]


def train_aliases() -> dict[str, list[str]]:
    """Earlier option spellings: the flat TrainConfig names (``--n_steps``, ``--steps``) and
    the model fields without their prefix (``--arch``, ``--elastic_sigma``)."""
    aliases: dict[str, list[str]] = {}
    for old, path in FLAT_NAMES.items():
        aliases.setdefault(path, []).extend(sorted({f"--{old}", f"--{old.replace('_', '-')}"}))
    for name in ModelConfig.__dataclass_fields__:
        aliases["model." + name] = sorted({f"--{name}", f"--{name.replace('_', '-')}"})
    return aliases


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every TrainConfig and ModelConfig field (default: the preset's)."""
    aliases = train_aliases()
    add_config_arguments(parser, TrainConfig, aliases=aliases)
    add_config_arguments(parser, ModelConfig, prefix="model.", aliases=aliases,
                         title="model: the energy network and the transition")
