"""Nearest-neighbour entropy estimators (paper §5.4.3), differentiable with respect to the points.

Kozachenko–Leonenko (k-NN) estimator of H(p) from N points xᵢ ~ p in ℝᵈ (Euclidean norm):

    Ĥ = ψ(M + 1) − ψ(k) + log V_d + (d/N) Σᵢ log ρ_{k,i},    V_d = π^{d/2} / Γ(d/2 + 1),

where ρ_{k,i} is the distance from xᵢ to its k-th nearest neighbour among M candidate points:
the other N − 1 points of the set (M = N − 1, so the constant is the familiar ψ(N) − ψ(k)), or a
separate reference set of M independent points. The constant follows from the probability
mass of the k-NN ball being Beta(k, M − k + 1) distributed, E[log mass] = ψ(k) − ψ(M + 1).

Du et al. (2020)'s surrogate is the mean log nearest-neighbour distance S = (1/N) Σ log ρ_{1,i}
to a set B of past samples. It is the k = 1 estimator without its constant and *without the
factor d*: Ĥ = ψ(M + 1) − ψ(1) + log V_d + d·S. The paper's form (1/n) Σ log(n·NN(xᵢ, X)) + O(1)
is therefore right only in d = 1; in d dimensions it measures H/d (claim C25).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ebmref.validation import check_int_range, check_nonnegative, check_points


def _as_points(x: Tensor, name: str, finite: bool) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"{name}: expected a tensor of points with shape (N, ...), N >= 1, "
                         f"got {type(x).__name__} of shape {getattr(x, 'shape', None)}")
    if finite:
        check_points(x, name)
    return x.flatten(1)


def _grouped(pts: Tensor, groups: int, name: str) -> Tensor:
    """(N, d) → (groups, N / groups, d): consecutive blocks of rows, one per group."""
    if pts.shape[0] % groups:
        raise ValueError(f"{name}: {pts.shape[0]} points do not split into groups={groups} "
                         "equal blocks")
    return pts.view(groups, -1, pts.shape[1])


def _kth_nn_distance(x: Tensor, reference: Tensor | None, k: int, min_distance: float,
                     groups: int, finite: bool) -> tuple[Tensor, int]:
    """ρ_{k,i} (N,), floored at ``min_distance``, and the number M of candidate neighbours per
    point; with ``groups`` > 1 neighbours are searched within each point's block only."""
    check_int_range(groups, "groups", 1)
    pts = _as_points(x, "x", finite)
    if reference is None:
        ref = pts
    else:
        ref = _as_points(reference, "reference", finite)
        if ref.shape[1] != pts.shape[1] or ref.dtype != pts.dtype:
            raise ValueError(f"reference: points of dimension {ref.shape[1]} and dtype "
                             f"{ref.dtype} do not match x ({pts.shape[1]}, {pts.dtype})")
    if groups > 1:
        pts, ref = _grouped(pts, groups, "x"), _grouped(ref, groups, "reference")
    m = ref.shape[-2] - (1 if reference is None else 0)
    if m < k:
        what = "x (without each point itself)" if reference is None else "reference"
        raise ValueError(f"{what}: the k-NN estimator with k={k} needs at least k candidate "
                         f"neighbours per point, got {m}")
    # The direct (non-matrix-product) distance avoids cancellation for close neighbours.
    dist = torch.cdist(pts, ref, compute_mode="donot_use_mm_for_euclid_dist")
    if reference is None:
        eye = torch.eye(pts.shape[-2], dtype=torch.bool, device=pts.device)
        dist = dist.masked_fill(eye, math.inf)  # a point is not its own neighbour
    rho = torch.topk(dist, k, dim=-1, largest=False).values[..., -1].reshape(-1)
    if min_distance > 0:
        # Clamped chains (images in [0, 1]) or float32 round-off can tie points exactly; the
        # floor keeps log ρ finite, and such a pair gets no repelling gradient.
        return rho.clamp_min(min_distance), m
    if bool((rho <= 0).any()):
        raise ValueError("x: some points coincide with their k-th nearest neighbour (distance 0);"
                         " the log-distance entropy estimate is -inf (pass min_distance > 0)")
    return rho, m


def log_unit_ball_volume(d: int) -> float:
    """log V_d = (d/2) log π − log Γ(d/2 + 1), the Euclidean unit ball in ℝᵈ."""
    return 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1.0)


def kozachenko_leonenko(x: Tensor, k: int = 1, reference: Tensor | None = None,
                        min_distance: float = 0.0, groups: int = 1, *,
                        check_finite: bool = True) -> Tensor:
    """Kozachenko–Leonenko k-NN entropy estimate Ĥ of the law of the rows of ``x`` (nats).

    Args:
        x: points (N, ...) drawn from p; flattened to (N, d). Gradients flow to ``x`` (and to
            ``reference`` if it requires grad).
        k: which nearest neighbour (k ≥ 1).
        reference: optional separate set (M, ...) of independent draws from p; the neighbours
            of each xᵢ are then searched there (M candidates) instead of among the other points.
        min_distance: floor on ρ_{k,i}; 0 (default) raises on coinciding points instead.
        groups: G > 1 splits ``x`` (and ``reference``) into G equal consecutive blocks, each a
            sample of its own law (the members of an ensemble): the mean of the G estimates.
        check_finite: non-finite points raise ValueError (``False``: they propagate).

    Returns Ĥ = ψ(M + 1) − ψ(k) + log V_d + (d/N) Σ log ρ_{k,i} as a 0-dim tensor.
    """
    check_int_range(k, "k", 1)
    check_nonnegative(min_distance, "min_distance")
    rho, m = _kth_nn_distance(x, reference, k, min_distance, groups, check_finite)
    d = x.flatten(1).shape[1]
    const = (torch.special.digamma(torch.tensor(m + 1.0, dtype=torch.float64))
             - torch.special.digamma(torch.tensor(float(k), dtype=torch.float64))).item()
    return const + log_unit_ball_volume(d) + d * torch.log(rho).mean()


def nearest_neighbour_surrogate(x: Tensor, reference: Tensor | None = None,
                                min_distance: float = 0.0, groups: int = 1, *,
                                check_finite: bool = True) -> Tensor:
    """Du et al. (2020)'s entropy surrogate S = (1/N) Σᵢ log min_j ‖xᵢ − b_j‖ (nats / d + const).

    ``reference`` is the set B of past samples (Du: 100 replay-buffer samples); ``None`` uses
    the other points of ``x``. Maximising S repels the points from B (paper §5.4.3);
    Ĥ_KL(k=1) = ψ(M + 1) − ψ(1) + log V_d + d·S exactly. ``groups``, ``check_finite``: as
    in :func:`kozachenko_leonenko`.
    """
    check_nonnegative(min_distance, "min_distance")
    rho, _ = _kth_nn_distance(x, reference, 1, min_distance, groups, check_finite)
    return torch.log(rho).mean()
