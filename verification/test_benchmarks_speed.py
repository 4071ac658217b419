"""Correctness of the speed paths: closed-form gradients equal autograd, MALA costs one
energy-and-gradient evaluation per step, and the benchmark scripts run end to end."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ebmref.energy import Energy, GaussianMixture
from ebmref.samplers import langevin, mala

ROOT = Path(__file__).resolve().parents[1]


def _mixture(dtype: torch.dtype, generator: torch.Generator, k: int = 5, d: int = 3):
    means = 3.0 * torch.randn(k, d, generator=generator, dtype=dtype)
    a = torch.randn(k, d, d, generator=generator, dtype=dtype)
    covs = a @ a.transpose(1, 2) / d + 0.2 * torch.eye(d, dtype=dtype)  # full, anisotropic
    logits = torch.randn(k, generator=generator, dtype=dtype)
    return GaussianMixture(logits, means, covs, dtype=dtype)


def test_mixture_closed_form_gradient_equals_autograd():
    g = torch.Generator().manual_seed(7)
    gm = _mixture(torch.float64, g)
    # Points near the modes, between them and far out (responsibilities saturate there).
    x = torch.cat([gm.sample(200, g), 10.0 * torch.randn(200, 3, generator=g, dtype=torch.float64)])
    e_cf, g_cf = gm.energy_and_grad(x)
    e_ag, g_ag = Energy.energy_and_grad(gm, x)  # the generic autograd path
    scale = g_ag.abs().amax(-1, keepdim=True).clamp_min(1.0)
    assert torch.allclose(e_cf, e_ag, rtol=1e-12, atol=1e-10)
    assert ((g_cf - g_ag).abs() / scale).max().item() < 1e-10
    # The same check catches a wrong closed form: dropping the responsibilities' weights.
    wrong = torch.einsum("bkd,kde->be", x[:, None, :] - gm.means,
                         torch.cholesky_inverse(torch.tril(gm.scale_trils))) / gm.means.shape[0]
    assert ((wrong - g_ag).abs() / scale).max().item() > 1e-3


def test_mixture_closed_form_keeps_graph_path():
    g = torch.Generator().manual_seed(8)
    gm = _mixture(torch.float64, g, k=3, d=2)
    x = torch.randn(16, 2, generator=g, dtype=torch.float64)
    e, grad = gm.energy_and_grad(x, create_graph=True)
    # create_graph falls back to autograd, so the gradient depends on θ differentiably.
    (grad.sum() + e.sum()).backward()
    assert gm.means.grad is not None and torch.isfinite(gm.means.grad).all()
    _, g_cf = gm.energy_and_grad(x)
    assert torch.allclose(grad.detach(), g_cf, rtol=0, atol=1e-10)


class _Counting(Energy):
    def __init__(self, base: Energy):
        super().__init__()
        self.base, self.calls = base, 0
        self.event_shape = base.event_shape

    def forward(self, x):
        return self.base(x)

    def energy_and_grad(self, x, create_graph=False):
        self.calls += 1
        return self.base.energy_and_grad(x, create_graph=create_graph)


@pytest.mark.parametrize("n_steps", [1, 10])
def test_mala_one_gradient_evaluation_per_step(n_steps):
    g = torch.Generator().manual_seed(9)
    counting = _Counting(_mixture(torch.float64, g, k=2, d=2))
    x0 = torch.randn(32, 2, generator=g, dtype=torch.float64)
    mala(counting, x0, n_steps, 0.1, generator=g)
    assert counting.calls == n_steps + 1  # the start state once, then one per proposal
    counting.calls = 0
    langevin(counting, x0, n_steps, 0.1, generator=g)
    assert counting.calls == n_steps


def test_sampler_benchmark_runs_and_prints_ratios():
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.samplers", "--chains", "200",
         "--steps", "5", "--work", "1000", "--repeats", "2",
         "--no-torchebm"],
        check=False, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    rows = [ln for ln in out.stdout.splitlines() if ln.startswith("| ")]
    assert any("langevin" in r and "mixture" in r for r in rows)
    assert any("mala" in r for r in rows)
    # every data row ends with finite positive numbers (throughputs and ratios)
    nums = [float(c) for r in rows[2:] for c in r.strip("|").split("|")[4:] if
            c.strip() not in ("", "–", "n/a")]
    assert nums and all(math.isfinite(v) and v > 0 for v in nums)


@pytest.mark.parametrize("d", [1, 2, 5, 8, 9, 20])
def test_small_matmul_and_row_sum_equal_the_plain_ops(d):
    from ebmref.energy import row_sum, small_matmul
    g = torch.Generator().manual_seed(d)
    a = torch.randn(300, d, generator=g, dtype=torch.float64)
    m = torch.randn(d, d, generator=g, dtype=torch.float64)
    torch.testing.assert_close(small_matmul(a, m), a @ m, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(row_sum(a), a.sum(-1), rtol=1e-13, atol=1e-13)
    x = torch.randn(4, 3, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(row_sum(x), x.sum((1, 2)), rtol=1e-13, atol=1e-13)


def test_gaussian_grad_only_path_equals_autograd():
    from ebmref.energy import Gaussian
    g = torch.Generator().manual_seed(3)
    a = torch.randn(3, 3, generator=g, dtype=torch.float64)
    gauss = Gaussian(torch.randn(3, generator=g, dtype=torch.float64),
                     a @ a.T + 0.5 * torch.eye(3, dtype=torch.float64), dtype=torch.float64)
    x = 4.0 * torch.randn(100, 3, generator=g, dtype=torch.float64)
    _, g_auto = Energy.energy_and_grad(gauss, x)
    torch.testing.assert_close(gauss.grad(x), g_auto, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gauss.energy_and_grad(x)[1], g_auto, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gauss.energy_and_grad(x)[0], gauss(x), rtol=1e-10, atol=1e-10)


_INT = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(_INT[t.element_size()])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("event", [(), (1,), (2,), (3,), (5,), (1, 4, 4)])
def test_mala_cpu_select_equals_torch_where_bit_for_bit(dtype, event):
    """mala's CPU select (bitwise on integer words for large tensors) returns torch.where's bits
    exactly, NaN and ±inf rows (with distinct NaN payloads) included, and leaves its inputs
    untouched."""
    from ebmref.samplers import _BITWISE_MIN_NUMEL, _select
    g = torch.Generator().manual_seed(11)
    n = 1 << 14
    assert n >= _BITWISE_MIN_NUMEL  # large enough for the bitwise path, not torch.where
    new = torch.randn(n, *event, generator=g, dtype=torch.float64).to(dtype)
    old = torch.randn(n, *event, generator=g, dtype=torch.float64).to(dtype)
    new[1::4] = float("nan")  # NaN proposals: some accepted, some rejected below
    new[2::8] = float("inf")
    old[3::8] = -float("nan")
    _bits(new)[5] ^= 1  # a NaN row with another payload (or a nudged finite row)
    accept = torch.rand(n, generator=g) < 0.5
    accept[:4] = torch.tensor([True, True, False, False])
    before = (_bits(new).clone(), _bits(old).clone())
    expected = torch.where(accept.view(-1, *[1] * len(event)), new, old)
    assert torch.equal(_bits(_select(accept, new, old)), _bits(expected))
    assert torch.equal(_bits(new), before[0]) and torch.equal(_bits(old), before[1])
    # The same comparison catches a select that mixes up the two sides.
    assert not torch.equal(_bits(_select(accept, old, new)), _bits(expected))
    assert not torch.equal(_bits(_select(~accept, new, old)), _bits(expected))
