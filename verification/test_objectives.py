"""Software tests of ebmref.objectives: formulas, gradient routing, argument validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ebmref.energy import Energy, Gaussian
from ebmref.entropy import kozachenko_leonenko, nearest_neighbour_surrogate
from ebmref.objectives import contrastive_loss, frozen_energy, kl_loss
from ebmref.samplers import langevin

DT = torch.float64
# float() of a loss that still has a graph warns; the values are what is compared here.
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


class _BufferedEnergy(Energy):
    """E(x) = ½ w‖x − c‖² with a learnable w and a buffer c (to check buffers are frozen too)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.5, dtype=DT))
        self.register_buffer("c", torch.tensor([0.5, -0.5], dtype=DT))

    def forward(self, x):
        return 0.5 * self.w * ((x - self.c) ** 2).sum(-1)


def _gauss():
    return Gaussian(torch.tensor([0.2, -0.1], dtype=DT),
                    torch.tensor([[1.0, 0.3], [0.3, 0.8]], dtype=DT), dtype=DT)


def test_contrastive_loss_formula_and_gradient():
    e_pos = torch.tensor([1.0, 2.0, 3.0], dtype=DT, requires_grad=True)
    e_neg = torch.tensor([0.5, -1.0], dtype=DT, requires_grad=True)
    loss = contrastive_loss(e_pos, e_neg, l2=0.5)
    expected = 2.0 - (-0.25) + 0.5 * ((1 + 4 + 9) / 3 + (0.25 + 1) / 2)
    assert float(loss.detach()) == pytest.approx(expected, abs=1e-14)
    loss.backward()
    assert torch.allclose(e_pos.grad, (1 + 2 * 0.5 * e_pos.detach()) / 3)
    assert torch.allclose(e_neg.grad, (-1 + 2 * 0.5 * e_neg.detach()) / 2)
    assert float(contrastive_loss(e_pos, e_neg).detach()) == pytest.approx(2.25, abs=1e-14)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_contrastive_loss_rejects_bad_l2(bad):
    with pytest.raises(ValueError, match="^l2: "):
        contrastive_loss(torch.ones(3), torch.ones(3), l2=bad)


def test_contrastive_loss_rejects_bad_shapes():
    """Each energy vector is checked on its own, and the message shows the shape it got."""
    with pytest.raises(ValueError, match=r"^e_pos: .*\[3, 1\]"):
        contrastive_loss(torch.ones(3, 1), torch.ones(3))
    with pytest.raises(ValueError, match=r"^e_neg: .*\[0\]"):
        contrastive_loss(torch.ones(3), torch.ones(0))
    with pytest.raises(ValueError, match=r"^e_pos: .*None"):
        contrastive_loss([1.0, 2.0], torch.ones(3))


@pytest.mark.parametrize("which", ["e_pos", "e_neg"])
def test_contrastive_loss_checks_finiteness_unless_told_not_to(which):
    """Non-finite energies raise by default, naming the vector; ``check_finite=False`` (the
    training loop, which checks over all ranks) returns the non-finite loss."""
    e = {"e_pos": torch.ones(3), "e_neg": torch.ones(3)}
    e[which] = torch.tensor([1.0, float("inf"), 0.0])
    with pytest.raises(ValueError, match=f"^{which}: "):
        contrastive_loss(e["e_pos"], e["e_neg"])
    assert not torch.isfinite(contrastive_loss(e["e_pos"], e["e_neg"], check_finite=False))


def test_frozen_energy_value_and_gradient_routing():
    """Same values as the energy; gradient reaches x, never the parameters or buffers; the
    module's own parameters are left untouched and still trainable afterwards."""
    energy = _BufferedEnergy()
    x = torch.tensor([[1.0, 2.0], [0.0, -1.0]], dtype=DT, requires_grad=True)
    e = frozen_energy(energy, x)
    assert torch.allclose(e, energy(x).detach())
    assert e.requires_grad  # a graph through x
    (gx,) = torch.autograd.grad(e.sum(), x, retain_graph=True)
    assert torch.allclose(gx, 1.5 * (x.detach() - energy.c))
    g = torch.autograd.grad(e.sum(), energy.w, allow_unused=True)[0]
    assert g is None
    # Broken variant: the plain call does reach the parameter.
    assert torch.autograd.grad(energy(x).sum(), energy.w)[0] is not None
    assert energy.w.requires_grad


def test_kl_loss_reaches_theta_only_through_the_sampler():
    """With a frozen energy, ∂/∂θ of the KL loss is the reparametrisation gradient: with zero
    differentiated steps (x̃ detached) it is refused; with k ≥ 1 it is finite."""
    energy = _gauss()
    gen = torch.Generator().manual_seed(0)
    x0 = energy.sample(32, gen)
    # The message names the remedy.
    with pytest.raises(ValueError, match=r"^x_diff: carries no graph.*"
                                         r"langevin\(\.\.\., differentiable_steps >= 1\)$"):
        kl_loss(energy, langevin(energy, x0, 3, 0.1, generator=gen).x)
    x_diff = langevin(energy, x0, 3, 0.1, generator=gen, differentiable_steps=1).x
    g = torch.autograd.grad(kl_loss(energy, x_diff), (energy.mu, energy.scale_tril))
    assert all(torch.isfinite(t).all() for t in g)
    with torch.no_grad():  # evaluation without a graph is allowed (logging)
        kl_loss(energy, x0)


def test_kl_loss_signs_and_entropy_terms():
    energy = _gauss()
    gen = torch.Generator().manual_seed(1)
    x_diff = langevin(energy, energy.sample(50, gen), 4, 0.1, generator=gen,
                      differentiable_steps=2).x
    ref = energy.sample(30, gen)
    from ebmref.entropy import kozachenko_leonenko, nearest_neighbour_surrogate
    e = float(frozen_energy(energy, x_diff).mean())
    du = kl_loss(energy, x_diff, sign="du2020", entropy_weight=0.3, reference=ref)
    assert float(du) == pytest.approx(e - 0.3 * float(nearest_neighbour_surrogate(x_diff, ref)),
                                      abs=1e-12)
    cd = kl_loss(energy, x_diff, sign="cd", entropy_weight=0.3, reference=ref)
    assert float(cd) == pytest.approx(-float(du), abs=1e-12)
    kl = kl_loss(energy, x_diff, entropy_weight=1.0, entropy="kl", k=3)
    assert float(kl) == pytest.approx(e - float(kozachenko_leonenko(x_diff, k=3)), abs=1e-12)


@pytest.mark.parametrize("kwargs, name", [
    ({"sign": "minus"}, "sign"),
    ({"entropy": "knn"}, "entropy"),
    ({"entropy_weight": -1.0}, "entropy_weight"),
    ({"k": 0, "entropy": "kl"}, "k"),
    ({"k": 2, "entropy": "nn"}, "k"),
])
def test_kl_loss_validation(kwargs, name):
    """Each bad argument is named first; the surrogate's k names the estimator that takes k."""
    energy = _gauss()
    gen = torch.Generator().manual_seed(2)
    x_diff = langevin(energy, energy.sample(8, gen), 2, 0.1, generator=gen,
                      differentiable_steps=1).x
    remedy = r".*\(use entropy='kl' for k > 1\)$" if kwargs.get("entropy") == "nn" else ""
    with pytest.raises(ValueError, match=f"^{name}: {remedy}"):
        kl_loss(energy, x_diff, **kwargs)


@pytest.mark.parametrize("bad, shown", [
    ([[0.0, 1.0]], "None"),
    (torch.zeros(3, dtype=DT, requires_grad=True), r"\[3\]"),
    (torch.zeros(0, 2, dtype=DT, requires_grad=True), r"\[0, 2\]"),
    (torch.tensor([[0.0, float("nan")]], dtype=DT, requires_grad=True), "finite"),
])
def test_kl_loss_refuses_bad_chain_ends(bad, shown):
    """Not a tensor of chain states (B, ...) with B ≥ 1 (the message shows the shape it got),
    or non-finite (checked by default)."""
    with pytest.raises(ValueError, match=f"^x_diff: .*{shown}"):
        kl_loss(_gauss(), bad)


def test_kl_loss_of_one_chain_without_entropy():
    """One chain is enough for the energy term; no entropy is estimated at weight 0 (a single
    point has no neighbour)."""
    energy = _gauss()
    x = torch.tensor([[0.3, -0.2]], dtype=DT, requires_grad=True)
    assert float(kl_loss(energy, x)) == pytest.approx(float(energy(x.detach())[0]), abs=1e-14)


@pytest.mark.parametrize("entropy", ["nn", "kl"])
def test_kl_loss_passes_groups_and_the_finiteness_switch_to_the_entropy(entropy):
    """groups = G estimates the entropy of each of the G blocks on its own (an ensemble's
    members); a non-finite reference raises by default, and propagates with
    ``check_finite=False`` (the training loop's own check)."""
    energy = _gauss()
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(4), dtype=DT)
    x[4:] += 10.0  # two far-apart blocks: pooled neighbours differ from per-block ones
    ref = torch.randn(6, 2, generator=torch.Generator().manual_seed(5), dtype=DT)
    est = (nearest_neighbour_surrogate if entropy == "nn"
           else lambda *a, **k: kozachenko_leonenko(a[0], 1, *a[1:], **k))
    e = float(energy(x).mean())
    for groups in (1, 2):
        got = kl_loss(energy, x.clone().requires_grad_(True), entropy_weight=1.0,
                      entropy=entropy, reference=ref, groups=groups)
        want = e - float(est(x, ref, min_distance=1e-8, groups=groups))
        assert float(got) == pytest.approx(want, abs=1e-12)
    assert float(est(x, ref, groups=1)) != pytest.approx(float(est(x, ref, groups=2)), abs=0.1)
    bad = ref.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="^reference: "):
        kl_loss(energy, x.clone().requires_grad_(True), entropy_weight=1.0, entropy=entropy,
                reference=bad)
    nan_x = x.clone()
    nan_x[0, 0] = float("nan")
    out = kl_loss(energy, nan_x.requires_grad_(True), entropy_weight=1.0, entropy=entropy,
                  reference=ref, check_finite=False)
    assert not torch.isfinite(out)


def test_kl_loss_reference_too_small():
    energy = _gauss()
    gen = torch.Generator().manual_seed(2)
    x_diff = langevin(energy, energy.sample(8, gen), 2, 0.1, generator=gen,
                      differentiable_steps=1).x
    with pytest.raises(ValueError, match="reference"):
        kl_loss(energy, x_diff, entropy_weight=1.0, entropy="kl", k=5, reference=x_diff[:3])
    with pytest.raises(ValueError, match="x"):
        kl_loss(energy, x_diff[:3], entropy_weight=1.0, entropy="kl", k=3)


@pytest.mark.parametrize("entropy", ["nn", "kl"])
def test_kl_loss_survives_chains_tied_by_clamping(entropy):
    """Du's sampler clamps images to [0, 1]; chains pinned to the same corner tie exactly. The
    KL loss stays finite (distance floor) instead of −∞, and its θ-gradient is finite."""
    energy = _gauss()
    x0 = torch.full((6, 2), 5.0, dtype=DT)
    x_diff = langevin(energy, x0, 3, 0.1, noise=0.0, generator=None, clamp=(2.0, 3.0),
                      differentiable_steps=1).x
    assert (x_diff.detach() == x_diff.detach()[0]).all()  # every chain pinned to one point
    loss = kl_loss(energy, x_diff, sign="du2020", entropy_weight=0.3, entropy=entropy)
    grads = torch.autograd.grad(loss, list(energy.parameters()), allow_unused=True)
    assert torch.isfinite(loss.detach()) and all(torch.isfinite(g).all() for g in grads
                                                 if g is not None)
    with pytest.raises(ValueError, match="coincide"):
        kl_loss(energy, x_diff, entropy_weight=0.3, entropy=entropy, min_distance=0.0)
