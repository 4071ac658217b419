"""The claim probes of the claims study: per-seed values for every registered comparison.

* C7 / C27 (:func:`chain_probes`): ULA chains (eq. 1, T = 1, the training's λ) from uniform
  noise on the data box and from test points, on every member of the NLL and true-CD ensembles;
  the law of the noise chains' ends against the member's exact p_θ (total variation over bins,
  at each chain length); the same starts and noise on the true energy as a control. The
  *excess TV* subtracts the TV of as many exact draws of p_θ (the sampling floor).
* C16 (:func:`minima_probes`): p_θ mass beyond ``far_distance`` of the support (scored with the
  members) and the local minima of E found by steepest descent (line search) from a grid of
  starts, each checked to be a minimum at ``minimum_radius``;
  for the factorised 6-D target the minima of E = Σ_b E_b are the products of the blocks' minima.
* C26 (:func:`frozen_kl_step`, :func:`negatives_kl`): one small gradient step on the KL loss
  alone with each sign from the same θ and the same sampled gradient; the exact change of
  KL[q ‖ p_θ], with
  q = K_θ^t q₀ propagated on a grid (q₀ uniform on the data box, t = the training's sampler
  steps); and, for the Du-regime training runs, the binned KL of their negatives' law to p_θ.
* C28 (:func:`funnel_probe`): Du's decoupled step at each temperature from uniform noise.
"""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import torch
from torch import Tensor

from ebmref.config import KLConfig, SamplerConfig
from ebmref.negatives import sample_negatives
from ebmref.objectives import kl_loss
from ebmref.samplers import decoupled_noise, langevin
from toy_problems import metrics as M
from toy_problems import probes as P
from toy_problems.fit import block_energy, member
from toy_problems.study_config import StudyConfig, registered

S_STEP = 0.002  # resolution of the law of the extra coordinates' squared norm (ring8_hd)


def _gen(*keys) -> torch.Generator:
    """A generator seeded from the keys (stable across runs, unlike Python's str hash)."""
    s = "/".join(str(k) for k in keys)
    return torch.Generator().manual_seed(sum((i + 1) * ord(c) for i, c in enumerate(s)) % 2**31)


def _uniform(box, n: int, g: torch.Generator) -> Tensor:
    lo = torch.tensor([b[0] for b in box], dtype=torch.float64)
    hi = torch.tensor([b[1] for b in box], dtype=torch.float64)
    return lo + (hi - lo) * torch.rand(n, len(box), generator=g, dtype=torch.float64)


def _bins(target, cfg: StudyConfig) -> int:
    return cfg.tv_bins_2d if target.dim == 2 else cfg.tv_bins_1d


def _dtype(energy) -> torch.dtype:
    return next(energy.parameters()).dtype


# --------------------------------------------------------------------------- C7, C27


def _floors(grids, n: int, box, bins: int, g: torch.Generator) -> list[float | None]:
    out = []
    for grid in grids:
        if grid is None:
            out.append(None)
            continue
        x = M.sample_grid(grid, n, g)
        out.append(float(P.tv(P.law_of_points(x, box, bins), P.grid_law(grid, box, bins))))
    return out


def _chain_block(energy, grids, target, test: Tensor, cfg: StudyConfig, key) -> dict:
    """Noise chains (TV curve, modes) and data chains (modes) of one ensemble's members."""
    box, bins, n, lengths = target.bounds, _bins(target, cfg), cfg.n_chains, cfg.chain_lengths
    g_count = len(grids)
    ok = [gr is not None for gr in grids]
    refs = torch.stack([P.grid_law(gr, box, bins) if gr is not None
                        else torch.full((bins ** len(box) + 1,), 1.0 / (bins ** len(box) + 1),
                                        dtype=torch.float64) for gr in grids])
    x0 = _uniform(box, n, _gen("noise starts", target.name)).to(_dtype(energy))
    g = _gen("chains", *key)
    tvs, x_end = P.run_chains_tv(energy, x0.repeat(g_count, 1), lengths, cfg.step_size, g,
                                 refs, box, bins)
    floors = _floors(grids, n, box, bins, g)
    xd = test[:n].to(_dtype(energy)).repeat(g_count, 1)
    xd = langevin(energy, xd, lengths[-1], cfg.step_size, generator=g).x.detach()
    per = []
    for i in range(g_count):
        blk = slice(i * n, (i + 1) * n)
        rec = {"tv_noise": tvs[i].tolist() if ok[i] else None, "floor": floors[i]}
        if ok[i]:
            rec.update(excess_tv_noise=float(tvs[i, -1]) - floors[i],
                       frac_noise_in_modes=M.fraction_in_modes(x_end[blk], target),
                       frac_data_in_modes=M.fraction_in_modes(xd[blk], target))
        per.append(rec)
    keep = {"x_noise": x_end[:n].double(), "x_data": xd[:n].double()}
    return {"members": per, "first": keep}


def _control(target, cfg: StudyConfig) -> dict:
    """The same starts and chains on the true energy; reference: its exact law on the grid."""
    energy = target.true_energy()
    box, bins, n = target.bounds, _bins(target, cfg), cfg.n_chains
    grid = M.density_grid(energy, box, cfg.grid_points_2d if target.dim == 2
                          else cfg.grid_points_1d, cfg.grid_expand)
    ref = P.grid_law(grid, box, bins)
    x0 = _uniform(box, n, _gen("noise starts", target.name))
    g = _gen("control", target.name)
    tvs, _ = P.run_chains_tv(energy, x0.repeat(cfg.seeds, 1), cfg.chain_lengths,
                             cfg.step_size, g, ref.expand(cfg.seeds, -1), box, bins)
    floors = _floors([grid] * cfg.seeds, n, box, bins, g)
    return {"members": [{"tv_noise": tvs[i].tolist(), "floor": floors[i],
                         "excess_tv_noise": float(tvs[i, -1]) - floors[i]}
                        for i in range(cfg.seeds)], "leak": grid.leak}


def chain_probes(trained, targets, splits, cfg: StudyConfig) -> dict:
    jobs = [("nll", t) for t in dict.fromkeys([*cfg.c7_targets, *cfg.c27_targets])]
    jobs += [("true_cd", t) for t in cfg.c27_targets]
    out: dict = {"models": {}, "control": {}}
    for m, t in jobs:
        tr = trained[(m, t)]
        res = _chain_block(tr.energy, tr.grids, targets[t], splits[t].test, cfg, (m, t))
        for rec, extra in zip(tr.members, res["members"]):
            rec.update({k: v for k, v in extra.items() if k not in ("tv_noise", "floor")})
        out["models"][f"{m}/{t}"] = res
    for t in cfg.c7_targets:
        out["control"][t] = _control(targets[t], cfg)
    return out


# --------------------------------------------------------------------------- C16


def _descent_minima(energy, box, n_points: int, cfg: StudyConfig, off_support):
    """Local minima of every member of ``energy`` on ``box`` (descent from a regular grid);
    each start weighted by its p_θ mass on that grid."""
    from ebmref.analytic import grid as make_grid

    pts, _ = make_grid(box, n_points)
    g_count = energy.n_members
    x0 = pts.to(_dtype(energy)).repeat(g_count, 1)
    x_end = P.descend(energy, x0, cfg.descent_steps)
    at_min = P.is_local_minimum(energy, x_end, cfg.minimum_radius)
    with torch.no_grad():
        e_end = energy(x_end).to(torch.float64).view(g_count, -1)
        e0 = energy(x0).to(torch.float64).view(g_count, -1)
    out = []
    for i in range(g_count):
        blk = slice(i * len(pts), (i + 1) * len(pts))
        mass = torch.softmax(-e0[i], 0)
        out.append(P.local_minima(x_end[blk], at_min[blk], e_end[i], mass, off_support,
                                  merge_radius=cfg.merge_radius))
    return out


def _minima_record(minima, unconverged: float) -> dict:
    spur = [m for m in minima if m.off_support]
    on = [m.energy for m in minima if not m.off_support]
    e_ref = min(on) if on else math.nan
    return {"n_spurious": len(spur), "n_minima": len(minima),
            "spurious_basin_mass": sum(m.basin_mass for m in spur),
            "spurious_depth": min((m.energy - e_ref for m in spur), default=None),
            "unconverged_mass": unconverged,
            "minima": [m.__dict__ for m in minima][:200]}


def minima_probes(trained, targets, cfg: StudyConfig) -> dict:
    out = {}
    for t in cfg.c16_targets:
        target = targets[t]
        box = tuple(((lo + hi) / 2 - cfg.grid_expand * (hi - lo) / 2,
                     (lo + hi) / 2 + cfg.grid_expand * (hi - lo) / 2) for lo, hi in target.bounds)
        for m in ("cd10", "pcd", "nll"):
            tr = trained[(m, t)]
            if target.blocks is None:
                def off(x, target=target):
                    return float(target.distance_to_support(x[None])[0]) > cfg.far_distance
                found = _descent_minima(tr.energy, box, cfg.descent_points_2d
                                        if target.dim == 2 else cfg.descent_points_1d, cfg, off)
            else:
                found = _factorised_minima(tr.energy, target, box, cfg)
            for rec, (minima, unconv) in zip(tr.members, found):
                if rec["status"] == "ok":
                    rec.update(_minima_record(minima, unconv))
            out[f"{m}/{t}"] = [r.get("minima") for r in tr.members]
    return out


def _factorised_minima(energy, target, box, cfg: StudyConfig):
    """Minima of E = Σ_b E_b: every combination of the blocks' minima (energies add, basin
    masses multiply); classified off-support in the full space."""
    per_block = []
    for b, block in enumerate(target.blocks):
        sub_box = tuple(box[i] for i in block)
        n = cfg.descent_points_2d if len(block) == 2 else cfg.descent_points_1d
        per_block.append(_descent_minima(block_energy(energy, b), sub_box, n, cfg, None))
    out = []
    for i in range(energy.n_members):
        lists = [pb[i][0] for pb in per_block]
        unconv = 1.0 - math.prod(1.0 - pb[i][1] for pb in per_block)
        combos = []
        for parts in itertools.product(*lists):
            x = torch.tensor([v for p in parts for v in p.x], dtype=torch.float64)
            far = float(target.distance_to_support(x[None])[0]) > cfg.far_distance
            combos.append(P.Minimum(x.tolist(), sum(p.energy for p in parts),
                                    math.prod(p.basin_mass for p in parts), far))
        combos.sort(key=lambda m: m.energy)
        out.append((combos, unconv))
    return out


def factorised_far_mass(grids, target, distance: float) -> float:
    """P_θ(distance to the support > D) for a factorised model of ring8_hd: the support is the
    union of balls of radius r·s around means with zero extra coordinates, so the distance to
    the nearest mean is √(d₁₂² + S), S = Σⱼ xⱼ² over the extra coordinates. The law of S is the
    convolution of the 1-D blocks' laws of xⱼ² (exact on their grids, binned at S_STEP to the
    nearest bin; values beyond the largest threshold (D + r·s)² pooled in one last bin)."""
    s_max = (distance + target.r_support * target.std) ** 2
    top = math.ceil(s_max / S_STEP) + 1  # index of the pooled bin "S > s_max"
    law = np.zeros(top + 1)
    law[0] = 1.0
    for g in grids[1:]:
        k = np.minimum(np.rint((g.points[:, 0] ** 2).numpy() / S_STEP).astype(np.int64), top)
        h = np.bincount(k, weights=g.mass.numpy(), minlength=top + 1)
        conv = np.convolve(law, h)
        law = np.concatenate([conv[:top], [conv[top:].sum()]])
    tail = np.concatenate([np.cumsum(law[::-1])[::-1], [0.0]])  # P(S ≥ k·S_STEP)
    g12 = grids[0]
    d12 = torch.cdist(g12.points, target.means[:, :2]).min(-1).values.numpy()
    c = s_max - d12**2
    idx = np.clip(np.rint(c / S_STEP) + 1, 0, top).astype(np.int64)
    return float((g12.mass.numpy() * tail[idx]).sum())


# --------------------------------------------------------------------------- C26


def _kernel_grid(target, cfg: StudyConfig):
    factor = 1.5 if target.dim == 1 else 1.2
    h = cfg.kernel_spacing_1d if target.dim == 1 else cfg.kernel_spacing_2d
    bounds = tuple(((lo + hi) / 2 - factor * (hi - lo) / 2, (lo + hi) / 2 + factor * (hi - lo) / 2)
                   for lo, hi in target.bounds)
    n = round((bounds[0][1] - bounds[0][0]) / h) + 1
    return bounds, n


def _kl_of(energy, q0: Tensor, bounds, n: int, cfg: StudyConfig) -> float:
    k = P.GridKernel(energy, bounds, n, cfg.step_size)
    q = k.run(q0, cfg.n_steps)
    return P.kl_masses(q, P.grid_masses(energy, k.points))


def frozen_kl_step(model, target, cfg: StudyConfig, key) -> dict:
    """KL[K_θ^t q₀ ‖ p_θ] before and after one small gradient step on the KL loss alone with
    each sign, θ' = θ ∓ s·g/‖g‖ with s = ``kl_step`` · ‖θ‖ (the first-order regime, where the
    two signs' changes are opposite), from the same θ and the same sampled gradient g of the
    du2020-sign loss (float64 copies)."""
    model = copy.deepcopy(model).double()
    bounds, n = _kernel_grid(target, cfg)
    from ebmref.analytic import grid as make_grid

    pts, _ = make_grid(bounds, n)
    lo = torch.tensor([b[0] for b in target.bounds], dtype=torch.float64)
    hi = torch.tensor([b[1] for b in target.bounds], dtype=torch.float64)
    inside = ((pts >= lo) & (pts <= hi)).all(-1).to(torch.float64)
    q0 = inside / inside.sum()
    kl0 = _kl_of(model, q0, bounds, n, cfg)
    g = _gen("kl step", *key)
    sampler = SamplerConfig(kind="ula", n_steps=cfg.n_steps, step_size=cfg.step_size,
                            noise=None, grad_clip=None, clamp=None)
    klc = KLConfig(weight=1.0, differentiable_steps=1, entropy_weight=0.3,
                   entropy_estimator="nn", entropy_reference=100)
    neg = sample_negatives(model, _uniform(target.bounds, cfg.kl_chains, g), sampler, klc,
                           generator=g)
    ref = sample_negatives(model, _uniform(target.bounds, 100, g), sampler, None,
                           generator=g).x
    loss = kl_loss(model, neg.x_diff, sign="du2020", entropy_weight=0.3, reference=ref)
    params = list(model.parameters())
    # θ reaches the loss only through x̃'s ∇ₓE: the output bias gets no gradient.
    grads = [torch.zeros_like(p) if gr is None else gr for p, gr in
             zip(params, torch.autograd.grad(loss, params, allow_unused=True))]
    g_norm = torch.sqrt(sum((gr**2).sum() for gr in grads))
    theta_norm = torch.sqrt(sum((p.detach() ** 2).sum() for p in params))
    scale = float(cfg.kl_step * theta_norm / g_norm)
    out = {"kl0": kl0, "step_norm": cfg.kl_step * float(theta_norm)}
    for name, sign in (("du2020", -1.0), ("cd", 1.0)):  # du2020 descends its loss, cd ascends
        moved = copy.deepcopy(model)
        with torch.no_grad():
            for p, gr in zip(moved.parameters(), grads):
                p.add_(sign * scale * gr)
        out[name] = _kl_of(moved, q0, bounds, n, cfg) - kl0
    return out


def c26_frozen(trained, targets, cfg: StudyConfig) -> dict:
    out = {}
    for t in cfg.c26_frozen_targets:
        tr = trained[("nll", t)]
        rows = []
        for gi, rec in enumerate(tr.members):
            if rec["status"] != "ok":
                rows.append(None)
                continue
            rows.append(frozen_kl_step(member(tr.energy, gi), targets[t], cfg, (t, gi)))
        out[t] = rows
    return out


def negatives_kl(tr, target, cfg: StudyConfig) -> None:
    """Binned KL[q ‖ p_θ] of the negatives the training's sampler makes at the kept θ from the
    final replay buffer (one sampler call), minus the same estimate on as many exact draws."""
    from toy_problems.study import train_config

    buf = tr.fit.buffer.storage
    tcfg = train_config(tr.method, target, cfg)
    g = _gen("negatives", tr.method, tr.target)
    q = sample_negatives(tr.energy, buf, tcfg.sampler, None, generator=g).x.detach()
    n = buf.shape[0] // tr.energy.n_members
    bins = cfg.kl_bins_2d if target.dim == 2 else cfg.kl_bins_1d
    for i, (rec, grid) in enumerate(zip(tr.members, tr.grids)):
        if grid is None:
            continue
        p = P.grid_law(grid, target.bounds, bins)
        kl_q = P.kl_bins(P.law_of_points(q[i * n:(i + 1) * n], target.bounds, bins), p)
        exact = M.sample_grid(grid, n, g)
        floor = P.kl_bins(P.law_of_points(exact, target.bounds, bins), p)
        rec.update(kl_q=kl_q, kl_floor=floor, excess_kl_q=kl_q - floor)


# --------------------------------------------------------------------------- C28


def funnel_probe(tr, target, cfg: StudyConfig) -> list[dict]:
    """Per member: the fraction of in-mode chain ends in p_θ's heavier mode at each T."""
    alpha = cfg.step_size / 2
    g_count = tr.energy.n_members
    n = cfg.funnel_chains
    x0 = _uniform(target.bounds, n, _gen("funnel starts", target.name)).to(_dtype(tr.energy))
    g = _gen("funnel", target.name)
    ends = {}
    for temp in cfg.temperatures:
        ends[temp] = langevin(tr.energy, x0.repeat(g_count, 1), cfg.funnel_steps, alpha,
                              decoupled_noise(alpha, temp), generator=g).x.detach()
    rows = []
    for i, (rec, grid) in enumerate(zip(tr.members, tr.grids)):
        if grid is None:
            rows.append(None)
            continue
        w = M.model_mode_weights(grid, target)
        major = int(torch.argmax(w))
        row = {"major": major, "model_weight": float(w[major] / w.sum()), "by_t": {}}
        for temp, x in ends.items():
            modes = target.mode_of(x[i * n:(i + 1) * n])
            inm = int((modes >= 0).sum())
            tw = M.tempered_mode_weights(grid, target, temp)
            row["by_t"][f"{temp:g}"] = {
                "frac_major": float((modes == major).sum()) / max(inm, 1),
                "frac_in_modes": inm / n,
                "tempered_major": float(tw[major] / tw.sum().clamp_min(1e-300))}
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- assembly


def run_all(trained, targets, splits, cfg: StudyConfig) -> tuple[dict, dict]:
    """Run every probe; return (values per registered comparison, details for the report)."""
    details = {"chains": chain_probes(trained, targets, splits, cfg)}
    print("[study] probes: minima", flush=True)
    details["minima"] = minima_probes(trained, targets, cfg)
    print("[study] probes: C26", flush=True)
    details["c26_frozen"] = c26_frozen(trained, targets, cfg)
    for t in cfg.c26_train_targets:
        for m in ("nll_du", "du_kl_du2020", "du_kl_cd"):
            negatives_kl(trained[(m, t)], targets[t], cfg)
    print("[study] probes: C28", flush=True)
    details["funnel"] = {t: funnel_probe(trained[("nll", t)], targets[t], cfg)
                         for t in cfg.c28_targets}
    return assemble(trained, details, cfg), details


def _arm(trained, method: str, target: str, metric: str) -> list[float | None]:
    return [r.get(metric) if r["status"] == "ok" else None
            for r in trained[(method, target)].members]


def assemble(trained, details, cfg: StudyConfig) -> dict:
    """Per registered comparison: the two arms' per-seed values (None = excluded seed)."""
    values = {}
    t_hi, t_lo = f"{cfg.t_high:g}", f"{cfg.temperatures[0]:g}"
    for r in registered(cfg):
        if r.experiment == "C7":
            a = _arm(trained, "nll", r.target, r.metric)
            b = [r.shift] * len(a)
        elif r.experiment == "C7 control":
            a = [m["excess_tv_noise"] for m in details["chains"]["control"][r.target]["members"]]
            b = [r.shift] * len(a)
        elif r.experiment == "C26 frozen":
            rows = details["c26_frozen"][r.target]
            a = [x["du2020"] if x else None for x in rows]
            b = [x["cd"] if x else None for x in rows]
        elif r.experiment == "C28":
            rows = details["funnel"][r.target]
            a = [x["by_t"][t_hi]["frac_major"] if x else None for x in rows]
            b = [x["by_t"][t_lo]["frac_major"] if x else None for x in rows]
        elif r.experiment == "C28 contrast":
            a, b = (_collapse(details["funnel"][t], t_hi, t_lo) for t in (r.a, r.b))
        else:
            a = _arm(trained, r.a, r.target, r.metric)
            b = [v + r.shift if v is not None else None
                 for v in _arm(trained, r.b, r.target, r.metric)]
        values[(r.experiment, r.name)] = _finite(a, b)
    return values


def _finite(a: list, b: list) -> dict:
    """The two arms with non-finite values replaced by None (excluded), and which they were:
    a probe that returns NaN for a scored model is reported, not decided on."""
    bad = {"a": [i for i, v in enumerate(a) if v is not None and not math.isfinite(v)],
           "b": [i for i, v in enumerate(b) if v is not None and not math.isfinite(v)]}
    clean = {k: [None if (v is not None and not math.isfinite(v)) else v for v in arm]
             for k, arm in (("a", a), ("b", b))}
    if bad["a"] or bad["b"]:
        print(f"[study] non-finite values excluded: {bad}", flush=True)
    return {**clean, "nonfinite": bad}


def _collapse(rows, t_hi: str, t_lo: str) -> list[float | None]:
    return [x["by_t"][t_hi]["frac_major"] - x["by_t"][t_lo]["frac_major"] if x else None
            for x in rows]
