"""Seeds as one vectorised ensemble, trained until the exact validation NLL stops improving.

The claims study (:mod:`toy_problems.study`) trains the G seeds of one (method, target) as one
model: G :class:`ebmref.nets.MLPEnergy` networks, member g built under ``torch.manual_seed(g)``,
stacked in :class:`ebmref.ensemble.StackedMLPEnergy` inside :class:`ConfinedEnergy`. All members
share the target's training data (G·B rows per update drawn from one tensor), each has its own
initialisation, replay buffer and chain noise (:mod:`ebmref.ensemble`).

One procedure for every method (:func:`fit`):

* updates are :func:`ebmref.training.train_step` calls in our own loop;
* every ``eval_every`` updates the exact validation NLL of every member is computed,
  −(1/n)Σ log p_θ(x_val) = mean E_θ(x_val) + log Z_θ, log Z_θ by Simpson quadrature on a grid
  (:class:`EnsembleGrid`: all members in one batched pass);
* each member keeps its best parameters (lowest validation NLL; an improvement must exceed
  ``min_delta`` nats);
* training stops when no member improved for ``patience`` evaluations, or at ``cap`` updates;
  the ensemble is then loaded with every member's best parameters.

Per-member learning rates (the tuning grid, :func:`fit` ``lr``): Adam's step does not depend on
the learning rate except through its final scaling, Δθ = −lr·m̂/(√v̂ + ε); the optimiser runs at
lr = max(lrᵍ) and member g's step is rescaled by lrᵍ/max (:class:`MemberRates`), exactly Adam at
lrᵍ. Per-member energy penalties (the tuning grid, ``l2``): the config's penalty is set to 0 and the
two loss forwards of ``train_step`` go through :class:`MemberPenalty`, which returns
E + l2ᵍ·E² for the data batch and E − l2ᵍ·E² for the negatives, so that the contrastive loss
mean(E⁺) − mean(E⁻) of those outputs is member g's mean(E⁺) − mean(E⁻) + l2ᵍ(mean(E⁺²) +
mean(E⁻²)) (eq. 3 with Du & Mordatch's penalty at l2ᵍ).

A member that diverges (non-finite or exploding energies, :class:`TrainingDiverged`) is
frozen at its best parameters (rate 0) and flagged with the update it diverged at; the others go
on. A member whose validation NLL is non-finite is flagged the same way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from ebmref.analytic import grid as make_grid
from ebmref.analytic import simpson_weights
from ebmref.config import DTYPES, TrainConfig
from ebmref.energy import Energy
from ebmref.ensemble import StackedMLPEnergy
from ebmref.nets import MLPEnergy
from ebmref.training import TrainingDiverged, TrainState, train_step
from ebmref.validation import check_int_range, check_nonnegative
from toy_problems.methods import ConfinedEnergy, confinement_radius
from toy_problems.targets import Target

CHUNK_ROWS = 262_144  # rows per forward pass when tabulating energies


@dataclass(frozen=True)
class StopRule:
    """Early stopping: evaluate every ``eval_every`` updates; stop when no member improved by
    more than ``min_delta`` nats for ``patience`` evaluations, or at ``cap`` updates (never
    before ``min_updates``)."""

    eval_every: int = 100
    patience: int = 6
    cap: int = 4000
    min_updates: int = 300
    min_delta: float = 1e-3

    def __post_init__(self) -> None:
        check_int_range(self.eval_every, "eval_every", 1)
        check_int_range(self.patience, "patience", 1)
        check_int_range(self.cap, "cap", self.eval_every)
        check_int_range(self.min_updates, "min_updates", 0, self.cap)
        check_nonnegative(self.min_delta, "min_delta")


class BlockSumEnergy(Energy):
    """E(x) = Σ_b E_b(x[:, block_b]): one network per coordinate block (a factorised model,
    p_θ = Π_b p_b, so log Z_θ = Σ_b log Z_b by low-dimensional quadratures).

    Blocks of one size share one :class:`StackedMLPEnergy` (``nets[i]`` serves the k_i blocks
    ``groups[i]``; its member g·k_i + j is block j of seed g), so four 1-D blocks cost one
    batched pass, not four. G = ``nets[i].n_members`` / k_i seeds."""

    def __init__(self, nets: Sequence[StackedMLPEnergy], groups: Sequence[Sequence[Sequence[int]]]):
        super().__init__()
        if len(nets) != len(groups) or not nets:
            raise ValueError("nets, groups: need one net per group of blocks (at least one)")
        self.groups = [[tuple(int(i) for i in b) for b in grp] for grp in groups]
        counts = {n.n_members // len(grp) for n, grp in zip(nets, self.groups)}
        if len(counts) != 1 or any(n.n_members % len(grp) for n, grp in zip(nets, self.groups)):
            raise ValueError("nets: member counts must be G × (blocks in the group), one G")
        flat = sorted(i for grp in self.groups for b in grp for i in b)
        if flat != list(range(len(flat))) or any(len({len(b) for b in grp}) != 1
                                                 for grp in self.groups):
            raise ValueError(f"groups: blocks must partition the coordinates 0..d−1, equal "
                             f"sizes within a group, got {groups}")
        self.nets = torch.nn.ModuleList(nets)
        self.n_members = counts.pop()
        self.event_shape = (len(flat),)

    @property
    def blocks(self) -> list[tuple[int, ...]]:
        return [b for grp in self.groups for b in grp]

    def forward(self, x: Tensor) -> Tensor:
        g = self.n_members
        total = 0.0
        for net, grp in zip(self.nets, self.groups):
            k, size = len(grp), len(grp[0])
            sel = x[:, [i for b in grp for i in b]].view(g, -1, k, size)
            e = net(sel.permute(0, 2, 1, 3).reshape(-1, size))
            total = total + e.view(g, k, -1).sum(1).reshape(-1)
        return total

    def block(self, b: int) -> StackedMLPEnergy:
        """Block b (in :attr:`blocks` order) as a G-member ensemble of its own (a copy)."""
        for net, grp in zip(self.nets, self.groups):
            if b < len(grp):
                k = len(grp)
                return StackedMLPEnergy([net.member(g * k + b) for g in range(self.n_members)])
            b -= len(grp)
        raise ValueError(f"b: no block {b}")

    def member(self, g: int) -> BlockSumEnergy:
        nets = [StackedMLPEnergy([net.member(g * len(grp) + j) for j in range(len(grp))])
                for net, grp in zip(self.nets, self.groups)]
        return BlockSumEnergy(nets, self.groups)


def make_ensemble(target: Target, seeds: Sequence[int], hidden: int, depth: int,
                  dtype: torch.dtype = torch.float32,
                  hidden_1d: int | None = None) -> ConfinedEnergy:
    """G = len(seeds) Swish MLPs (member g initialised under ``torch.manual_seed(seeds[g])``)
    as one :class:`StackedMLPEnergy`, inside the fixed confinement ‖x‖²/(2R²); for a target
    with ``blocks``, one network per block (block b of seed s initialised under seed
    s + 7919·b; one-coordinate blocks ``hidden_1d`` wide if given), blocks of equal size
    stacked together (:class:`BlockSumEnergy`)."""
    if len(seeds) == 0:
        raise ValueError("seeds: need at least one seed")
    if target.blocks is None:
        nets = []
        for s in seeds:
            torch.manual_seed(int(s))
            nets.append(MLPEnergy(target.dim, hidden=hidden, depth=depth, activation="swish"))
        return ConfinedEnergy(StackedMLPEnergy(nets), confinement_radius(target)).to(dtype)
    sizes = list(dict.fromkeys(len(b) for b in target.blocks))
    groups = [[b for b in target.blocks if len(b) == size] for size in sizes]
    index = {b: i for i, b in enumerate(target.blocks)}
    stacks = []
    for grp in groups:
        nets = []
        for s in seeds:
            for b in grp:
                torch.manual_seed(int(s) + 7919 * index[b])
                width = hidden_1d if (len(b) == 1 and hidden_1d) else hidden
                nets.append(MLPEnergy(len(b), hidden=width, depth=depth, activation="swish"))
        stacks.append(StackedMLPEnergy(nets))
    net = BlockSumEnergy(stacks, groups)
    return ConfinedEnergy(net, confinement_radius(target)).to(dtype)


def member(energy: ConfinedEnergy, g: int) -> ConfinedEnergy:
    """Member g of an ensemble as a standalone energy (a copy)."""
    return ConfinedEnergy(energy.net.member(g), energy.radius)


def block_energy(energy: ConfinedEnergy, b: int) -> ConfinedEnergy:
    """Block b of a factorised energy (all members) with its share of the confinement."""
    return ConfinedEnergy(energy.net.block(b), energy.radius).to(next(energy.parameters()).dtype)


def member_energies(energy, x: Tensor) -> Tensor:
    """E of every member at the same points: (G, N) float64 (x tiled G times, in chunks)."""
    g_count = energy.n_members
    dtype = next(energy.parameters()).dtype
    rows = max(CHUNK_ROWS // g_count, 1)
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], rows):
            xc = x[i:i + rows].to(dtype)
            e = energy(xc.repeat(g_count, *([1] * (xc.ndim - 1))))
            out.append(e.view(g_count, -1).to(torch.float64))
    return torch.cat(out, 1)


class EnsembleGrid:
    """Simpson quadrature of log Z_θ for every member at once, on ``bounds`` with
    ``n_points`` per axis (≡ 1 mod 4 is not needed: odd suffices for Simpson)."""

    def __init__(self, bounds: tuple[tuple[float, float], ...], n_points: int):
        check_int_range(n_points, "n_points", 3)
        if n_points % 2 == 0:
            raise ValueError(f"n_points: must be odd for Simpson's rule, got {n_points}")
        self.bounds, self.n_points = bounds, n_points
        self.points, cell = make_grid(bounds, n_points)
        self.log_weight = torch.log(simpson_weights(n_points, len(bounds))) + math.log(cell)

    def log_z(self, energy: ConfinedEnergy) -> Tensor:
        """(G,) log Z of each member; NaN where a member's energy is NaN anywhere on the grid."""
        e = member_energies(energy, self.points)
        lz = torch.logsumexp(self.log_weight - e, 1)
        return torch.where(torch.isnan(e).any(1), torch.full_like(lz, math.nan), lz)

    def nll(self, energy: ConfinedEnergy, x: Tensor) -> Tensor:
        """(G,) exact NLL −(1/n)Σ log p_θ(xᵢ) per member (nats); non-finite flags divergence."""
        return member_energies(energy, x).mean(1) + self.log_z(energy)


class FactorisedGrid:
    """log Z of a :class:`BlockSumEnergy` ensemble: Σ_b log Z_b, one :class:`EnsembleGrid` per
    block, in :attr:`BlockSumEnergy.blocks` order (the confinement ‖x‖²/(2R²) splits over the
    blocks too)."""

    def __init__(self, bounds: tuple[tuple[float, float], ...], blocks, n_points: Sequence[int]):
        self.blocks = [tuple(b) for b in blocks]
        self.grids = [EnsembleGrid(tuple(bounds[i] for i in b), n)
                      for b, n in zip(self.blocks, n_points)]

    def log_z(self, energy: ConfinedEnergy) -> Tensor:
        return sum(g.log_z(block_energy(energy, b)) for b, g in enumerate(self.grids))

    def nll(self, energy: ConfinedEnergy, x: Tensor) -> Tensor:
        return member_energies(energy, x).mean(1) + self.log_z(energy)


class MemberPenalty(torch.nn.Module):
    """The loss forwards of :func:`ebmref.training.train_step` (its ``model`` argument) with a
    per-member energy penalty l2ᵍ: calls alternate data batch (E + l2ᵍE²) and negatives
    (E − l2ᵍE²), the order in which ``train_step`` makes them (module docstring). The logged
    ``energy_data``/``energy_samples`` of ``train_step`` then include the penalty terms."""

    def __init__(self, energy: ConfinedEnergy, l2: Sequence[float]):
        super().__init__()
        self.energy = energy
        self.l2 = [float(v) for v in l2]
        if len(self.l2) != energy.n_members or min(self.l2) < 0:
            raise ValueError(f"l2: expected {energy.n_members} non-negative penalties, got "
                             f"{list(l2)}")
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        e = self.energy(x)
        w = torch.tensor(self.l2, dtype=e.dtype).repeat_interleave(e.shape[0] // len(self.l2))
        sign = 1.0 if self.calls % 2 == 0 else -1.0
        self.calls += 1
        return e + sign * w * e * e


def rows(p: Tensor, g: int, g_count: int) -> slice:
    """Member g's rows of a stacked parameter: G·k rows, member g owns [g·k, (g+1)·k) (k = 1
    for one network per member, k blocks for :class:`BlockSumEnergy`'s shared nets)."""
    k = p.shape[0] // g_count
    return slice(g * k, (g + 1) * k)


class MemberRates:
    """Per-member learning rates for an ensemble trained with one Adam at lr = max(rates):
    after each step, member g's change of every stacked parameter is scaled by rates[g]/max
    (exact: Adam's step is linear in lr). Rate 0 freezes a member (its parameters restored)."""

    def __init__(self, params: Sequence[Tensor], rates: Sequence[float]):
        self.params = list(params)
        self.rates = torch.tensor([float(r) for r in rates], dtype=torch.float64)
        if self.rates.ndim != 1 or not bool((self.rates >= 0).all()) or self.rates.max() <= 0:
            raise ValueError(f"rates: expected non-negative learning rates, one positive, got "
                             f"{list(rates)}")
        for p in self.params:
            if p.shape[0] % self.rates.shape[0]:
                raise ValueError(f"params: leading dimension {p.shape[0]} is not a multiple "
                                 f"of the member count {self.rates.shape[0]}")
        self.max = float(self.rates.max())
        self._before: list[Tensor] = []

    def freeze(self, g: int) -> None:
        self.rates[g] = 0.0

    def snapshot(self) -> None:
        self._before = [p.detach().clone() for p in self.params]

    def apply(self) -> None:
        """Rescale the step just taken (call after optimizer.step(), with a snapshot before)."""
        if torch.all(self.rates == self.max):
            return
        with torch.no_grad():
            for p, old in zip(self.params, self._before):
                k = p.shape[0] // self.rates.shape[0]
                s = (self.rates / self.max).to(p.dtype).repeat_interleave(k)
                s = s.view(-1, *([1] * (p.ndim - 1)))
                step = torch.where(s == 0, torch.zeros_like(p), (p - old) * s)
                p.copy_(old + step)


@dataclass
class FitResult:
    """What :func:`fit` returns (the ensemble itself now holds each member's best θ)."""

    best_step: list[int]
    best_val: list[float]
    diverged: list[int | None]  # update at which the member diverged (None: never)
    updates: int
    stopped: str  # "patience" | "cap" | "all members diverged"
    history: list[dict] = field(default_factory=list)  # {"step", "val": [G floats]}
    train_s: float = 0.0
    train_cpu_s: float = 0.0
    eval_s: float = 0.0
    buffer: object = None  # the final replay buffer (ebmref.buffer.ReplayBuffer; None for CD-k)


def _bad_members(energy: ConfinedEnergy, x: Tensor, max_energy: float) -> list[int]:
    """Members whose energies on x (all members' rows) are non-finite or exceed max_energy."""
    e = member_energies(energy, x)
    return [g for g in range(e.shape[0])
            if not bool(torch.isfinite(e[g]).all()) or float(e[g].abs().max()) > max_energy]


class EarlyStopping:
    """The stopping rule's bookkeeping (no tensors): each member's best validation NLL and the
    update it was reached at, members flagged diverged (a non-finite validation NLL, or
    :meth:`flag`), and the count of evaluations since any active member last improved."""

    def __init__(self, g_count: int, rule: StopRule):
        check_int_range(g_count, "g_count", 1)
        self.rule = rule
        self.best_val = [math.inf] * g_count
        self.best_step = [0] * g_count
        self.diverged: list[int | None] = [None] * g_count
        self.stale = 0

    @property
    def active(self) -> list[bool]:
        return [d is None for d in self.diverged]

    def flag(self, g: int, step: int) -> None:
        if self.diverged[g] is None:
            self.diverged[g] = step

    def observe(self, step: int, val: Sequence[float]) -> list[int]:
        """Record one evaluation; returns the members that improved (their θ must be kept).
        A non-finite value flags the member diverged at ``step``."""
        improved = []
        for g, v in enumerate(val):
            if self.diverged[g] is not None:
                continue
            if not math.isfinite(v):
                self.flag(g, step)
            elif v < self.best_val[g] - self.rule.min_delta:
                self.best_val[g], self.best_step[g] = float(v), step
                improved.append(g)
        self.stale = 0 if improved else self.stale + 1
        return improved

    def reason(self, step: int) -> str | None:
        """Why training stops after update ``step`` (None: it goes on)."""
        if not any(self.active):
            return "all members diverged"
        if self.stale >= self.rule.patience and step >= self.rule.min_updates:
            return "patience"
        if step >= self.rule.cap:
            return "cap"
        return None


def _keep(best: list[Tensor], params: Sequence[Tensor], members: Sequence[int],
          g_count: int) -> None:
    with torch.no_grad():
        for b, p in zip(best, params):
            for g in members:
                r = rows(p, g, g_count)
                b[r] = p.detach()[r]


def fit(energy: ConfinedEnergy, train_x: Tensor, val_x: Tensor, config: TrainConfig,
        rule: StopRule, grid: EnsembleGrid, *, lr: Sequence[float] | None = None,
        l2: Sequence[float] | None = None, transition: Callable | None = None) -> FitResult:
    """Train the ensemble with ``config`` (batch, buffer, chains per member) until the exact
    validation NLL stops improving (module docstring); returns the budget used and each
    member's best update, and leaves the best parameters in ``energy``."""
    g_count = energy.n_members
    dtype = DTYPES[config.run.dtype]
    energy.to(dtype).train()
    rates = [config.optim.lr] * g_count if lr is None else list(lr)
    if len(rates) != g_count:
        raise ValueError(f"lr: expected {g_count} per-member rates, got {len(rates)}")
    optim = replace(config.optim, lr=max(rates), l2=0.0 if l2 is not None else config.optim.l2)
    state = TrainState.create(energy, replace(config, optim=optim))
    model = MemberPenalty(energy, l2) if l2 is not None else None
    params = [p for p in energy.parameters() if p.requires_grad]
    member_rates = MemberRates(params, rates)
    data = train_x.to(dtype)
    state.ensure_buffer(tuple(data.shape[1:]))
    best = [p.detach().clone() for p in params]
    stop = EarlyStopping(g_count, rule)
    history: list[dict] = []
    t0, c0, t_eval, stopped = time.perf_counter(), time.process_time(), 0.0, None
    batch = config.run.batch_size * g_count
    while stopped is None:
        x_pos = data[torch.randint(0, data.shape[0], (batch,), generator=state.generator)]
        member_rates.snapshot()
        try:
            train_step(state, x_pos, pool=data, transition=transition, model=model)
        except TrainingDiverged:
            if model is not None:
                model.calls = 0
            _freeze_bad(energy, state, member_rates, best, stop, x_pos, config)
            if not any(stop.active):
                stopped = "all members diverged"
            continue
        member_rates.apply()
        if state.step % rule.eval_every == 0:
            te = time.perf_counter()
            energy.eval()
            val = grid.nll(energy, val_x).tolist()
            energy.train()
            was_active = stop.active
            _keep(best, params, stop.observe(state.step, val), g_count)
            for g, (before, now) in enumerate(zip(was_active, stop.active)):
                if before and not now:  # a non-finite validation NLL: retire the member
                    _retire(g, state, member_rates, best, x_pos)
            history.append({"step": state.step, "val": [float(v) for v in val]})
            t_eval += time.perf_counter() - te
            stopped = stop.reason(state.step)
        elif state.step >= rule.cap:
            stopped = "cap"
    with torch.no_grad():
        for p, b in zip(params, best):
            p.copy_(b)
    energy.eval()
    return FitResult(best_step=list(stop.best_step), best_val=list(stop.best_val),
                     diverged=list(stop.diverged), updates=state.step, stopped=stopped,
                     history=history, train_s=time.perf_counter() - t0,
                     train_cpu_s=time.process_time() - c0, eval_s=t_eval, buffer=state.buffer)


def _freeze_bad(energy, state, member_rates, best, stop: EarlyStopping, x_pos, config) -> None:
    """After TrainingDiverged (raised before the optimiser step): flag and freeze the members
    whose energies on the batch or their buffer are non-finite or exploding; if none can be
    singled out, the member with the largest |E| on its buffer."""
    probe = x_pos if state.buffer is None else torch.cat([x_pos, state.buffer.storage])
    bad = [g for g in _bad_members(energy, probe, config.run.max_energy) if stop.active[g]]
    if not bad:
        e = member_energies(energy, probe).abs().nan_to_num(math.inf).amax(1)
        bad = [next(g for g in torch.argsort(e, descending=True).tolist() if stop.active[g])]
    for g in bad:
        stop.flag(g, state.step + 1)
        _retire(g, state, member_rates, best, x_pos)
    state.optimizer.zero_grad(set_to_none=True)


def _retire(g: int, state, member_rates: MemberRates, best: list[Tensor], data: Tensor) -> None:
    """Freeze member g at its best parameters (rate 0) with a fresh buffer block."""
    member_rates.freeze(g)
    g_count = member_rates.rates.shape[0]
    with torch.no_grad():
        for p, b in zip(member_rates.params, best):
            r = rows(p, g, g_count)
            p[r] = b[r]
    _refill(state.buffer, g, data, state.generator)


def _refill(buffer, g: int, data: Tensor, generator: torch.Generator) -> None:
    """Member g's buffer block refilled (its chains may have become non-finite before the
    divergence was caught): fresh noise for a noise buffer, data picks otherwise."""
    if buffer is None or buffer.storage is None:
        return
    c = buffer.capacity
    if buffer.init == "noise":
        fresh = buffer.noise_fn(c, generator)
    else:
        fresh = data[torch.randint(0, data.shape[0], (c,), generator=generator)]
    buffer.storage[g * c:(g + 1) * c] = fresh.to(buffer.storage.dtype)
