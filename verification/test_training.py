"""Software tests of the training loop: bitwise resume, atomic checkpoints under SIGKILL, clear
errors for corrupted/foreign checkpoints, divergence detection, config validation, and the
step function (the KL loss's differentiated steps, chain ends written back to the buffer).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ebmref.buffer import ReplayBuffer
from ebmref.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ebmref.config import TrainConfig, with_overrides
from ebmref.nets import MLPEnergy
from ebmref.training import TrainingDiverged, train
from ebmref.transitions import SymmetryMove

REPO = Path(__file__).resolve().parents[1]


TOY = {"run.n_updates": 5, "run.batch_size": 16, "buffer.size": 128, "sampler.n_steps": 5,
       "sampler.step_size": 0.01, "sampler.noise": None, "sampler.grad_clip": None,
       "sampler.clamp": None, "buffer.noise_low": -3.0, "buffer.noise_high": 3.0,
       "optim.lr": 1e-3, "run.log_every": 2, "run.ckpt_every": 3, "run.progress": False,
       "run.device": "cpu"}


def toy_config(steps: int = 5, **overrides) -> TrainConfig:
    """A tiny 2-D run: eq. 1 Langevin, noise box [−3, 3]², no image clamps. ``overrides`` by
    dotted path with ``__`` for the dot (``optim__lr=2e-3``)."""
    return with_overrides(TrainConfig(), {**TOY, "run.n_updates": steps,
                                          **{k.replace("__", "."): v
                                             for k, v in overrides.items()}})


def toy_data(rng: torch.Generator, n: int = 256) -> torch.Tensor:
    return 0.3 * torch.randn(n, 2, generator=rng) + torch.tensor([1.0, -0.5])


def make_energy(seed: int = 0, spectral_norm: bool = False) -> MLPEnergy:
    torch.manual_seed(seed)  # parameter init only; the loop itself uses its own generator
    return MLPEnergy(2, hidden=16, depth=2, spectral_norm=spectral_norm)


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _records(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        rec.pop("time_s")
        out.append(rec)
    return out


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize("overrides", [
    {},
    {"spectral_norm": True},
    {"buffer__init": "true_cd", "buffer__replacement": "reservoir", "kl__weight": 1.0,
     "kl__entropy_weight": 0.3, "kl__entropy_reference": 32, "kl__differentiable_steps": 2},
    {"sampler__kind": "mala", "sampler__step_size": 0.05, "buffer__init": "data"},
    {"kl__weight": 1.0, "kl__sign": "cd", "kl__n_chains": 4, "kl__differentiable_steps": 2,
     "buffer__init": "cd"},
], ids=["noise-fifo", "spectral-norm", "truecd-reservoir-kl", "mala-pcd", "cd-kl-subset"])
def test_resume_is_bitwise_identical(tmp_path, rng, overrides):
    """N steps in one go == N/2 steps, stop, resume, N/2 steps: parameters, optimiser state,
    buffer and metric records are bit-for-bit equal on CPU."""
    data = toy_data(rng)
    n = 10
    sn = overrides.pop("spectral_norm", False)  # power-iteration vectors are state too
    one = make_energy(spectral_norm=sn)
    r_one = train(one, data, toy_config(n, **overrides), tmp_path / "one")

    half = make_energy(spectral_norm=sn)
    train(half, data, toy_config(n // 2, **overrides), tmp_path / "two")
    resumed = make_energy(seed=123, spectral_norm=sn)  # everything must come from the checkpoint
    r_two = train(resumed, data, toy_config(n, **overrides), tmp_path / "two", resume=True)

    assert r_one.step == r_two.step == n
    assert _same_state(one, resumed)
    if r_one.buffer is not None:
        assert torch.equal(r_one.buffer.storage, r_two.buffer.storage)
        assert (r_one.buffer.ptr, r_one.buffer.n_seen) == (r_two.buffer.ptr, r_two.buffer.n_seen)
    a = load_checkpoint(tmp_path / "one" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "two" / "checkpoint.pt")
    assert torch.equal(a["rng"]["generator"], b["rng"]["generator"])
    for k, v in a["optimizer"]["state"].items():
        for name, t in v.items():
            assert torch.equal(t, b["optimizer"]["state"][k][name])
    assert _records(tmp_path / "one" / "metrics.jsonl") == \
        _records(tmp_path / "two" / "metrics.jsonl")


def test_resume_without_checkpoint_is_not_identical_to_continuing(tmp_path, rng):
    """The bitwise test can fail: restarting from the half-trained weights *without* the
    optimiser/buffer/generator state gives different parameters."""
    data = toy_data(rng)
    one = make_energy()
    train(one, data, toy_config(10), tmp_path / "one")
    half = make_energy()
    train(half, data, toy_config(5), tmp_path / "two")
    naive = make_energy()
    naive.load_state_dict(half.state_dict())
    train(naive, data, toy_config(5), tmp_path / "three")  # fresh optimiser, buffer, generator
    assert not _same_state(one, naive)


def test_resume_rejects_changed_config(tmp_path, rng):
    data = toy_data(rng)
    train(make_energy(), data, toy_config(4), tmp_path)
    with pytest.raises(ValueError, match="optim.lr"):
        train(make_energy(), data, toy_config(8, optim__lr=2e-3), tmp_path, resume=True)
    # steps may change: continuing to 8 works and starts at step 4
    res = train(make_energy(), data, toy_config(8), tmp_path, resume=True)
    assert res.step == 8 and res.history[0]["step"] == 6


# --------------------------------------------------------------------------- atomic writes

_CHILD = textwrap.dedent("""
    import io, sys, time, torch
    import ebmref.checkpoint as ck
    path, mode = sys.argv[1], sys.argv[2]
    big = torch.arange(200_000, dtype=torch.float64)
    ck.save_checkpoint({{"step": 1, "model": {{"w": big}}, "optimizer": {{}}, "buffer": None,
                        "rng": {{}}, "config": {{}}}}, path)
    real_save = torch.save
    def slow_save(obj, f, *a, **k):
        buf = io.BytesIO(); real_save(obj, buf); data = buf.getvalue()
        f.write(data[: len(data) // 2]); f.flush()
        print("PARTIAL", flush=True)
        time.sleep(60)
        f.write(data[len(data) // 2:])
    torch.save = slow_save
    state = {{"format": ck.FORMAT, "version": ck.VERSION, "step": 2, "model": {{"w": big + 1}},
             "optimizer": {{}}, "buffer": None, "rng": {{}}, "config": {{}}}}
    if mode == "atomic":
        ck.save_checkpoint({{k: v for k, v in state.items() if k not in ("format", "version")}},
                           path)
    else:  # the broken writer: straight onto the target file
        with open(path, "wb") as f:
            torch.save(state, f)
""")


def _spawn_and_kill(tmp_path: Path, mode: str):
    """Start a child that writes checkpoint 1, then checkpoint 2 slowly ("atomic": through
    save_checkpoint; "direct": straight onto the target), and return (process, target)."""
    script = tmp_path / "child.py"
    script.write_text(_CHILD.format())
    target = tmp_path / mode / "checkpoint.pt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), str(target), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return proc, target


def _kill_when_partial(proc: subprocess.Popen) -> None:
    try:
        line = proc.stdout.readline()
        assert line.strip() == "PARTIAL", (line, proc.stderr.read() if proc.poll() else "")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def killed_writers(tmp_path_factory) -> dict[str, Path]:
    """Both writers run concurrently (one torch import's wait instead of two) and each is
    killed with SIGKILL once it has written half of checkpoint 2."""
    tmp = tmp_path_factory.mktemp("sigkill")
    children = {mode: _spawn_and_kill(tmp, mode) for mode in ("atomic", "direct")}
    for proc, _ in children.values():
        _kill_when_partial(proc)
    return {mode: target for mode, (_, target) in children.items()}


def test_checkpoint_survives_sigkill_during_write(killed_writers):
    """A real process killed with SIGKILL halfway through writing checkpoint 2 leaves
    checkpoint 1 loadable (the half-written temp file is never renamed)."""
    target = killed_writers["atomic"]
    state = load_checkpoint(target)
    assert state["step"] == 1
    assert torch.equal(state["model"]["w"], torch.arange(200_000, dtype=torch.float64))
    leftovers = [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers and leftovers[0].stat().st_size < target.stat().st_size  # killed mid-write


def test_non_atomic_write_killed_midway_is_corrupt(killed_writers):
    """Broken variant: writing straight onto the target, the same kill destroys the only
    checkpoint, and loading it gives a clear CheckpointError."""
    with pytest.raises(CheckpointError, match="corrupted, truncated"):
        load_checkpoint(killed_writers["direct"])


# --------------------------------------------------------------------------- bad files


class _Foreign:  # a pickled custom object: refused by weights_only=True
    pass


def test_corrupted_and_foreign_checkpoints_give_clear_errors(tmp_path, rng):
    good = train(make_energy(), toy_data(rng), toy_config(3), tmp_path / "run").checkpoint
    raw = good.read_bytes()
    cases = {
        "truncated.pt": (raw[: len(raw) // 2], "corrupted, truncated"),
        "garbage.pt": (bytes(range(256)) * 8, "corrupted, truncated"),
        "empty.pt": (b"", "corrupted, truncated"),
    }
    for name, (content, msg) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=msg):
            load_checkpoint(tmp_path / name)
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an ebmref checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match="not an ebmref checkpoint"):
        load_checkpoint(tmp_path / "tensor.pt")
    torch.save({"format": "ebmref-checkpoint", "obj": _Foreign()}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(tmp_path / "pickled.pt")
    torch.save({"format": "ebmref-checkpoint", "version": 99}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(tmp_path / "future.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    # through train(resume=True)
    (tmp_path / "run" / "checkpoint.pt").write_bytes(raw[:100])
    with pytest.raises(CheckpointError):
        train(make_energy(), toy_data(rng), toy_config(6), tmp_path / "run", resume=True)


def test_save_checkpoint_roundtrip_with_buffer(tmp_path, rng):
    buf = ReplayBuffer(8, "data")
    buf.sample(4, rng, data=torch.randn(20, 2, generator=rng))
    save_checkpoint({"step": 7, "model": {}, "optimizer": {}, "buffer": buf.state_dict(),
                     "rng": {"generator": rng.get_state()}, "config": {"a": (1, 2)}},
                    tmp_path / "c.pt")
    state = load_checkpoint(tmp_path / "c.pt")
    other = ReplayBuffer(8, "data")
    other.load_state_dict(state["buffer"])
    assert torch.equal(other.storage, buf.storage) and state["step"] == 7
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- divergence


def test_planted_divergence_huge_lr_stops_and_keeps_last_good_checkpoint(tmp_path):
    """lr = 3 (Adam moves every weight by ~3 per update) blows the energies up within a few
    updates: the run stops with a message naming the step and the quantity. θ_s counts as good
    once it has produced bounded energies at step s + 1, so the checkpoint on disk is θ_{k−2}
    for a divergence detected at step k, and it loads with bounded energies."""
    gen = torch.Generator().manual_seed(0)  # a deterministic software test, not a stochastic one
    cfg = toy_config(200, optim__lr=3.0, run__ckpt_every=1, optim__max_grad_norm=None,
                     run__max_energy=1e4)
    with pytest.raises(TrainingDiverged) as info:
        train(make_energy(), toy_data(gen), cfg, tmp_path)
    err = info.value
    assert isinstance(err, RuntimeError)
    assert f"at step {err.step}:" in str(err) and err.quantity in str(err)
    assert "energy" in err.quantity or "gradient" in err.quantity or "loss" in err.quantity
    assert 3 <= err.step < 200
    assert str(tmp_path / "checkpoint.pt") in str(err)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == err.step - 2
    energy = make_energy()
    energy.load_state_dict(state["model"])
    with torch.no_grad():
        assert energy(toy_data(gen)).abs().max() < cfg.run.max_energy


def test_planted_divergence_huge_sampler_step(tmp_path, rng):
    """A sampler step of 1e8 on eq. 1 sends the chains to huge/non-finite values within the
    first steps; no checkpoint is ever validated, and the message says so."""
    cfg = toy_config(5, sampler__step_size=1e8, run__ckpt_every=1, run__max_energy=1e6)
    with pytest.raises(TrainingDiverged, match=r"at step \d: .*(samples|energy)") as info:
        train(make_energy(), toy_data(rng), cfg, tmp_path)
    assert "no checkpoint written yet" in str(info.value)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_divergence_check_catches_nan_parameters(rng):
    energy = make_energy()
    with torch.no_grad():
        energy.net[0].weight[0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match="step 1"):
        train(energy, toy_data(rng), toy_config(3))


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("path,value", [
    ("run.n_updates", 0), ("run.batch_size", -1), ("buffer.init", "persistent"),
    ("sampler.kind", "hmc"), ("sampler.n_steps", 0), ("sampler.step_size", 0.0),
    ("sampler.step_size", float("nan")), ("sampler.noise", -0.1), ("sampler.grad_clip", 0.0),
    ("sampler.clamp", (1.0, 0.0)), ("optim.l2", -1.0), ("kl.sign", "plus"),
    ("kl.differentiable_steps", 99), ("optim.lr", -1e-3), ("optim.betas", (0.0, 1.0)),
    ("optim.max_grad_norm", -1.0), ("buffer.reinit_prob", 1.5), ("buffer.data_fraction", -0.1),
    ("buffer.replacement", "lifo"), ("run.log_every", 0), ("run.ckpt_every", -1),
    ("run.max_energy", 0.0), ("run.device", "tpu"), ("run.dtype", "float16"),
    ("buffer.noise_high", -5.0), ("sampler.transition_every", -1), ("buffer.size", 0),
    ("kl.entropy_estimator", "knn"), ("run.seed", -3), ("run.n_updates", 2.5),
    ("buffer.transition_on_read", 1), ("run.progress", "yes"),
])
def test_invalid_config_rejected_with_field_name(path, value):
    with pytest.raises(ValueError, match=re.escape(path)):
        toy_config(5, **{path.replace(".", "__"): value})


def test_unknown_field_and_flat_configs_of_earlier_versions():
    with pytest.raises(ValueError, match="sampler.n_stepz"):
        toy_config(5, sampler__n_stepz=3)
    old = {"steps": 7, "sampler": "mala", "grad_clip_x": None, "noise": None, "clamp": None,
           "kl_steps": 1, "weight_grad_clip": 0.5, "buffer_size": 64, "batch_size": 8}
    cfg = TrainConfig.from_dict(old)
    assert (cfg.run.n_updates, cfg.sampler.kind, cfg.optim.max_grad_norm, cfg.buffer.size) == \
        (7, "mala", 0.5, 64)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_inconsistent_combinations_rejected():
    with pytest.raises(ValueError, match="sampler.noise"):
        toy_config(5, sampler__kind="mala", sampler__noise=0.005)
    with pytest.raises(ValueError, match="kl.weight"):
        toy_config(5, sampler__kind="mala", kl__weight=1.0)
    with pytest.raises(ValueError, match="kl.entropy_weight"):
        toy_config(5, kl__entropy_weight=0.3)
    with pytest.raises(ValueError, match="run.batch_size"):
        toy_config(5, run__batch_size=200, buffer__size=100)
    with pytest.raises(ValueError, match="kl.n_chains"):
        toy_config(5, kl__n_chains=17)  # more than run.batch_size = 16
    with pytest.raises(ValueError, match="kl.n_chains"):
        toy_config(5, kl__n_chains=4, sampler__transition_every=2)


def test_invalid_arguments_rejected_before_any_work(tmp_path, rng):
    cfg = toy_config(5)
    cfg.optim.lr = -1.0  # mutated after construction: train() re-validates first
    out = tmp_path / "never"
    with pytest.raises(ValueError, match="optim.lr"):
        train(make_energy(), toy_data(rng), cfg, out)
    assert not out.exists()
    with pytest.raises(ValueError, match="transition"):
        train(make_energy(), toy_data(rng), toy_config(5, sampler__transition_every=2), out)
    with pytest.raises(ValueError, match="data"):
        train(make_energy(), torch.full((10, 2), float("nan")), toy_config(5), out)
    with pytest.raises(ValueError, match="resume"):
        train(make_energy(), toy_data(rng), toy_config(5), None, resume=True)
    with pytest.raises(ValueError, match="energy"):
        train(torch.nn.Linear(2, 1), toy_data(rng), toy_config(5), out)
    assert not out.exists()


# --------------------------------------------------------------------------- outputs and paths


def test_outputs_metrics_and_config(tmp_path, rng):
    seen = []
    res = train(make_energy(), toy_data(rng),
                toy_config(6, sampler__kind="mala", sampler__step_size=0.05),
                tmp_path, callback=lambda step, rec: seen.append(step))
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["sampler"]["kind"] == "mala" and cfg["resolved_device"] == "cpu"
    assert cfg["run"]["n_updates"] == 6
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [2, 4, 6] == seen
    for r in recs:
        assert {"loss", "energy_data", "energy_samples", "grad_norm", "acceptance"} <= r.keys()
        assert 0.0 < r["acceptance"] <= 1.0
    assert load_checkpoint(res.checkpoint)["step"] == 6


def test_cd_init_transitions_and_iterable_data(tmp_path, rng):
    data = toy_data(rng)
    res = train(make_energy(), data, toy_config(4, buffer__init="cd"))
    assert res.buffer is None and res.step == 4
    move = SymmetryMove.sign_flips(2, dtype=torch.float32)
    res = train(make_energy(), data, toy_config(4, buffer__transition_on_read=True,
                                                sampler__transition_every=2), transition=move)
    assert res.step == 4 and torch.isfinite(res.buffer.storage).all()
    batches = [(data[i:i + 16], None) for i in range(0, 64, 16)]
    res = train(make_energy(), batches, toy_config(6, buffer__init="true_cd"), tmp_path)
    assert res.step == 6 and len(res.buffer) == 128
    res = train(make_energy(), batches, toy_config(8, buffer__init="true_cd"), tmp_path,
                resume=True)
    assert res.step == 8


def test_training_moves_a_gaussian_model_toward_the_data():
    """Wiring check of the whole loop (loss sign, buffer, sampler, optimiser): a Gaussian
    energy N(μ, s²) started at μ = 0, s = 1, trained by NLL (noise buffer + exact MALA
    negatives) on data N(2, 0.5²). The expected update direction is (x̄⁻ − x̄⁺)/s² on μ; after
    80 Adam steps of 0.05, (μ, s) must be near the MLE (2, 0.5) (seen: μ 1.95–2.04, s 0.48–0.58
    over 4 seeds). Swapping data and samples (the broken sign) would drive μ below 0."""
    from ebmref.energy import Gaussian

    gen = torch.Generator().manual_seed(0)
    data = 0.5 * torch.randn(2000, 1, generator=gen) + 2.0
    energy = Gaussian([0.0], [[1.0]])
    cfg = toy_config(80, sampler__kind="mala", sampler__step_size=0.5, sampler__n_steps=5,
                     run__batch_size=64, buffer__size=512, optim__lr=0.05, optim__l2=0.0,
                     optim__max_grad_norm=None, run__log_every=20)
    res = train(energy, data, cfg)
    mu, s = float(energy.mu.detach()), float(energy.L.detach().abs())
    assert abs(mu - 2.0) <= 0.3, mu
    assert 0.35 <= s <= 0.75, s
    assert [r["step"] for r in res.history] == [20, 40, 60, 80]


@pytest.mark.parametrize("kind", ["elastic-every-2-steps", "augment-on-read"])
def test_image_run_with_transitions_resumes_bitwise(tmp_path, kind):
    """Du-style image settings (decoupled step 10 / noise 0.005, gradient clip 0.01, clamp to
    [0, 1]) on a small spectrally normalised IGEBM (8×8 images) with an elastic deformation
    every 2 sampler steps or torchvision augmentation on buffer reads: 4 steps in one go equal
    2 + resume + 2 bit for bit (the transitions draw all randomness from the run's generator)."""
    from ebmref.nets import IGEBMEnergy
    from ebmref.transitions import Augment, ElasticDeform

    gen = torch.Generator().manual_seed(0)
    data = torch.rand(32, 1, 8, 8, generator=gen)
    if kind.startswith("elastic"):
        transition, extra = ElasticDeform(sigma=0.5, points=3), {"sampler.transition_every": 2}
    else:
        transition, extra = Augment(crop_scale=(0.6, 1.0), blur_sigma=(0.1, 0.5)), \
            {"buffer.transition_on_read": True}
    cfg = lambda steps: with_overrides(TrainConfig(), {  # Du's image sampler: the defaults
        "run.n_updates": steps, "run.batch_size": 4, "buffer.size": 16, "sampler.n_steps": 4,
        "run.log_every": 1, "run.ckpt_every": 1, "run.progress": False, "run.device": "cpu",
        **extra})

    def model():
        torch.manual_seed(1)
        return IGEBMEnergy(spectral_norm=True, image_size=8)

    one = model()
    r1 = train(one, data, cfg(4), tmp_path / "one", transition=transition)
    train(model(), data, cfg(2), tmp_path / "two", transition=transition)
    two = model()
    r2 = train(two, data, cfg(4), tmp_path / "two", resume=True, transition=transition)
    assert _same_state(one, two)
    assert torch.equal(r1.buffer.storage, r2.buffer.storage)
    assert ((r1.buffer.storage >= 0) & (r1.buffer.storage <= 1)).all()
    cfg_json = json.loads((tmp_path / "one" / "config.json").read_text())
    assert type(transition).__name__ in cfg_json["transition"]


# --------------------------------------------------------------------------- the step function


def _step_setup(k: int, **overrides):
    from ebmref.training import TrainState

    cfg = toy_config(3, kl__weight=1.0, kl__differentiable_steps=k, sampler__n_steps=5,
                     sampler__step_size=0.05, optim__max_grad_norm=None, **overrides)
    state = TrainState.create(make_energy(), cfg)
    state.ensure_buffer((2,))
    return state


def _reference_grads(state, x_pos: torch.Tensor, k: int) -> list[torch.Tensor]:
    """The gradient of one update computed by hand from copies of the state: buffer read,
    ``langevin`` with the last k steps differentiated, loss = eq. 3 + KL loss."""
    import copy

    from ebmref.objectives import contrastive_loss, kl_loss
    from ebmref.samplers import langevin

    cfg, energy = state.config, copy.deepcopy(state.energy)
    g = torch.Generator().set_state(state.generator.get_state())
    buffer = copy.deepcopy(state.buffer)
    x0, _ = buffer.sample(cfg.run.batch_size, g, data=x_pos)
    x = langevin(energy, x0, cfg.sampler.n_steps, cfg.sampler.step_size, generator=g,
                 differentiable_steps=k).x
    loss = contrastive_loss(energy(x_pos), energy(x.detach()), cfg.optim.l2) \
        + kl_loss(energy, x, sign=cfg.kl.sign)
    return list(torch.autograd.grad(loss, list(energy.parameters())))


@pytest.mark.parametrize("k", [1, 3])
def test_train_step_differentiates_the_configured_number_of_steps(rng, k):
    """train_step's weight gradient equals the hand-built one with k = kl.differentiable_steps
    differentiated sampler steps, and differs from the one with another k (the bug "the loop
    always differentiates one step" fails this for k = 3; for k = 1 the other k is 3)."""
    from ebmref.training import train_step

    state = _step_setup(k)
    x_pos = toy_data(rng, 16)
    want = _reference_grads(state, x_pos, k)
    wrong = _reference_grads(state, x_pos, 4 - k)
    train_step(state, x_pos)
    got = [p.grad for p in state.energy.parameters()]
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(got, want))
    assert not all(torch.allclose(a, b, rtol=1e-3, atol=1e-5) for a, b in zip(got, wrong))


@pytest.mark.parametrize("replacement", ["fifo", "reservoir"])
def test_train_step_writes_chain_ends_back_to_the_buffer(rng, replacement, monkeypatch):
    """After an update the buffer holds the step's negatives x⁻: in the next FIFO slots, or
    (reservoir) every stored row is an old row or a row of x⁻ and at least one is new. The
    broken variant (no push) fails the same check."""
    from ebmref.buffer import ReplayBuffer
    from ebmref.training import train_step

    def check(state) -> None:
        x_pos = toy_data(rng, 16)
        state.buffer.sample(1, torch.Generator().manual_seed(0), data=x_pos)  # fill it
        before, ptr = state.buffer.storage.clone(), state.buffer.ptr
        out = train_step(state, x_pos)
        after = state.buffer.storage
        if replacement == "fifo":
            slots = (ptr + torch.arange(out.x_neg.shape[0])) % after.shape[0]
            assert torch.equal(after[slots], out.x_neg)
        else:
            old = (after[:, None] == before[None]).all(-1).any(1)
            new = (after[:, None] == out.x_neg[None]).all(-1).any(1)
            assert bool((old | new).all()) and bool((new & ~old).any())

    check(_step_setup(1, buffer__replacement=replacement))
    monkeypatch.setattr(ReplayBuffer, "push", lambda self, x, generator=None, **kw: None)
    with pytest.raises(AssertionError):
        check(_step_setup(1, buffer__replacement=replacement))
