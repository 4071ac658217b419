"""ebmref.ais against a reference written from its docstrings: every draw comes from the
caller's generator (the adapting pilot included), so a seeded run does not depend on the
global RNG; the forward and reverse runs, their pilot and their AISResult fields equal a plain
loop over the path built from the public pieces (``AnnealedEnergy``, ``samplers.mala``) with
the same generator: log w −= Δβ_k (E_θ − E₀)(x_{k−1}), then MALA at β_k with the step of β_k;
the pilot's rule step_{k+1} = step_k · exp(a_k − target)."""

from __future__ import annotations

import math

import pytest
import torch

from ebmref.ais import AnnealedEnergy, UniformBox, ais, reverse_ais, schedule
from ebmref.energy import Gaussian
from ebmref.samplers import mala

F64 = torch.float64


def _pair():
    target = Gaussian([0.4, -0.3], [[0.8, 0.25], [0.25, 0.5]], dtype=F64)
    base = Gaussian([0.0, 0.1], [[2.0, 0.3], [0.3, 1.5]], dtype=F64)
    return target, base


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ref_anneal(target, base, x, betas, steps, n_mcmc, g, target_acceptance=None):
    """The loop of the module docstring, in the order of ``betas`` (either direction)."""
    path = AnnealedEnergy(base, target, float(betas[0]))
    log_w = torch.zeros(x.shape[0], dtype=F64)
    acc = [math.nan]
    steps = [float(s) for s in steps]
    for k in range(1, len(betas)):
        with torch.no_grad():
            log_w = log_w - float(betas[k] - betas[k - 1]) * (target(x) - base(x))
        path.beta = float(betas[k])
        out = mala(path, x, n_mcmc, steps[k], generator=g)
        x = out.x
        acc.append(float(out.acceptance.mean()))
        if target_acceptance is not None and k < len(betas) - 1:
            steps[k + 1] = steps[k] * math.exp(acc[k] - target_acceptance)
    return log_w, x, acc, steps


def _ref_pilot(target, base, betas, step, n_mcmc, ta, n_pilot, g):
    x = base.sample(n_pilot, g)
    steps = _ref_anneal(target, base, x, betas, [step] * len(betas), n_mcmc, g, ta)[3]
    return [steps[1]] + steps[1:]


def _lme(log_w):
    return float(torch.logsumexp(log_w, 0)) - math.log(log_w.numel())


def _se_and_ess(res, log_w):
    """The result's standard error sd(w/mean w)/√N and ESS (Σw)²/Σw² equal those of log_w."""
    w = torch.exp(log_w - log_w.max())
    assert res.log_z_se == pytest.approx(float((w / w.mean()).std()) / math.sqrt(w.numel()),
                                         rel=1e-10)
    assert res.ess == pytest.approx(float(w.sum() ** 2 / (w * w).sum()), rel=1e-10)


def _same(res, other):
    assert torch.equal(res.log_weights, other.log_weights) and torch.equal(res.x, other.x)
    assert torch.equal(res.step_sizes, other.step_sizes)
    assert torch.equal(res.acceptance.nan_to_num(-1.0), other.acceptance.nan_to_num(-1.0))
    assert (res.log_z, res.log_z_se, res.ess) == (other.log_z, other.log_z_se, other.ess)


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_adapted_runs_depend_only_on_the_callers_generator(direction):
    """adapt=True: two runs with equally seeded generators agree bit for bit, whatever the
    global RNG did in between (the pilot draws from the caller's generator too)."""
    target, base = _pair()
    samples = target.sample(6, _gen(9))
    runs = []
    for global_seed in (1, 12345):
        torch.manual_seed(global_seed)
        kw = {"n_mcmc": 2, "adapt": True, "n_pilot": 7, "generator": _gen(4)}
        if direction == "forward":
            runs.append(ais(target, base, 6, schedule(4, "linear"), 0.3, **kw))
        else:
            runs.append(reverse_ais(target, base, samples, schedule(4, "linear"), 0.3, **kw))
    _same(*runs)


def test_forward_run_equals_the_reference_loop_with_a_pilot():
    """ais(adapt=True): the pilot of n_pilot particles draws first, then the N particles; the
    log-weights, final particles, acceptances, steps and log Ẑ are the reference loop's."""
    target, base = _pair()
    betas = schedule(4, "sigmoid")
    res = ais(target, base, 6, betas, 0.35, n_mcmc=2, adapt=True, target_acceptance=0.7,
              n_pilot=5, generator=_gen(11))
    g = _gen(11)
    steps = _ref_pilot(target, base, betas, 0.35, 2, 0.7, 5, g)
    x0 = base.sample(6, g)
    log_w, x, acc, _ = _ref_anneal(target, base, x0, betas, steps, 2, g)
    torch.testing.assert_close(res.log_weights, log_w, rtol=0, atol=1e-12)
    torch.testing.assert_close(res.x, x, rtol=0, atol=1e-12)
    torch.testing.assert_close(res.step_sizes, torch.tensor(steps, dtype=F64), rtol=1e-13, atol=0)
    assert math.isnan(float(res.acceptance[0]))
    assert res.acceptance[1:].tolist() == pytest.approx(acc[1:], rel=1e-12)
    log_z0 = float(base.log_partition().detach())
    assert res.log_z0 == pytest.approx(log_z0, rel=1e-14)
    assert res.log_z == pytest.approx(log_z0 + _lme(log_w), rel=1e-12)
    assert torch.equal(res.betas, betas) and res.reverse is False
    _se_and_ess(res, log_w)


def test_reverse_run_equals_the_reference_loop_from_one_to_zero():
    """reverse_ais: the samples run from β_K = 1 down to β₀ with the steps read backwards
    (β₀'s step included), log w' += |Δβ|(E_θ − E₀), log Ẑ = log Z₀ − log mean(w'); the
    acceptances come back in the order of the increasing betas (NaN at β_K)."""
    target, base = _pair()
    betas = torch.tensor([0.0, 0.2, 0.45, 0.8, 1.0], dtype=F64)
    steps = torch.tensor([0.5, 0.4, 0.3, 0.2, 0.1], dtype=F64)
    samples = target.sample(7, _gen(2))
    res = reverse_ais(target, base, samples, betas, steps, n_mcmc=3, generator=_gen(5))
    log_w, x, acc, _ = _ref_anneal(target, base, samples, betas.flip(0), steps.flip(0), 3, _gen(5))
    torch.testing.assert_close(res.log_weights, log_w, rtol=0, atol=1e-12)
    torch.testing.assert_close(res.x, x, rtol=0, atol=1e-12)
    assert torch.equal(res.step_sizes, steps) and torch.equal(res.betas, betas)
    assert math.isnan(float(res.acceptance[-1]))
    assert res.acceptance[:-1].flip(0).tolist() == pytest.approx(acc[1:], rel=1e-12)
    log_z0 = float(base.log_partition().detach())
    assert res.log_z == pytest.approx(log_z0 - _lme(log_w), rel=1e-12)
    assert res.log_z0 == pytest.approx(log_z0, rel=1e-14) and res.reverse is True
    _se_and_ess(res, log_w)


def test_reverse_pilot_runs_forward_from_the_base():
    """reverse_ais(adapt=True): the pilot is the forward pilot (n_pilot base draws, then the
    forward rule); the reverse run then uses its steps from β_K down to β₀ = β₁'s step."""
    target, base = _pair()
    betas = schedule(3, "linear")
    samples = target.sample(5, _gen(3))
    res = reverse_ais(target, base, samples, betas, 0.25, n_mcmc=1, adapt=True,
                      target_acceptance=0.8, n_pilot=4, generator=_gen(8))
    g = _gen(8)
    steps = _ref_pilot(target, base, betas, 0.25, 1, 0.8, 4, g)
    log_w, x, _, _ = _ref_anneal(target, base, samples, betas.flip(0), steps[::-1], 1, g)
    torch.testing.assert_close(res.step_sizes, torch.tensor(steps, dtype=F64), rtol=1e-13, atol=0)
    torch.testing.assert_close(res.log_weights, log_w, rtol=0, atol=1e-12)
    torch.testing.assert_close(res.x, x, rtol=0, atol=1e-12)


def test_box_base_run_equals_the_reference_loop():
    """With a UniformBox base the same loop holds (E₀ = 0 inside); log Z₀ = Σ log(h − l)."""
    target = Gaussian([0.5, 0.4], [[0.05, 0.01], [0.01, 0.08]], dtype=F64)
    base = UniformBox(torch.tensor([0.0, -0.5]), torch.tensor([1.0, 1.5]), (2,), dtype=F64)
    betas = schedule(3, "geometric", beta_min=0.05)
    res = ais(target, base, 6, betas, 0.05, n_mcmc=2, generator=_gen(6))
    g = _gen(6)
    log_w, x, _, _ = _ref_anneal(target, base, base.sample(6, g), betas, [0.05] * 4, 2, g)
    torch.testing.assert_close(res.log_weights, log_w, rtol=0, atol=1e-12)
    torch.testing.assert_close(res.x, x, rtol=0, atol=1e-12)
    assert res.log_z0 == pytest.approx(math.log(2.0), rel=1e-14)
    assert res.log_z == pytest.approx(math.log(2.0) + _lme(log_w), rel=1e-12)


def test_float32_model_weights_accumulate_in_float64():
    """A float32 target and base: each increment Δβ_k (E_θ − E₀)(x) is formed in float64, so
    without moves the K shares add up to −(E_θ − E₀)(x₀) to float64 round-off (in float32
    each of the 5 products would be rounded to ~1e-7 relative)."""
    target = Gaussian([0.4, -0.3], [[0.8, 0.25], [0.25, 0.5]], dtype=torch.float32)
    base = Gaussian([0.0, 0.1], [[2.0, 0.3], [0.3, 1.5]], dtype=torch.float32)
    res = ais(target, base, 64, schedule(5, "sigmoid"), n_mcmc=0, generator=_gen(1))
    x0 = base.sample(64, _gen(1))
    inc = (target(x0) - base(x0)).detach().to(F64)
    assert res.log_weights.dtype == F64
    torch.testing.assert_close(res.log_weights, -inc, rtol=1e-13, atol=1e-13)
