"""Argument checks and built-in groups of ebmref/transitions.py: every constructor refuses bad
values with a ValueError whose full message names the argument and its allowed range, accepts
the boundary values of that range; the built-in groups (rotations, sign flips, reflections) hold
exactly the documented elements in the requested dtype, keep ``prob`` and skip the group check;
the group check names the failing condition, the worst product and its Frobenius distance."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
import torch

import ebmref.transitions as tr
from ebmref.transitions import Augment, ElasticDeform, GridElasticDeform, SymmetryMove


def _raises(message: str):
    """pytest.raises(ValueError) matching the whole message."""
    return pytest.raises(ValueError, match="^" + re.escape(message) + "$")


def _rotation(a: float) -> torch.Tensor:
    return torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]],
                        dtype=torch.float64)


def test_augment_argument_checks():
    """Each probability/nonnegative/crop/kernel argument is checked under its own name."""
    with _raises("hflip: must lie in [0, 1], got 1.5"):
        Augment(hflip=1.5)
    with _raises("brightness: must be a finite number >= 0, got -0.1"):
        Augment(brightness=-0.1)
    with _raises("contrast: must be a finite number >= 0, got -0.1"):
        Augment(contrast=-0.1)
    with _raises("prob: must lie in [0, 1], got 2.0"):
        Augment(prob=2.0)
    with _raises("crop_scale: need 0 < low <= high <= 1, got (0.5, 1.5)"):
        Augment(crop_scale=(0.5, 1.5))
    for kernel in (2, 4, 0, -1):
        with _raises(f"blur_kernel: must be an odd integer >= 1, got {kernel}"):
            Augment(blur_kernel=kernel)
    # boundaries of the documented ranges: low == high, high == 1, kernel 1
    Augment(crop_scale=(0.5, 0.5))
    Augment(crop_scale=(1.0, 1.0), blur_kernel=1, hflip=1.0, prob=0.0)


@pytest.mark.parametrize("cls", [ElasticDeform, GridElasticDeform])
def test_elastic_argument_checks(cls):
    """sigma ≥ 0, points ≥ 2 (2 allowed: a single linear/cubic cell), prob in [0, 1]."""
    with _raises("sigma: must be a finite number >= 0, got -1.0"):
        cls(sigma=-1.0)
    with _raises("points: must be an integer in [2, ∞], got 1"):
        cls(points=1)
    with _raises("prob: must lie in [0, 1], got -0.1"):
        cls(prob=-0.1)
    assert cls(points=2).points == 2


def test_elastic_deform_order_range():
    """The spline order is an integer in [0, 4] (elasticdeform's range), both ends allowed."""
    for order in (5, -1):
        with _raises(f"order: must be an integer in [0, 4], got {order}"):
            ElasticDeform(order=order)
    ElasticDeform(order=0)
    ElasticDeform(order=4)


def test_symmetry_move_shape_orthogonality_and_prob_checks():
    """Shape (G, d, d) with G ≥ 1, orthogonality to 1e-6 (a float32 group, orthogonal only to
    float32 rounding, passes), prob in [0, 1]."""
    with _raises("group: expected matrices (G, d, d), got shape (0, 2, 2)"):
        SymmetryMove(torch.zeros(0, 2, 2))
    with _raises("group: expected matrices (G, d, d), got shape (1, 2, 3)"):
        SymmetryMove(torch.zeros(1, 2, 3))
    with _raises("group: every element must be an orthogonal matrix"):
        SymmetryMove(torch.diag(torch.tensor([1.01, 1.0], dtype=torch.float64))[None])
    with _raises("prob: must lie in [0, 1], got 1.5"):
        SymmetryMove(torch.eye(2)[None], prob=1.5)
    # Q diag(R_k, 1) Qᵀ rounded to float32: G Gᵀ − I is ~3e-8 off the diagonal
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0),
                                       dtype=torch.float64))
    g = torch.zeros(5, 3, 3, dtype=torch.float64)
    g[:, 2, 2] = 1.0
    for k in range(5):
        g[k, :2, :2] = _rotation(2 * math.pi * k / 5)
    g32 = (q @ g @ q.T).float()
    off = (g32 @ g32.transpose(1, 2) - torch.eye(3)).abs().max()
    assert 1e-8 < off < 1e-6
    SymmetryMove(g32, check_group=False)


def test_builtin_group_size_arguments():
    """n, dim ≥ 1 (the trivial cases allowed); reflections cap dim at 16 (2^16 elements)."""
    with _raises("n: must be an integer in [1, ∞], got 0"):
        SymmetryMove.rotations(0)
    with _raises("dim: must be an integer in [1, ∞], got 0"):
        SymmetryMove.sign_flips(0)
    for dim in (0, 17):
        with _raises(f"dim: must be an integer in [1, 16], got {dim}"):
            SymmetryMove.reflections(dim)
    torch.testing.assert_close(SymmetryMove.rotations(1).group,
                               torch.eye(2, dtype=torch.float64)[None], rtol=0, atol=0)
    one = torch.tensor([[[1.0]], [[-1.0]]], dtype=torch.float64)
    torch.testing.assert_close(SymmetryMove.sign_flips(1).group, one, rtol=0, atol=0)
    torch.testing.assert_close(SymmetryMove.reflections(1).group, one, rtol=0, atol=0)


def test_builtin_groups_elements_dtype_and_prob():
    """sign_flips = {I, −I}; reflections = every diag(±1, …, ±1) once; rotations = R(2πk/n);
    float64 unless asked otherwise; prob is kept."""
    flips = SymmetryMove.sign_flips(3, prob=0.25)
    eye = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(flips.group, torch.stack([eye, -eye]), rtol=0, atol=0)
    assert flips.prob == 0.25
    refl = SymmetryMove.reflections(3, prob=0.25)
    assert refl.group.dtype == torch.float64 and refl.prob == 0.25
    diags = sorted(tuple(torch.diagonal(m).tolist()) for m in refl.group)
    assert diags == sorted(itertools.product([1.0, -1.0], repeat=3))
    torch.testing.assert_close(refl.group, torch.diag_embed(torch.diagonal(refl.group, 0, 1, 2)),
                               rtol=0, atol=0)
    rot = SymmetryMove.rotations(6)
    a = 2 * np.pi * np.arange(6) / 6
    expected = np.stack([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]).transpose(2, 0, 1)
    np.testing.assert_allclose(rot.group.numpy(), expected, rtol=0, atol=1e-15)
    for make in (SymmetryMove.rotations, SymmetryMove.sign_flips, SymmetryMove.reflections):
        assert make(2).group.dtype == torch.float64
        assert make(2, dtype=torch.float32).group.dtype == torch.float32


def test_builtin_groups_skip_the_group_check(monkeypatch):
    """The constructors build groups by construction and pass check_group=False (the check is
    O(|G|³d²)); a user-given group is checked."""
    def refuse(group, tol=1e-6):
        raise AssertionError("group check called")

    monkeypatch.setattr(tr, "_check_is_group", refuse)
    SymmetryMove.rotations(8)
    SymmetryMove.sign_flips(3)
    SymmetryMove.reflections(3)
    with pytest.raises(AssertionError, match="group check called"):
        SymmetryMove(torch.eye(2)[None])


def test_symmetry_move_repr():
    assert repr(SymmetryMove.rotations(8, prob=0.5)) == \
        "SymmetryMove(group of 8 maps in R^2, prob=0.5)"


def test_group_check_names_the_worst_product():
    """{I, R(π/6), R(π/3)}: R(π/6)R(π/3) = R(π/2) is 2√2 sin(π/12) ≈ 0.73 from R(π/3), and
    R(π/3)² = R(2π/3) is 2√2 sin(π/6) = √2 from it (‖R(a) − R(b)‖ = 2√2 |sin((a − b)/2)|): the
    message names the farther pair (row 2, not the first failing row 1) and its distance."""
    group = torch.stack([_rotation(k * math.pi / 6) for k in range(3)])
    far = 2 * math.sqrt(2) * math.sin(math.pi / 6)
    with _raises(f"group: not closed under products (group[2] @ group[2] is not an element, "
                 f"distance {far:.2g})"):
        SymmetryMove(group)
    # the failing product in row 0: {R(π/2), I}, R(π/2)² = R(π) at distance 2 from both
    with _raises("group: not closed under products (group[0] @ group[0] is not an element, "
                 "distance 2)"):
        SymmetryMove(torch.stack([_rotation(math.pi / 2), _rotation(0.0)]))


def test_group_check_rejects_near_groups():
    """Sets within 3e-3 of a group are not groups: C₈ turned by 1e-3 (no identity) and C₈ with
    one element turned by 1e-3 (not closed)."""
    turned = torch.stack([_rotation(2 * math.pi * k / 8 + 1e-3) for k in range(8)])
    with _raises("group: the identity must be an element"):
        SymmetryMove(turned)
    bent = torch.stack([_rotation(2 * math.pi * k / 8 + (1e-3 if k == 3 else 0.0))
                        for k in range(8)])
    worst = 2 * math.sqrt(2) * math.sin(1e-3)  # R(3π/4 + δ)² = R(3π/2 + 2δ), 2δ from R(3π/2)
    with _raises(f"group: not closed under products (group[3] @ group[3] is not an element, "
                 f"distance {worst:.2g})"):
        SymmetryMove(bent)


def test_group_check_exact_groups_pass_at_zero_tolerance():
    """A group of exact ±1 matrices has distance exactly 0 from I and from every product, so it
    passes the check with tol = 0 (the tolerance is a bound, distance ≤ tol passes)."""
    tr._check_is_group(SymmetryMove.reflections(3).group, tol=0.0)
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    eye = torch.eye(2, dtype=torch.float64)
    tr._check_is_group(torch.stack([eye, swap, -eye, -swap]), tol=0.0)
