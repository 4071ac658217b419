"""Every check of ebmref.config, one row per rule: the value just past the boundary is refused
with a ValueError whose whole message names the dotted option (the module docstring's
"sampler.step_size: ..." convention) and the allowed range, and the boundary value itself is
accepted. Rows go through ``with_overrides`` (which rebuilds and validates every group) and the
group rows also through a direct ``TrainConfig.validate()`` after an in-place change; the
cross-group rows of ``TrainConfig.validate`` and MALA's restrictions are covered the same way."""

from __future__ import annotations

import dataclasses
import math

import pytest

from ebmref.config import TrainConfig, with_overrides

INF = "∞"

# (bad overrides, the whole message, accepted overrides at the boundary)
GROUP_ROWS = [
    # sampler
    ({"sampler.kind": "hmc"}, "sampler.kind: must be one of ('ula', 'mala'), got 'hmc'",
     {"sampler.kind": "ula"}),
    ({"sampler.n_steps": 0}, f"sampler.n_steps: must be an integer in [1, {INF}], got 0",
     {"sampler.n_steps": 1}),
    ({"sampler.step_size": 0.0}, "sampler.step_size: must be a finite number > 0, got 0.0",
     {"sampler.step_size": 1e-300}),
    ({"sampler.noise": -1e-9}, "sampler.noise: must be a finite number >= 0, got -1e-09",
     {"sampler.noise": 0.0}),
    ({"sampler.grad_clip": 0.0}, "sampler.grad_clip: must be a finite number > 0, got 0.0",
     {"sampler.grad_clip": 1e-300}),
    ({"sampler.clamp": (0.5, 0.5)},
     "sampler.clamp: expected two numbers (low < high), got (0.5, 0.5)",
     {"sampler.clamp": (0.5, 0.5000001)}),
    ({"sampler.transition_every": -1},
     "sampler.transition_every: must be an integer in [0, 60], got -1",
     {"sampler.transition_every": 0}),
    ({"sampler.transition_every": 61},
     "sampler.transition_every: must be an integer in [0, 60], got 61",
     {"sampler.transition_every": 60}),
    # buffer
    ({"buffer.init": "replay"},
     "buffer.init: must be one of ('noise', 'data', 'true_cd', 'cd'), got 'replay'",
     {"buffer.init": "true_cd"}),
    ({"buffer.size": 0, "buffer.init": "cd"},
     f"buffer.size: must be an integer in [1, {INF}], got 0",
     {"buffer.size": 1, "run.batch_size": 1}),
    ({"buffer.reinit_prob": -0.01}, "buffer.reinit_prob: must lie in [0, 1], got -0.01",
     {"buffer.reinit_prob": 0.0}),
    ({"buffer.reinit_prob": 1.01}, "buffer.reinit_prob: must lie in [0, 1], got 1.01",
     {"buffer.reinit_prob": 1.0}),
    ({"buffer.data_fraction": -0.01}, "buffer.data_fraction: must lie in [0, 1], got -0.01",
     {"buffer.data_fraction": 0.0}),
    ({"buffer.data_fraction": 1.01}, "buffer.data_fraction: must lie in [0, 1], got 1.01",
     {"buffer.data_fraction": 1.0}),
    ({"buffer.replacement": "lifo"},
     "buffer.replacement: must be one of ('fifo', 'reservoir'), got 'lifo'",
     {"buffer.replacement": "reservoir"}),
    ({"buffer.noise_low": math.nan}, "buffer.noise_low: must be a finite number, got nan",
     {"buffer.noise_low": -1}),
    ({"buffer.noise_low": "0"}, "buffer.noise_low: must be a finite number, got '0'",
     {"buffer.noise_low": 0}),
    ({"buffer.noise_low": True}, "buffer.noise_low: must be a finite number, got True",
     {"buffer.noise_low": 0.25}),
    ({"buffer.noise_high": math.inf}, "buffer.noise_high: must be a finite number, got inf",
     {"buffer.noise_high": 1e300}),
    ({"buffer.noise_low": 0.5, "buffer.noise_high": 0.5},
     "buffer.noise_high: must exceed buffer.noise_low=0.5, got 0.5",
     {"buffer.noise_low": 0.5, "buffer.noise_high": 0.5000001}),
    ({"buffer.transition_on_read": 1},
     "buffer.transition_on_read: must be a bool (true/false), got 1",
     {"buffer.transition_on_read": True}),
    # kl
    ({"kl.weight": -1e-9}, "kl.weight: must be a finite number >= 0, got -1e-09",
     {"kl.weight": 0.0}),
    ({"kl.sign": "plus"}, "kl.sign: must be one of ('du2020', 'cd'), got 'plus'",
     {"kl.sign": "cd"}),
    ({"kl.differentiable_steps": 0},
     f"kl.differentiable_steps: must be an integer in [1, {INF}], got 0",
     {"kl.differentiable_steps": 1}),
    ({"kl.entropy_weight": -1e-9}, "kl.entropy_weight: must be a finite number >= 0, got -1e-09",
     {"kl.entropy_weight": 0.0}),
    ({"kl.n_chains": -1}, f"kl.n_chains: must be an integer in [0, {INF}], got -1",
     {"kl.n_chains": 0}),
    ({"kl.entropy_weight": 1e-9},
     ("kl.entropy_weight: the entropy term is part of the KL loss; set kl.weight > 0, got "
     "kl.entropy_weight=1e-09"), {"kl.entropy_weight": 1e-9, "kl.weight": 1e-9}),
    ({"kl.entropy_estimator": "knn"},
     "kl.entropy_estimator: must be one of ('nn', 'kl'), got 'knn'",
     {"kl.entropy_estimator": "kl"}),
    ({"kl.entropy_reference": 0},
     f"kl.entropy_reference: must be an integer in [1, {INF}], got 0",
     {"kl.entropy_reference": 1}),
    # optim
    ({"optim.l2": -1e-9}, "optim.l2: must be a finite number >= 0, got -1e-09",
     {"optim.l2": 0.0}),
    ({"optim.lr": 0.0}, "optim.lr: must be a finite number > 0, got 0.0", {"optim.lr": 1e-300}),
    ({"optim.betas": (0.5, 1.0)},
     "optim.betas: expected two numbers (each in [0.0, 1.0)), got (0.5, 1.0)",
     {"optim.betas": (0.0, 0.9999999)}),
    ({"optim.max_grad_norm": 0.0}, "optim.max_grad_norm: must be a finite number > 0, got 0.0",
     {"optim.max_grad_norm": 1e-300}),
    # run
    ({"run.n_updates": 0}, f"run.n_updates: must be an integer in [1, {INF}], got 0",
     {"run.n_updates": 1}),
    ({"run.batch_size": 0}, f"run.batch_size: must be an integer in [1, {INF}], got 0",
     {"run.batch_size": 1}),
    ({"run.seed": -1}, f"run.seed: must be an integer in [0, {INF}], got -1",
     {"run.seed": 0}),
    ({"run.device": "gpu"}, "run.device: must be 'auto', 'cpu' or 'cuda[:i]', got 'gpu'",
     {"run.device": "cpu"}),
    ({"run.device": 0}, "run.device: must be 'auto', 'cpu' or 'cuda[:i]', got 0",
     {"run.device": "cuda"}),
    ({"run.device": "CPU"}, "run.device: must be 'auto', 'cpu' or 'cuda[:i]', got 'CPU'",
     {"run.device": "cuda:3"}),
    ({"run.dtype": "float16"}, "run.dtype: must be one of ('float32', 'float64'), got 'float16'",
     {"run.dtype": "float64"}),
    ({"run.log_every": 0}, f"run.log_every: must be an integer in [1, {INF}], got 0",
     {"run.log_every": 1}),
    ({"run.ckpt_every": -1}, f"run.ckpt_every: must be an integer in [0, {INF}], got -1",
     {"run.ckpt_every": 0}),
    ({"run.max_energy": 0.0}, "run.max_energy: must be a finite number > 0, got 0.0",
     {"run.max_energy": 1e-300}),
    ({"run.progress": "yes"}, "run.progress: must be a bool (true/false), got 'yes'",
     {"run.progress": False}),
]

MALA = {"sampler.kind": "mala", "sampler.noise": None, "sampler.grad_clip": None,
        "sampler.clamp": None}

CROSS_ROWS = [
    # MALA is eq. 1 plus a Metropolis test: Du's knobs are refused, in the order of the fields
    ({"sampler.kind": "mala"},
     ("sampler.noise: must be None with sampler.kind='mala' (it would break MALA's exactness), "
     "got 0.005"), MALA),
    ({**MALA, "sampler.grad_clip": 0.01},
     ("sampler.grad_clip: must be None with sampler.kind='mala' (it would break MALA's "
     "exactness), got 0.01"), {**MALA, "sampler.grad_clip": None}),
    ({**MALA, "sampler.clamp": (0.0, 1.0)},
     ("sampler.clamp: must be None with sampler.kind='mala' (it would break MALA's exactness), "
     "got (0.0, 1.0)"), {**MALA, "sampler.transition_every": 0}),
    ({**MALA, "sampler.transition_every": 1},
     "sampler.transition_every: not supported with sampler.kind='mala', got 1",
     {"sampler.transition_every": 1}),
    # the batch is drawn from the buffer, except for CD-k (no buffer)
    ({"buffer.size": 16, "run.batch_size": 17},
     "run.batch_size: must be an integer in [1, 16], got 17",
     {"buffer.size": 16, "run.batch_size": 16}),
    ({"buffer.size": 16, "run.batch_size": 17, "buffer.init": "noise"},
     "run.batch_size: must be an integer in [1, 16], got 17",
     {"buffer.size": 16, "run.batch_size": 17, "buffer.init": "cd"}),
    # the differentiable steps are the last sampler steps
    ({"sampler.n_steps": 5, "kl.differentiable_steps": 6},
     "kl.differentiable_steps: must be an integer in [1, 5], got 6",
     {"sampler.n_steps": 5, "kl.differentiable_steps": 5}),
    # the KL chains are a subset of the batch
    ({"run.batch_size": 8, "kl.n_chains": 9}, "kl.n_chains: must be an integer in [0, 8], got 9",
     {"run.batch_size": 8, "kl.n_chains": 8}),
    ({"kl.n_chains": 1, "sampler.transition_every": 1},
     ("kl.n_chains: the split sampler run does not support transitions every N steps, got "
     "kl.n_chains=1 with sampler.transition_every=1"),
     {"kl.n_chains": 0, "sampler.transition_every": 1}),
    ({**MALA, "kl.weight": 0.5},
     ("kl.weight: the KL loss differentiates ULA steps; needs sampler.kind='ula', got "
     "kl.weight=0.5 with sampler.kind='mala'"), {**MALA, "kl.weight": 0.0}),
    # the entropy's reference states come from the buffer (only checked when the term is on)
    ({"buffer.size": 32, "run.batch_size": 32, "kl.weight": 1.0, "kl.entropy_weight": 0.5,
      "kl.entropy_reference": 33}, "kl.entropy_reference: must be an integer in [1, 32], got 33",
     {"buffer.size": 32, "run.batch_size": 32, "kl.weight": 1.0, "kl.entropy_weight": 0.0,
      "kl.entropy_reference": 33}),
    ({"buffer.size": 32, "run.batch_size": 32, "kl.weight": 1.0, "kl.entropy_weight": 2.0,
      "kl.entropy_reference": 33}, "kl.entropy_reference: must be an integer in [1, 32], got 33",
     {"buffer.size": 32, "run.batch_size": 32, "kl.weight": 1.0, "kl.entropy_weight": 2.0,
      "kl.entropy_reference": 32}),
]



def _ids(rows):
    return [next(iter(bad)) + "=" + repr(bad[next(iter(bad))]) for bad, _, _ in rows]


@pytest.mark.parametrize("bad,message,good", GROUP_ROWS + CROSS_ROWS,
                         ids=_ids(GROUP_ROWS + CROSS_ROWS))
def test_each_rule_refuses_past_its_boundary_and_accepts_it(bad, message, good):
    """The value just past the rule's boundary gives exactly ``message``; the boundary (or
    the nearest allowed combination) is accepted and kept as given."""
    with pytest.raises(ValueError) as info:
        with_overrides(TrainConfig(), bad)
    assert str(info.value) == message
    config = with_overrides(TrainConfig(), good)
    for path, value in good.items():
        group, leaf = path.split(".")
        assert getattr(getattr(config, group), leaf) == value


@pytest.mark.parametrize("bad,message,good", GROUP_ROWS, ids=_ids(GROUP_ROWS))
def test_train_config_validate_runs_each_groups_checks(bad, message, good):
    """TrainConfig.validate() checks every group: a field set in place after construction
    (bypassing the group's own __post_init__) is refused with the same message."""
    config = with_overrides(TrainConfig(), {k: v for k, v in good.items()
                                            if k in ("run.batch_size", "buffer.size")})
    for path, value in bad.items():
        group, leaf = path.split(".")
        setattr(getattr(config, group), leaf, value)
    with pytest.raises(ValueError) as info:
        config.validate()
    assert str(info.value) == message


def test_pairs_are_stored_as_tuples_of_floats():
    """sampler.clamp and optim.betas accept any two-number sequence (a list, as JSON stores
    them; ints) and keep a tuple of floats."""
    config = with_overrides(TrainConfig(), {"sampler.clamp": [-1, 2], "optim.betas": [0, 0.5]})
    assert config.sampler.clamp == (-1.0, 2.0) and type(config.sampler.clamp) is tuple
    assert all(type(v) is float for v in config.sampler.clamp)
    assert config.optim.betas == (0.0, 0.5) and type(config.optim.betas) is tuple


def test_optional_knobs_accept_none():
    """noise (eq. 1), grad_clip, clamp and max_grad_norm are switched off by None."""
    config = with_overrides(TrainConfig(), {"sampler.noise": None, "sampler.grad_clip": None,
                                            "sampler.clamp": None, "optim.max_grad_norm": None})
    assert (config.sampler.noise, config.sampler.grad_clip, config.sampler.clamp,
            config.optim.max_grad_norm) == (None, None, None, None)


def test_documented_defaults():
    """IGEBM's defaults as the docstrings state them: ULA, clip 0.01, box (0, 1), no transition,
    the noise buffer with FIFO replacement, the KL loss off, β₁ = 0, cuda if available."""
    c = TrainConfig()
    assert dataclasses.asdict(c.sampler) == {
        "kind": "ula", "n_steps": 60, "step_size": 10.0, "noise": 0.005, "grad_clip": 0.01,
        "clamp": (0.0, 1.0), "transition_every": 0}
    assert (c.buffer.init, c.buffer.replacement, c.buffer.transition_on_read) == (
        "noise", "fifo", False)
    assert (c.kl.weight, c.kl.enabled, c.kl.differentiable_steps, c.kl.n_chains) == (
        0.0, False, 1, 0)
    assert c.optim.betas[0] == 0.0 and c.run.device == "auto" and c.run.ckpt_every == 100
    assert not c.uses_transition
