"""The training methods compared on the toys: one MLP energy, one budget, ebmref's ``train()``.

Every method is a set of overrides of one common :class:`ebmref.config.TrainConfig`; they differ
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
du_kl_du2020   nll_du + the KL loss with Du et al. (2020)'s sign (the claim C26's own regime)
du_kl_cd       nll_du + the KL loss with the CD sign
============== ==============================================================================

The last two are used by the claims study only (:mod:`toy_problems.study`); the default report
trains :data:`MAIN_METHODS`.

The energy is E_θ(x) = MLP_θ(x) + ‖x‖²/(2R²) (:class:`ConfinedEnergy`): the fixed, weak
quadratic term makes Z_θ finite for every θ (a Swish MLP grows at most linearly), so the exact
likelihood by quadrature is always defined.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ebmref.config import (
    BufferConfig,
    OptimConfig,
    RunConfig,
    SamplerConfig,
    TrainConfig,
    with_overrides,
)
from ebmref.energy import Energy
from ebmref.nets import MLPEnergy
from ebmref.samplers import langevin
from ebmref.transitions import SymmetryMove
from ebmref.validation import check_positive
from toy_problems.targets import Target


class ConfinedEnergy(Energy):
    """E_θ(x) = net_θ(x) + ‖x‖² / (2R²): a fixed Gaussian base measure of scale R."""

    def __init__(self, net: Energy, radius: float):
        super().__init__()
        check_positive(radius, "radius")
        self.net = net
        self.radius = float(radius)
        self.event_shape = net.event_shape
        self.n_members = net.n_members  # an ensemble of nets stays one (ebmref.ensemble)

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


@dataclass(frozen=True)
class Method:
    """A training method: ``overrides`` of the common config by dotted path; ``du_step``: Du's
    decoupled sampler (α = λ/2 — eq. 1's drift — σ = 0.005, clamped to the target's box);
    ``teleport``: a symmetry move every 5 sampler steps."""

    name: str
    summary: str
    paper: str
    overrides: dict = field(default_factory=dict)
    du_step: bool = False
    teleport: bool = False


DU_NOISE = 0.005  # Du & Mordatch's σ
_KL = {"kl.weight": 1.0, "kl.differentiable_steps": 1, "kl.entropy_weight": 0.3,
       "kl.entropy_estimator": "nn", "kl.entropy_reference": 100}

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("nll", "noise buffer (5 % re-init), ULA eq. 1, T = 1", "§5.1"),
    Method("nll_du", f"noise buffer, Du's step α = λ/2, σ = {DU_NOISE}, T = σ²/2α ≪ 1",
           "§5.3.1", du_step=True),
    Method("nll_mala", "noise buffer, MALA (exact)", "§2.3.2", {"sampler.kind": "mala"}),
    Method("pcd", "buffer from data, no re-init (PCD)", "§4.6", {"buffer.init": "data"}),
    Method("cd10", "chains from the data batch, 10 steps (CD-10)", "§4", {"buffer.init": "cd"}),
    Method("true_cd", "buffer from data, 10 % re-picked from data", "§6.1",
           {"buffer.init": "true_cd"}),
    Method("nll_kl_du2020", "nll + KL loss, Du 2020 sign (min KL), entropy 0.3", "§5.4",
           {**_KL, "kl.sign": "du2020"}),
    Method("nll_kl_cd", "nll + KL loss, CD sign (max KL), entropy 0.3", "§4.2",
           {**_KL, "kl.sign": "cd"}),
    Method("nll_teleport", "nll + symmetry move every 5 steps", "§5.3.2",
           {"sampler.transition_every": 5}, teleport=True),
    Method("du_kl_du2020", "nll_du + KL loss, Du 2020 sign (min KL), entropy 0.3", "§5.4.4",
           {**_KL, "kl.sign": "du2020"}, du_step=True),
    Method("du_kl_cd", "nll_du + KL loss, CD sign (max KL), entropy 0.3", "§4.2",
           {**_KL, "kl.sign": "cd"}, du_step=True),
)}
METHOD_NAMES = tuple(METHODS)
MAIN_METHODS = METHOD_NAMES[:9]  # the default report's methods (not the du_kl_* pair)


def confinement_radius(target: Target) -> float:
    return max(max(abs(lo), abs(hi)) for lo, hi in target.bounds)


def make_energy(target: Target, budget: Budget, seed: int) -> ConfinedEnergy:
    torch.manual_seed(seed)  # network initialisation (nn.Linear draws from the global RNG)
    net = MLPEnergy(target.dim, hidden=budget.hidden, depth=budget.depth, activation="swish")
    return ConfinedEnergy(net, confinement_radius(target))


def make_train_config(method: Method, target: Target, budget: Budget, seed: int) -> TrainConfig:
    """The common config (eq. 1 ULA at T = 1, uniform noise over the box) plus the method's."""
    lo, hi = target.bounds[0]
    steps = max(1, round(budget.steps * target.steps_factor))
    sampler = SamplerConfig(n_steps=budget.n_steps, step_size=budget.step_size, noise=None,
                            grad_clip=None, clamp=None)
    if method.du_step:  # same drift as eq. 1 (α = λ/2); no clamp elsewhere: clamped chains
        # pile up on the box's faces, where the KL loss's NN entropy sees zero distances
        sampler = SamplerConfig(n_steps=budget.n_steps, step_size=budget.step_size / 2,
                                noise=DU_NOISE, grad_clip=None, clamp=target.bounds[0])
    base = TrainConfig(
        sampler=sampler,
        buffer=BufferConfig(init="noise", size=budget.buffer_size, reinit_prob=0.05,
                            data_fraction=0.1, noise_low=lo, noise_high=hi),
        optim=OptimConfig(l2=budget.l2, lr=budget.lr, betas=(budget.beta1, 0.999),
                          max_grad_norm=None),
        run=RunConfig(n_updates=steps, batch_size=budget.batch_size, seed=seed, device="cpu",
                      dtype=budget.dtype, log_every=max(steps // 20, 1), ckpt_every=0,
                      progress=False))
    return with_overrides(base, method.overrides)


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
