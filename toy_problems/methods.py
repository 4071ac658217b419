"""The training methods compared on the toys: one MLP energy, one budget, ebmref's ``train()``.

Every method is a set of overrides of one common :class:`ebmref.training.TrainConfig`; they differ
only in where the chains start (paper §4.6, §5.1.1, §6.1), which sampler runs them (§2.3.2,
§5.3.1), and the auxiliary KL loss / transitions (§5.3.2, §5.4):

============== ==============================================================================
nll            replay buffer from uniform noise, 5 % re-initialised (Du & Mordatch's buffer),
               ULA eq. 1 at T = 1 — maximum likelihood (§5.1)
nll_du         the same buffer with Du's decoupled step x − α∇E + σξ, σ = 0.005, T = σ²/2α ≪ 1
nll_mala       the same buffer with MALA (exact for p_θ at any step size)
pcd            persistent CD: buffer filled from the data, never re-initialised (Tieleman 2008)
cd10           CD-10: chains start at the data batch, 10 steps (Hinton 2002; t = 10 as in §4.5)
true_cd        the paper's true CD: buffer from data, 10 % of starts re-picked from the data (§6.1)
nll_kl_du2020  nll + Du et al. (2020)'s KL loss with their published sign (minimises KL[q‖p])
nll_kl_cd      nll + the KL loss with the sign CD requires (maximises KL[q‖p], §4.2)
nll_teleport   nll + a symmetry "teleport" move every 5 sampler steps (§5.3.2)
============== ==============================================================================

The energy is E_θ(x) = MLP_θ(x) + ‖x‖²/(2R²) (:class:`ConfinedEnergy`): the fixed, weak
quadratic term makes Z_θ finite for every θ (a Swish MLP grows at most linearly), so the exact
likelihood by quadrature is always defined.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ebmref.energy import Energy
from ebmref.nets import MLPEnergy
from ebmref.samplers import langevin
from ebmref.training import TrainConfig
from ebmref.transitions import SymmetryMove
from ebmref.validation import check_choice, check_positive
from toy_problems.targets import Target


class ConfinedEnergy(Energy):
    """E_θ(x) = net_θ(x) + ‖x‖² / (2R²): a fixed Gaussian base measure of scale R."""

    def __init__(self, net: Energy, radius: float):
        super().__init__()
        check_positive(radius, "radius")
        self.net = net
        self.radius = float(radius)
        self.event_shape = net.event_shape

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x) + (x * x).sum(-1) / (2.0 * self.radius**2)


@dataclass
class Budget:
    """What every method gets: the same network, steps, batch and sampler steps."""

    steps: int = 250
    batch_size: int = 128
    n_steps: int = 10  # sampler steps per update (= t of CD-t)
    step_size: float = 0.02  # λ of eq. 1
    hidden: int = 64
    depth: int = 3
    lr: float = 1e-2
    beta1: float = 0.9
    l2: float = 0.1
    buffer_size: int = 1000
    # float64: in float32 a 1-D chain end can coincide exactly with a buffer point, and the
    # nearest-neighbour entropy of the KL loss then raises (log 0).
    dtype: str = "float64"


@dataclass
class Method:
    name: str
    summary: str
    overrides: dict = field(default_factory=dict)
    teleport: bool = False
    paper: str = ""


DU_NOISE = 0.005  # Du & Mordatch's σ


def _methods(budget: Budget, target_box: tuple[float, float] = (-3.0, 3.0)
             ) -> dict[str, Method]:
    alpha = budget.step_size / 2  # same drift as eq. 1: λ/2
    kl = {"kl_weight": 1.0, "kl_steps": 1, "entropy_weight": 0.3, "entropy_estimator": "nn",
              "entropy_reference": 100}
    ms = [
        Method("nll", "noise buffer (5 % re-init), ULA eq. 1, T = 1", {}, paper="§5.1"),
        Method("nll_du", f"noise buffer, Du's step α = {alpha:g}, σ = {DU_NOISE}, "
               f"T = {DU_NOISE**2 / (2 * alpha):.1e}",
               {"step_size": alpha, "noise": DU_NOISE, "clamp": target_box}, paper="§5.3.1"),
        Method("nll_mala", "noise buffer, MALA (exact)", {"sampler": "mala"},
               paper="§2.3.2"),
        Method("pcd", "buffer from data, no re-init (PCD)", {"init": "data"}, paper="§4.6"),
        Method("cd10", "chains from the data batch, 10 steps (CD-10)", {"init": "cd"},
               paper="§4"),
        Method("true_cd", "buffer from data, 10 % re-picked from data", {"init": "true_cd"},
               paper="§6.1"),
        Method("nll_kl_du2020", "nll + KL loss, Du 2020 sign (min KL), entropy 0.3",
               dict(kl, kl_sign="du2020"), paper="§5.4"),
        Method("nll_kl_cd", "nll + KL loss, CD sign (max KL), entropy 0.3",
               dict(kl, kl_sign="cd"), paper="§4.2"),
        Method("nll_teleport", "nll + symmetry move every 5 steps",
               {"transition_every": 5}, teleport=True, paper="§5.3.2"),
    ]
    return {m.name: m for m in ms}


METHOD_NAMES = tuple(_methods(Budget()))


def get_method(name: str, budget: Budget, target: Target | None = None) -> Method:
    """The method ``name``; Du's clamp box is the target's box (no clamp elsewhere: clamped
    chains pile up on the box's faces, where the NN entropy estimate of the KL loss sees
    zero distances)."""
    check_choice(name, "method", METHOD_NAMES)
    box = target.bounds[0] if target is not None else (-3.0, 3.0)
    return _methods(budget, box)[name]


def confinement_radius(target: Target) -> float:
    return max(max(abs(lo), abs(hi)) for lo, hi in target.bounds)


def make_energy(target: Target, budget: Budget, seed: int) -> ConfinedEnergy:
    torch.manual_seed(seed)  # network initialisation (nn.Linear draws from the global RNG)
    net = MLPEnergy(target.dim, hidden=budget.hidden, depth=budget.depth, activation="swish")
    return ConfinedEnergy(net, confinement_radius(target))


def make_train_config(method: Method, target: Target, budget: Budget, seed: int) -> TrainConfig:
    """The common config (eq. 1 ULA at T = 1, uniform noise over the box) plus the overrides."""
    lo, hi = target.bounds[0]
    steps = max(1, round(budget.steps * target.steps_factor))
    base = {"steps": steps, "batch_size": budget.batch_size, "seed": seed, "device": "cpu",
                "dtype": budget.dtype, "init": "noise", "buffer_size": budget.buffer_size,
                "reinit_prob": 0.05, "data_fraction": 0.1, "noise_low": lo, "noise_high": hi,
                "sampler": "ula", "n_steps": budget.n_steps, "step_size": budget.step_size, "noise": None,
                "grad_clip_x": None, "clamp": None, "l2": budget.l2, "lr": budget.lr,
                "betas": (budget.beta1, 0.999), "weight_grad_clip": None, "log_every": max(steps // 20, 1),
                "ckpt_every": 0, "progress": False}
    base.update(method.overrides)
    return TrainConfig(**base)


def symmetry_group(target: Target) -> SymmetryMove:
    """The orthogonal maps of the target's "symmetry" (for unequal mode weights the move is
    *not* a symmetry of p_data — on purpose: it shows when teleports bias the chains, C21)."""
    if target.symmetry == "rot8":
        return SymmetryMove.rotations(8, dtype=torch.float32)
    if target.symmetry == "flip_x":
        return SymmetryMove.sign_flips(target.dim, dtype=torch.float32)
    if target.symmetry == "checkerboard":
        # {I, −I, swap, −swap} maps black squares of the board to black squares.
        g = torch.tensor([[[1, 0], [0, 1]], [[-1, 0], [0, -1]], [[0, 1], [1, 0]],
                          [[0, -1], [-1, 0]]], dtype=torch.float32)
        return SymmetryMove(g)
    raise ValueError(f"target.symmetry: unknown symmetry {target.symmetry!r}")


def make_transition(method: Method, target: Target) -> Callable | None:
    return symmetry_group(target) if method.teleport else None


def run_chains(energy: Energy, x0: Tensor, n_steps: int, step_size: float,
               generator: torch.Generator, noise: float | None = None,
               label_fn: Callable[[Tensor], Tensor] | None = None,
               chunk: int = 100) -> tuple[Tensor, Tensor | None]:
    """ULA chains (eq. 1, or decoupled when ``noise`` is given), vectorised over chains.

    Returns the final states and, when ``label_fn`` is given, the labels of every state
    (n_steps + 1, B) — computed chunk by chunk so long chains need little memory.
    """
    x = x0
    labels = [label_fn(x)] if label_fn is not None else None
    done = 0
    while done < n_steps:
        k = min(chunk, n_steps - done)
        out = langevin(energy, x, k, step_size, noise, generator=generator,
                       record_every=1 if label_fn is not None else 0)
        if label_fn is not None:
            traj = out.trajectory[1:]  # (k, B, d)
            labels.append(label_fn(traj.reshape(-1, traj.shape[-1])).reshape(k, -1))
        x = out.x
        done += k
    if labels is not None:
        labels = torch.cat([labels[0][None], *labels[1:]], 0)
    return x, labels


def temperature_noise(alpha: float, temperature: float) -> float:
    """σ of Du's decoupled step that gives effective temperature T = σ²/(2α)."""
    return math.sqrt(2.0 * alpha * temperature)
