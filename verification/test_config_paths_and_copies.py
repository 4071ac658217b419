"""ebmref.config's plumbing: the dotted paths of every field (``field_paths``, ``nested_type``),
``with_overrides`` (a validated copy that leaves the original alone; the full message for an
unknown path), ``TrainConfig.from_dict`` (nested, partial and the flat configs of earlier
versions), ``TrainConfig.differences`` (tuples and lists compare equal, ``ignore``) and
``RunConfig.resolved_device``."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from ebmref.config import (
    BufferConfig,
    KLConfig,
    OptimConfig,
    RunConfig,
    SamplerConfig,
    TrainConfig,
    field_paths,
    nested_type,
    with_overrides,
)

# Every leaf of TrainConfig in the order of the class definitions (module source).
PATHS = [
    "sampler.kind", "sampler.n_steps", "sampler.step_size", "sampler.noise", "sampler.grad_clip",
    "sampler.clamp", "sampler.transition_every",
    "buffer.init", "buffer.size", "buffer.reinit_prob", "buffer.data_fraction",
    "buffer.replacement", "buffer.noise_low", "buffer.noise_high", "buffer.transition_on_read",
    "kl.weight", "kl.sign", "kl.differentiable_steps", "kl.n_chains", "kl.entropy_weight",
    "kl.entropy_estimator", "kl.entropy_reference",
    "optim.l2", "optim.lr", "optim.betas", "optim.max_grad_norm",
    "run.n_updates", "run.batch_size", "run.seed", "run.device", "run.dtype", "run.log_every",
    "run.ckpt_every", "run.max_energy", "run.progress",
]


@dataclasses.dataclass
class _WithList:
    xs: list = dataclasses.field(default_factory=list)
    sampler: SamplerConfig = dataclasses.field(default_factory=SamplerConfig)
    n: int = 3


def test_field_paths_lists_every_leaf_in_definition_order():
    """TrainConfig's 35 leaves as dotted paths; a group alone gives its bare names; a prefix is
    prepended as given."""
    assert field_paths(TrainConfig) == PATHS
    assert field_paths(SamplerConfig) == [p.split(".")[1] for p in PATHS[:7]]
    assert field_paths(RunConfig, "cfg/") == ["cfg/" + p.split(".")[1] for p in PATHS[26:]]


def test_nested_type_tells_groups_from_leaves():
    """A field whose default factory builds a dataclass is a group (its type); one whose factory
    builds something else (a list) or that has a plain default is a leaf."""
    fields = {f.name: f for f in dataclasses.fields(_WithList)}
    assert nested_type(fields["sampler"]) is SamplerConfig
    assert nested_type(fields["xs"]) is None and nested_type(fields["n"]) is None
    assert field_paths(_WithList) == ["xs", *[f"sampler.{p.split('.')[1]}" for p in PATHS[:7]],
                                      "n"]
    groups = {f.name: nested_type(f) for f in dataclasses.fields(TrainConfig)}
    assert groups == {"sampler": SamplerConfig, "buffer": BufferConfig, "kl": KLConfig,
                      "optim": OptimConfig, "run": RunConfig}


@pytest.mark.parametrize("path", ["sampler.nope", "nope.kind", "sampler.kind.x", "steps", ""])
def test_unknown_override_names_the_path_and_every_allowed_one(path):
    """An unknown path (a wrong leaf, group, a path through a leaf, a flat name) is refused
    with the full list of allowed paths, comma-separated."""
    with pytest.raises(ValueError) as info:
        with_overrides(TrainConfig(), {path: 1})
    assert str(info.value) == f"overrides: unknown field {path!r}; allowed: {', '.join(PATHS)}"


def test_with_overrides_copies_and_leaves_the_original_alone():
    """The result is a new config with new groups; the original and its groups are unchanged
    (also for fields left untouched), and a group config takes bare names."""
    base = TrainConfig()
    new = with_overrides(base, {"sampler.n_steps": 7, "run.seed": 3})
    assert (new.sampler.n_steps, new.run.seed) == (7, 3)
    assert (base.sampler.n_steps, base.run.seed) == (60, 0) and base == TrainConfig()
    for name in ("sampler", "buffer", "kl", "optim", "run"):
        assert getattr(new, name) is not getattr(base, name)
    same = with_overrides(base, {})
    assert same == base and same is not base and same.kl is not base.kl
    same.kl.weight = 2.0
    assert base.kl.weight == 0.0
    assert with_overrides(SamplerConfig(), {"n_steps": 5}) == SamplerConfig(n_steps=5)


def test_with_overrides_validates_once_at_the_end():
    """Several overrides that are only valid together (MALA needs noise, grad_clip and clamp
    off) are applied before the check."""
    mala = with_overrides(TrainConfig(), {"sampler.kind": "mala", "sampler.noise": None,
                                          "sampler.grad_clip": None, "sampler.clamp": None})
    assert (mala.sampler.kind, mala.sampler.noise, mala.sampler.clamp) == ("mala", None, None)


def test_from_dict_reads_nested_partial_and_json_configs():
    """to_dict → JSON → from_dict gives the config back (pairs as tuples again); a missing
    group or field takes its default."""
    config = with_overrides(TrainConfig(), {"sampler.clamp": (-1.0, 2.0), "kl.weight": 0.5,
                                            "optim.betas": (0.5, 0.9), "run.dtype": "float64"})
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert TrainConfig.from_dict(config.to_dict()) == config
    partial = TrainConfig.from_dict({"run": {"seed": 4}, "buffer": {}})
    assert partial == with_overrides(TrainConfig(), {"run.seed": 4})


def test_from_dict_reads_the_flat_configs_of_earlier_versions():
    """A flat dict (no nested group) uses the old names of FLAT_NAMES; keys no longer known are
    ignored; an empty dict is the default config."""
    old = {"steps": 7, "kl_weight": 0.5, "grad_clip_x": None, "weight_grad_clip": 2.0,
           "buffer_size": 256, "betas": [0.1, 0.2], "sampler": "ula", "retired_option": 1}
    config = TrainConfig.from_dict(old)
    assert config == with_overrides(TrainConfig(), {
        "run.n_updates": 7, "kl.weight": 0.5, "sampler.grad_clip": None,
        "optim.max_grad_norm": 2.0, "buffer.size": 256, "optim.betas": (0.1, 0.2)})
    assert TrainConfig.from_dict({}) == TrainConfig()


def test_differences_lists_changed_fields_as_json_would_store_them():
    """{path: (mine, theirs)} in field order, pairs as lists; equal configs differ nowhere;
    ``ignore`` drops a path but not the others."""
    a = TrainConfig()
    b = with_overrides(a, {"sampler.clamp": (0.0, 2.0), "run.seed": 5, "kl.sign": "cd"})
    assert list(a.differences(b).items()) == [
        ("sampler.clamp", ([0.0, 1.0], [0.0, 2.0])), ("kl.sign", ("du2020", "cd")),
        ("run.seed", (0, 5))]
    assert a.differences(with_overrides(a, {})) == {}
    assert a.differences(b, ignore=("run.seed", "kl.sign")) == {
        "sampler.clamp": ([0.0, 1.0], [0.0, 2.0])}
    assert b.differences(a, ignore=("sampler.clamp",)) == {"kl.sign": ("cd", "du2020"),
                                                            "run.seed": (5, 0)}


def test_differences_treats_tuples_and_lists_as_equal():
    """A pair held as a list (as JSON stores it, e.g. set in place) equals the same tuple."""
    a, b = TrainConfig(), TrainConfig()
    b.optim.betas = [0.0, 0.999]
    b.sampler.clamp = [0.0, 1.0]
    assert a.differences(b) == {} and b.differences(a) == {}
    b.optim.betas = [0.0, 0.99]
    assert a.differences(b) == {"optim.betas": ([0.0, 0.999], [0.0, 0.99])}


def test_resolved_device(monkeypatch):
    """"auto" is cuda where a CUDA device is available, else the CPU; any other setting is
    taken as written ("cuda:1" names device 1; building the device object needs no GPU)."""
    assert RunConfig(device="cuda:1").resolved_device() == torch.device("cuda", 1)
    assert RunConfig(device="cpu").resolved_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert RunConfig(device="auto").resolved_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert RunConfig(device="auto").resolved_device() == torch.device("cpu")
