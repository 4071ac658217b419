"""Training presets of the section-6 experiments and the command-line mapping onto them.

A run is a :class:`ebmref.training.TrainConfig` (the library's training loop, every field) plus a
:class:`ModelConfig` (which energy network, which transition). A preset sets some fields of
both; the command line can override *any* field (``--field value``), the parser being generated
from the two dataclasses.

Presets (PEERS.md and paper §6):

* ``nll`` — IGEBM (Du & Mordatch 2019) on MNIST: buffer of 10k noise images, 5 % re-initialised
  to noise at each read (NLL, §5.1.1), 60 Langevin steps x − 10∇E + 0.005ξ with ∇ clipped to
  ±0.01, clamp [0, 1], L2 1.0 on energies, Adam β=(0, .999) lr 1e-4, weight-gradient clip 0.1.
* ``true_cd`` — §6.1: the buffer starts from data and 10 % of every read is re-picked from the
  dataset; nothing else changed (no tricks).
* ``kl_cd_sign`` — §6.1's second experiment: ``true_cd`` plus the KL loss with the sign CD
  requires (``kl_sign="cd"``, weight 1, last step differentiated on 32 chains).
* ``du2020`` — Du et al. (2020)'s tricks on the NLL buffer: KL loss with the published sign
  (``"du2020"``, last step differentiated on 32 chains as Du et al.'s MNIST code) and the
  −0.3·mean log NN entropy term against 100 buffer samples, random-crop
  augmentation on every buffer read, reservoir buffer with 0.1 % re-initialisation,
  Adam β=(0, .9) lr 2e-4. The sampler stays IGEBM's (step 10, noise 0.005) so that only the
  tricks differ from ``nll``.
* ``elastic`` — §6.3: ``nll`` plus an elastic deformation of every image read from the buffer
  (at test time ``mnist.sample --elastic-every 100``).
* ``tiny`` — seconds on a CPU (tests, smoke runs): narrow net, 4 sampler steps, 3 updates.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass

from ebmref.training import TrainConfig
from ebmref.transitions import Augment, GridElasticDeform
from ebmref.validation import check_choice, check_int_range, check_nonnegative
from mnist.models import ARCHS, build_energy

TRANSITIONS = ("none", "elastic", "elastic_cpu", "augment")


@dataclass
class ModelConfig:
    """The energy network and the transition used by a run.

    arch: ``"igebm"`` (the paper's net), ``"igebm_narrow"`` (same topology, ``width`` channels),
        ``"multiscale_narrow"`` (sum over 28/14/7 resolutions, §5.2.1).
    transition: ``"elastic"`` (batched grid_sample on the run's device, :class:`ebmref.transitions.GridElasticDeform`),
        ``"elastic_cpu"`` (``ebmref.transitions.ElasticDeform``, elasticdeform on the CPU),
        ``"augment"`` (random crops, ``ebmref.transitions.Augment``) or ``"none"``.
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
        from ebmref.transitions import ElasticDeform

        if self.transition == "elastic":
            return GridElasticDeform(self.elastic_sigma, self.elastic_points)
        if self.transition == "elastic_cpu":
            return ElasticDeform(self.elastic_sigma, self.elastic_points)
        if self.transition == "augment":
            return Augment(crop_scale=(self.crop_scale_low, 1.0))
        return None


PRESETS: dict[str, dict[str, dict]] = {
    "nll": {"train": {}, "model": {}},
    "true_cd": {"train": {"init": "true_cd", "data_fraction": 0.1}, "model": {}},
    "kl_cd_sign": {"train": {"init": "true_cd", "data_fraction": 0.1, "kl_weight": 1.0,
                             "kl_sign": "cd", "kl_steps": 1, "kl_chains": 32}, "model": {}},
    "du2020": {"train": {"kl_weight": 1.0, "kl_sign": "du2020", "kl_steps": 1, "kl_chains": 32,
                         "entropy_weight": 0.3, "entropy_reference": 100,
                         "reinit_prob": 0.001, "replacement": "reservoir",
                         "transition_on_read": True, "lr": 2e-4, "betas": (0.0, 0.9)},
               "model": {"transition": "augment"}},
    "elastic": {"train": {"transition_on_read": True}, "model": {"transition": "elastic"}},
    "tiny": {"train": {"steps": 3, "batch_size": 8, "buffer_size": 64, "n_steps": 4,
                       "log_every": 1, "ckpt_every": 2, "progress": False, "device": "cpu"},
             "model": {"arch": "igebm_narrow", "width": 4}},
}


def _parse(hint, text: str):
    """Parse ``text`` as a value of the (resolved) type ``hint`` of a dataclass field."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if text.strip().lower() in ("none", "null", "off"):
            return None
        inner = [a for a in args if a is not type(None)]
        return _parse(inner[0], text)
    if origin is tuple:
        parts = [p for p in text.replace("(", "").replace(")", "").split(",") if p.strip()]
        if len(parts) != len(args):
            raise argparse.ArgumentTypeError(f"expected {len(args)} comma-separated values, "
                                             f"got {text!r}")
        return tuple(_parse(a, p) for a, p in zip(args, parts))
    if hint is bool:
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")
    if hint is int:
        return int(text)
    if hint is float:
        return float(text)
    return text


def _field_help(f: dataclasses.Field, hint) -> str:
    return f"{getattr(hint, '__name__', str(hint))} (default {f.default!r} before presets)"


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, title: str) -> None:
    """One ``--field`` option per field of the dataclass ``cls`` (absent: not in the namespace)."""
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        group.add_argument(f"--{f.name}", dest=f"cfg_{f.name}", default=argparse.SUPPRESS,
                           type=lambda s, h=hint: _parse(h, s),
                           metavar=f.name.upper(), help=_field_help(f, hint))


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--field`` option per field of TrainConfig and ModelConfig (default: preset's)."""
    add_dataclass_arguments(parser, TrainConfig, "training (ebmref.training.TrainConfig)")
    add_dataclass_arguments(parser, ModelConfig, "model (mnist.presets.ModelConfig)")


def resolve(preset: str, overrides: dict | None = None) -> tuple[TrainConfig, ModelConfig]:
    """Preset values, then ``overrides`` {field: value} (either dataclass's fields)."""
    check_choice(preset, "preset", tuple(PRESETS))
    train_kw, model_kw = dict(PRESETS[preset]["train"]), dict(PRESETS[preset]["model"])
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    for k, v in (overrides or {}).items():
        if k in train_fields:
            train_kw[k] = v
        elif k in model_fields:
            model_kw[k] = v
        else:
            raise ValueError(f"overrides: unknown field {k!r}; allowed: "
                             f"{sorted(train_fields | model_fields)}")
    return TrainConfig(**train_kw), ModelConfig(**model_kw)


def overrides_from_args(args: argparse.Namespace) -> dict:
    """The fields given on the command line (absent ones are suppressed, so --noise none works)."""
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_")}
