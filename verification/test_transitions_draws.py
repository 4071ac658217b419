"""What the transitions of ebmref/transitions.py draw and compute, replayed from the generator:
ElasticDeform is elasticdeform's cubic/linear grid deformation with N(0, σ²) control points,
GridElasticDeform's field passes through its N(0, σ²) control points and its warp is bilinear
with repeated borders even on 2-pixel images, Augment is the documented torchvision v2 pipeline
seeded from the generator; every transition runs without a generator, leaves torch's global RNG
alone when given one (also with prob < 1), and prob picks per image between x and the moved x
(moved iff u < prob; prob = 1 draws no uniforms); Clamped clamps both ends of the box."""

from __future__ import annotations

import re

import pytest
import torch

from ebmref.transitions import Augment, Clamped, ElasticDeform, GridElasticDeform, SymmetryMove


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _replay(gen: torch.Generator) -> torch.Generator:
    """A generator in the same state as ``gen``."""
    replay = torch.Generator()
    replay.set_state(gen.get_state())
    return replay


def _images(b=4, c=1, h=10, w=10, dtype=torch.float64):
    return torch.rand(b, c, h, w, generator=_gen(0), dtype=dtype)


def test_elastic_deform_is_elasticdeform_with_normal_control_points():
    """Image i is deform_grid(x_i, σ Z_i) with Z_i (2, points, points) iid N(0, 1) drawn from the
    generator in float64 (54 draws: torch's float32 stream would differ), with the given spline
    order and border mode "nearest" by default."""
    etorch = pytest.importorskip("elasticdeform.torch")
    x = _images(3)
    gen = _gen(4)
    z = torch.randn((3, 2, 3, 3), generator=_replay(gen), dtype=torch.float64)
    y = ElasticDeform(sigma=2.0, points=3, order=1)(x, gen)
    ref = torch.stack([etorch.deform_grid(x[i], 2.0 * z[i], order=1, mode="nearest",
                                          axis=(1, 2)) for i in range(3)])
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-12)
    constant = etorch.deform_grid(x[0], 2.0 * z[0], order=1, mode="constant", axis=(1, 2))
    assert (constant - ref[0]).abs().max() > 1e-3  # the border mode is visible here


def test_grid_displacement_passes_through_normal_control_points():
    """With H − 1, W − 1 multiples of points − 1, the pixels on the control grid carry the
    control values σ Z (align_corners=True), Z iid N(0, 1) from the generator in the requested
    dtype; the field is (n, 2, H, W)."""
    deform = GridElasticDeform(sigma=1.5, points=3)
    gen = _gen(2)
    z = torch.randn((2, 2, 3, 3), generator=_replay(gen), dtype=torch.float64)
    field = deform.displacement(2, (5, 7), gen, torch.device("cpu"), torch.float64)
    assert field.shape == (2, 2, 5, 7) and field.dtype == torch.float64
    torch.testing.assert_close(field[:, :, ::2, ::3], 1.5 * z, rtol=0, atol=1e-12)
    f32 = deform.displacement(2, (5, 7), _gen(2), torch.device("cpu"), torch.float32)
    assert f32.dtype == torch.float32


def test_grid_elastic_call_warps_by_the_replayed_field():
    """__call__ = warp(x, displacement(...)) with the field drawn first, in x's dtype."""
    x = _images(2, h=9, w=9)
    deform = GridElasticDeform(sigma=1.0, points=3)
    gen = _gen(6)
    field = deform.displacement(2, (9, 9), _replay(gen), torch.device("cpu"), torch.float64)
    torch.testing.assert_close(deform(x, gen), deform.warp(x, field), rtol=0, atol=1e-12)


def test_warp_on_two_pixel_images():
    """2×2 image: no displacement is the identity, half a pixel right/down averages two pixels,
    and beyond the last pixel the border is repeated (grid positions 0 ↔ −1, 1 ↔ +1)."""
    x = torch.tensor([[[[1.0, 3.0], [5.0, 11.0]]]], dtype=torch.float64)
    deform = GridElasticDeform()
    zero = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(deform.warp(x, zero), x, rtol=0, atol=1e-12)
    cols = zero.clone()
    cols[:, 1] = 0.5
    torch.testing.assert_close(deform.warp(x, cols),
                               torch.tensor([[[[2.0, 3.0], [8.0, 11.0]]]], dtype=torch.float64),
                               rtol=0, atol=1e-12)
    rows = zero.clone()
    rows[:, 0] = 0.5
    torch.testing.assert_close(deform.warp(x, rows),
                               torch.tensor([[[[3.0, 7.0], [5.0, 11.0]]]], dtype=torch.float64),
                               rtol=0, atol=1e-12)


def _reference_augment(x, gen, ops):
    """torchvision v2.Compose(ops) per image under torch's global RNG seeded with a draw
    uniform on [0, 2^62) from the generator (Augment's documented mechanism)."""
    from torchvision.transforms import v2

    pipeline = v2.Compose(ops)
    seed = int(torch.randint(0, 2**62, (1,), generator=_replay(gen)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([pipeline(x[i]) for i in range(x.shape[0])])


def test_augment_is_the_documented_torchvision_pipeline():
    """Crop (with its scale range) → flip → colour jitter → blur, each present only when
    enabled, each with the given parameters; disabled ones draw nothing."""
    v2 = pytest.importorskip("torchvision.transforms.v2")
    x = _images(3, h=8, w=8, dtype=torch.float32)
    blur = {"crop_scale": None, "blur_sigma": (0.5, 0.9)}
    cases = [
        ({"crop_scale": (0.3, 0.6), "hflip": 0.5, "brightness": 0.4, "contrast": 0.3,
          "blur_sigma": (0.3, 1.2), "blur_kernel": 5},
         [v2.RandomResizedCrop((8, 8), scale=(0.3, 0.6), antialias=True),
          v2.RandomHorizontalFlip(0.5), v2.ColorJitter(brightness=0.4, contrast=0.3),
          v2.GaussianBlur(5, sigma=(0.3, 1.2))]),
        (blur, [v2.GaussianBlur(3, sigma=(0.5, 0.9))]),
        (blur | {"brightness": 0.4},
         [v2.ColorJitter(brightness=0.4), v2.GaussianBlur(3, sigma=(0.5, 0.9))]),
        (blur | {"contrast": 0.3},
         [v2.ColorJitter(contrast=0.3), v2.GaussianBlur(3, sigma=(0.5, 0.9))]),
    ]
    for i, (kwargs, ops) in enumerate(cases):
        gen = _gen(10 + i)
        ref = _reference_augment(x, gen, ops)
        assert torch.equal(Augment(**kwargs)(x, gen), ref), kwargs
        assert not torch.equal(ref, x)


_MOVES = {
    "elastic": (lambda p: ElasticDeform(sigma=1.0, prob=p), lambda: _images(8, h=6, w=6)),
    "grid": (lambda p: GridElasticDeform(sigma=1.0, prob=p), lambda: _images(8, h=6, w=6)),
    "augment": (lambda p: Augment(crop_scale=(0.5, 0.9), prob=p),
                lambda: _images(8, h=6, w=6, dtype=torch.float32)),
    "symmetry": (lambda p: SymmetryMove.rotations(4, prob=p),
                 lambda: torch.randn(8, 2, generator=_gen(0), dtype=torch.float64)),
}


@pytest.mark.parametrize("name", list(_MOVES))
def test_prob_picks_per_image_from_the_generator(name):
    """With a generator the global RNG is untouched, also for prob < 1; prob = ½ keeps each
    image either unmoved or moved exactly as with prob = 1 (the move's draws come first), both
    happen (among images the move changes) for this seed, and the same generator state gives
    the same result."""
    make, data = _MOVES[name]
    x = data()
    before = torch.get_rng_state()
    gen = _gen(3)
    full = make(1.0)(x, _replay(gen))
    half = make(0.5)(x, gen)
    assert torch.equal(torch.get_rng_state(), before)
    kept = (half == x).flatten(1).all(1)
    moved = (half == full).flatten(1).all(1)
    changed = ~(full == x).flatten(1).all(1)  # where keeping and moving differ
    assert bool((kept | moved).all())
    assert bool((kept & changed).any()) and bool((moved & changed).any())
    assert torch.equal(make(0.5)(x, _gen(3)), half)


@pytest.mark.parametrize("name", list(_MOVES))
def test_runs_without_a_generator(name):
    """generator=None draws from torch's global RNG: reproducible under torch.manual_seed."""
    make, data = _MOVES[name]
    x = data()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        a = make(0.5)(x, None)
        torch.manual_seed(5)
        b = make(0.5)(x, None)
    assert torch.equal(a, b) and a.shape == x.shape


def test_symmetry_apply_keeps_the_chains_dtype():
    """A float64 group applied to float32 chains gives float32 results G_k x."""
    move = SymmetryMove.rotations(4)
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float32)
    y = move.apply(x, torch.tensor([1, 2]))
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, torch.tensor([[0.0, 1.0], [-1.0, 0.0]]), rtol=0, atol=1e-7)


def test_elastic_deform_rejects_non_images():
    with pytest.raises(ValueError, match="^" + re.escape(
            "x: expected images (B, C, H, W), got shape (3, 28, 28)") + "$"):
        ElasticDeform()(torch.zeros(3, 28, 28), _gen(0))


def test_clamped_clamps_both_ends_after_the_transition():
    """Clamped(T, (low, high)) = clamp(T(x, generator), low, high), the generator passed on."""
    seen = []

    def stretch(x, generator):
        seen.append(generator)
        return 3 * x - 1

    gen = _gen(0)
    x = torch.tensor([0.0, 0.2, 0.5, 0.9], dtype=torch.float64)
    y = Clamped(stretch, (0.0, 1.0))(x, gen)
    torch.testing.assert_close(y, torch.tensor([0.0, 0.0, 0.5, 1.0], dtype=torch.float64),
                               rtol=0, atol=1e-15)
    assert seen == [gen]


def test_symmetry_move_with_prob_replayed():
    """SymmetryMove with prob p: draws k (per chain) then u ~ U[0, 1) (per chain); chain i is
    G_{k_i} x_i if u_i < p, else x_i. p is set to one of the drawn u exactly, so that chain is
    the boundary case and stays (P(u < p) = p on float32's uniform grid)."""
    move = SymmetryMove.rotations(4)
    x = torch.randn(16, 2, generator=_gen(1), dtype=torch.float64)
    gen = _gen(8)
    replay = _replay(gen)
    k = torch.randint(0, 4, (16,), generator=replay)
    u = torch.rand(16, generator=replay)
    j = int(torch.nonzero((k != 0) & (u > 0.3) & (u < 0.7))[0])
    p = float(u[j])
    y = SymmetryMove(move.group, prob=p, check_group=False)(x, gen)
    expected = torch.where((u < p)[:, None], (move.group[k] @ x[..., None])[..., 0], x)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)
    assert torch.equal(y[j], x[j])


def test_prob_one_draws_no_uniforms():
    """prob = 1 (the default) applies the move to every chain without drawing the per-chain
    uniforms: the generator advances exactly as for the move's own draws."""
    gen = _gen(9)
    replay = _replay(gen)
    SymmetryMove.rotations(4)(torch.zeros(16, 2, dtype=torch.float64), gen)
    torch.randint(0, 4, (16,), generator=replay)
    assert torch.equal(gen.get_state(), replay.get_state())
