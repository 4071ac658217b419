"""C20 (§5.2.2): "spectral normalization … has the effect of controlling the Lipschitz constant
of the energy function".

PyTorch's ``spectral_norm`` divides a weight by the largest singular value of the weight
*reshaped to a matrix* (out, in·k_h·k_w), estimated by power iteration. Measured here:

* linear layers: σ_max(W/σ̂) = 1 (to power-iteration accuracy), so an MLP with 1-Lipschitz
  activations (leaky ReLU) is 1-Lipschitz — gradient norms at hypothesis-generated inputs ≤ 1;
  with Swish (Lipschitz ≈ 1.0998) the bound is 1.0998^depth;
* convolutions: the operator norm of the convolution on images is *not* the reshaped matrix's
  norm. It is at most √(⌈k_h/s⌉⌈k_w/s⌉) times it for stride s (every input pixel lies in at
  most that many windows): 3 for 3×3 stride 1, 2 for IGEBM's 4×4 stride 2. Both are nearly
  tight: a constant 3×3 kernel reaches (1 + 2cos(π/(n+1)))²/3 → 3 on n×n images with zero
  padding, a constant 4×4/2 kernel 1.976 on 28×28. A spectrally normalised CNN has Lipschitz
  bound ∏ ‖conv‖ > 1, and a CNN with constant weights comes within 15 % of it (‖∇E‖ = 16.5).
  Operator norms are measured by power iteration with the convolution and its adjoint
  (conv_transpose2d, or autograd's vector-Jacobian product).
Verdict: qualified — the Lipschitz constant is bounded (controlled), but by 1 only for linear
layers; for the IGEBM CNN the measured layer norms and their product are printed below.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ebmref.nets import IGEBMEnergy, MLPEnergy, _same_padding

SWISH_LIPSCHITZ = 1.0998  # max_x d/dx [x σ(x)] ≈ 1.09984


def converge_power_iteration(module: nn.Module, example: torch.Tensor, n: int = 200) -> None:
    """Run forward passes in train mode: each advances spectral_norm's power iteration."""
    module.train()
    with torch.no_grad():
        for _ in range(n):
            module(example)
    module.eval()


def operator_norm(apply, adjoint, shape, n_iter: int = 300, seed: int = 0,
                  dtype: torch.dtype = torch.float64) -> float:
    """‖A‖₂ by power iteration on AᵀA (A linear on tensors of ``shape``); from below."""
    v = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    v = v / v.norm()
    sigma = 0.0
    for _ in range(n_iter):
        w = adjoint(apply(v))
        sigma = math.sqrt(float(w.norm()))
        v = w / w.norm()
    return sigma


def vjp_adjoint(apply, shape, dtype: torch.dtype = torch.float64):
    """Aᵀ via autograd (exact for a linear A)."""
    def adjoint(y):
        x = torch.zeros(shape, dtype=dtype, requires_grad=True)
        (g,) = torch.autograd.grad(apply(x), x, grad_outputs=y)
        return g
    return adjoint


# --------------------------------------------------------------------------- linear layers


def test_linear_spectral_norm_gives_unit_operator_norm():
    torch.manual_seed(0)
    layer = spectral_norm(nn.Linear(20, 30).double())
    converge_power_iteration(layer, torch.zeros(1, 20, dtype=torch.float64))
    sigma = float(torch.linalg.matrix_norm(layer.weight.detach(), ord=2))
    assert abs(sigma - 1.0) < 1e-6
    raw = float(torch.linalg.matrix_norm(layer.parametrizations.weight.original.detach(), ord=2))
    assert abs(raw - 1.0) > 0.1  # the normalisation did something
    print(f"linear: sigma_max after spectral norm = {sigma:.9f} (raw {raw:.4f})")


def _sn_mlp(activation: str, depth: int = 3) -> MLPEnergy:
    torch.manual_seed(1)
    e = MLPEnergy(4, hidden=32, depth=depth, activation=activation, spectral_norm=True).double()
    converge_power_iteration(e, torch.zeros(1, 4, dtype=torch.float64))
    return e


_LEAKY = _sn_mlp("leaky_relu")
_SWISH = _sn_mlp("swish")
_MAX_SEEN = {"leaky_relu": 0.0, "swish": 0.0}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-50, 50, allow_nan=False), min_size=4, max_size=4))
def test_sn_mlp_gradient_norm_bounded_by_product_of_layer_norms(point):
    x = torch.tensor([point], dtype=torch.float64)
    for name, energy, bound in (("leaky_relu", _LEAKY, 1.0),
                                ("swish", _SWISH, SWISH_LIPSCHITZ**3)):
        g = energy.grad(x).norm()
        _MAX_SEEN[name] = max(_MAX_SEEN[name], float(g))
        assert float(g) <= bound * (1 + 1e-6)


def test_lipschitz_bound_is_nearly_attained_along_a_ray():
    """Far along a ray all leaky-ReLU units are in one linear regime: the measured gradient
    norm there is what the bound allows to be large, and it stays ≤ 1."""
    d = torch.randn(64, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g = _LEAKY.grad(1e3 * d / d.norm(dim=1, keepdim=True)).norm(dim=1)
    assert float(g.max()) <= 1 + 1e-6
    print(f"SN-MLP(leaky ReLU) max ‖∇E‖ over hypothesis inputs {_MAX_SEEN['leaky_relu']:.4f}, "
          f"on rays {float(g.max()):.4f} (bound 1)")


# --------------------------------------------------------------------------- convolutions


def test_conv_adjoint_and_power_iteration_against_closed_form():
    """A constant 3×3 kernel w = 1/3 (its reshaped (1, 9) matrix has σ = 3w = 1, exactly what
    spectral_norm produces) has operator norm (1 + 2cos(π/(n+1)))²/3 on n×n images with zero
    padding (separable tridiagonal Toeplitz). The power iteration reproduces it; a naive
    expectation "‖conv‖ ≤ 1 after spectral norm" fails (broken variant)."""
    n = 28
    conv = spectral_norm(nn.Conv2d(1, 1, 3, padding=1, bias=False).double())
    with torch.no_grad():
        conv.parametrizations.weight.original.fill_(0.7)
    converge_power_iteration(conv, torch.zeros(1, 1, n, n, dtype=torch.float64), 20)
    w = conv.weight.detach()
    assert torch.allclose(w, torch.full_like(w, 1 / 3), atol=1e-12)
    assert abs(float(torch.linalg.matrix_norm(w.reshape(1, -1), ord=2)) - 1) < 1e-12
    apply = lambda x: F.conv2d(x, w, padding=1)
    adjoint = lambda y: F.conv_transpose2d(y, w, padding=1)
    x = torch.randn(1, 1, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.randn(1, 1, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert abs(float((apply(x) * y).sum() - (x * adjoint(y)).sum())) < 1e-12
    exact = (1 + 2 * math.cos(math.pi / (n + 1))) ** 2 / 3
    measured = operator_norm(apply, adjoint, (1, 1, n, n), n_iter=2000)
    assert abs(measured - exact) < 1e-6
    with pytest.raises(AssertionError):
        assert measured <= 1 + 1e-3
    print(f"constant 3x3 kernel after spectral norm: ‖conv‖ = {measured:.6f} "
          f"(exact {exact:.6f}, limit 3)")


def _box_1d(size: int, kernel: int, stride: int, lo: int) -> torch.Tensor:
    """The 1-D strided convolution with ``kernel`` taps 1/√kernel and ``lo`` zeros of padding
    on the left, as an explicit (⌈size/stride⌉, size) matrix."""
    out = math.ceil(size / stride)
    a = torch.zeros(out, size, dtype=torch.float64)
    for i in range(out):
        for t in range(kernel):
            j = stride * i + t - lo
            if 0 <= j < size:
                a[i, j] = 1 / math.sqrt(kernel)
    return a


def test_stride2_conv_norm_is_at_most_2_and_nearly_attained():
    """A constant 4×4 stride-2 kernel after spectral_norm (w = 1/4, reshaped σ = 1) with
    IGEBM's SAME padding on 28×28 is the separable A ⊗ A of the 1-D box matrix A (taps ½,
    stride 2), so ‖conv‖ = σ_max(A)² (dense 14×28 matrix, independent of the power iteration),
    = 1.976. Every input pixel lies in at most ⌈4/2⌉² = 4 windows, so ‖conv‖ ≤ √4·σ_reshaped = 2:
    the bound holds and is nearly attained (a bound of √16 = 4 would be loose by 2×)."""
    n = 28
    lo, hi = _same_padding(n, 4, 2)
    conv = spectral_norm(nn.Conv2d(1, 1, 4, stride=2, bias=False).double())
    with torch.no_grad():
        conv.parametrizations.weight.original.fill_(0.7)
    converge_power_iteration(conv, torch.zeros(1, 1, n + lo + hi, n + lo + hi,
                                               dtype=torch.float64), 20)
    w = conv.weight.detach()
    assert torch.allclose(w, torch.full_like(w, 1 / 4), atol=1e-12)
    apply = lambda x: F.conv2d(F.pad(x, (lo, hi, lo, hi)), w, stride=2)
    measured = operator_norm(apply, vjp_adjoint(apply, (1, 1, n, n)), (1, 1, n, n), n_iter=500)
    exact = float(torch.linalg.matrix_norm(_box_1d(n, 4, 2, lo), ord=2)) ** 2
    assert abs(measured - exact) < 1e-6
    assert 1.95 < measured <= 2.0
    print(f"constant 4x4/2 kernel after spectral norm: ‖conv‖ = {measured:.6f} "
          f"(exact {exact:.6f}, bound 2)")


def _igebm_layer_maps(e: IGEBMEnergy, dtype: torch.dtype = torch.float32):
    """Each conv of the IGEBM CNN as a linear map (no bias) with its input shape and the
    bound √(⌈k/s⌉²) of its operator norm per unit reshaped σ (3 for 3×3/1, 2 for 4×4/2)."""
    maps = []
    w0 = e.conv0.weight.detach()
    maps.append(("conv0 3x3 1→64", lambda x: F.conv2d(x, w0, padding=1),
                 lambda y: F.conv_transpose2d(y, w0, padding=1), (1, 1, 28, 28), 3.0))
    size, cin = 28, 64
    for i, conv in enumerate(e.convs):
        w = conv.weight.detach()
        lo, hi = _same_padding(size, 4, 2)

        def apply(x, w=w, lo=lo, hi=hi):
            return F.conv2d(F.pad(x, (lo, hi, lo, hi)), w, stride=2)

        shape = (1, cin, size, size)
        maps.append((f"conv{i + 1} 4x4/2 {cin}→{w.shape[0]}", apply,
                     vjp_adjoint(apply, shape, dtype), shape, 2.0))
        size, cin = math.ceil(size / 2), w.shape[0]
    return maps


def test_igebm_spectral_norm_conv_operator_norms():
    """IGEBM CNN with spectral norm at initialisation: every reshaped kernel has σ = 1, the
    convolution operators have norms in (1, √(⌈k/s⌉²)] = (1, 3] (3×3/1) and (1, 2] (4×4/2), and
    the fully connected layers 1; the product of the norms bounds the network's Lipschitz
    constant. (float32; power-iteration norms are lower bounds.)"""
    torch.manual_seed(0)
    e = IGEBMEnergy(spectral_norm=True)  # float32: 4-digit norms, and float64 convs are slow
    converge_power_iteration(e, torch.zeros(1, 1, 28, 28), 60)
    # Power iteration underestimates σ (uᵀWv ≤ σ_max), so the normalised σ_max is ≥ 1; for the
    # wide layers (small spectral gap) it is still a few 1e-3 above 1 after 75 iterations.
    fc_sigma = [float(torch.linalg.matrix_norm(lin.weight.detach(), ord=2))
                for lin in (e.fc1, e.fc2)]
    assert all(1 - 1e-9 <= s_ <= 1 + 1e-2 for s_ in fc_sigma)
    bound = 1.0
    report = []
    for (name, apply, adjoint, shape, k_bound), layer in zip(_igebm_layer_maps(e),
                                                            (e.conv0, *e.convs)):
        w_layer = layer.weight.detach()
        reshaped = float(torch.linalg.matrix_norm(w_layer.reshape(w_layer.shape[0], -1), ord=2))
        assert 1 - 1e-9 <= reshaped <= 1 + 1e-2
        norm = operator_norm(apply, adjoint, shape, n_iter=40, dtype=torch.float32)  # ≤ ‖A‖
        assert 1.0 < norm <= k_bound * reshaped * (1 + 1e-5)
        bound *= norm
        report.append(f"{name}: {norm:.4f} (reshaped σ {reshaped:.5f})")
    print("IGEBM-SN conv operator norms: " + ", ".join(report)
          + f"; product bound {bound:.3f}; fc σ_max {fc_sigma[0]:.6f}, {fc_sigma[1]:.6f}")


def test_spectrally_normalised_cnn_is_not_1_lipschitz():
    """The IGEBM CNN with spectral norm on every layer but all weights constant and positive
    (each reshaped σ = 1, biases 0): at a constant image every leaky ReLU is in its identity
    regime, so ‖∇E‖ there is the norm of the product of the layers. It is 16.5 — far above the
    1 that "spectral normalisation makes the network 1-Lipschitz" would allow (broken reading)
    — and within the bound ∏‖conv‖·σ(fc1)·σ(fc2) = 19.4, 85 % of it: the product of layer
    norms is the right bound, and nearly attained. A constant conv with C_in, C_out channels
    and reshaped σ = 1 has ‖conv‖ = σ_max(A)², A the 1-D box matrix of :func:`_box_1d`."""
    e = IGEBMEnergy(spectral_norm=True).double()
    with torch.no_grad():
        for m in (e.conv0, *e.convs, e.fc1, e.fc2):
            m.parametrizations.weight.original.fill_(1.0)
            m.bias.zero_()
    converge_power_iteration(e, torch.zeros(1, 1, 28, 28, dtype=torch.float64), 5)
    boxes = [_box_1d(28, 3, 1, 1)]
    boxes += [_box_1d(size, 4, 2, _same_padding(size, 4, 2)[0]) for size in e._sizes[:-1]]
    norms = [float(torch.linalg.matrix_norm(a, ord=2)) ** 2 for a in boxes]
    layers = (e.conv0, *e.convs, e.fc1, e.fc2)
    sigma = [float(torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)) for m in layers]
    assert max(abs(s_ - 1) for s_ in sigma) < 1e-12  # spectral norm exact for rank-1 weights
    bound = math.prod(norms) * math.prod(sigma[-2:])
    grad = float(e.grad(torch.full((1, 1, 28, 28), 0.5, dtype=torch.float64)).norm())
    assert 0.8 * bound < grad <= bound * (1 + 1e-9)
    with pytest.raises(AssertionError):
        assert grad <= 1.0
    print(f"SN-IGEBM with constant weights: ‖∇E‖ = {grad:.4f}, conv norms "
          f"{', '.join(f'{n_:.4f}' for n_ in norms)}, product bound {bound:.4f}")
