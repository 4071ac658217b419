"""Train one (target, method, seed) with ebmref's ``train()`` and measure it exactly.

Measured per run (see :mod:`toy_problems.metrics`):

* ``nll_gap``: test NLL of p_θ minus test NLL of p_data on the same test points — an unbiased
  estimate of KL[p_data ‖ p_θ] (paper §4: L_NLL = KL + H(p_data)), exact log Z by quadrature;
* ``mass_outside``: p_θ mass outside the data's support (spurious low-energy regions, C16);
* ``mode_weight_error``: total variation between p_θ's and p_data's mode weights;
* ``frac_noise_in_modes`` / ``frac_data_in_modes``: chains from uniform noise / from test data,
  ``eval_steps`` ULA steps (eq. 1, T = 1) on the trained model, fraction ending in a data mode
  (C7, C27);
* ``switches_per_1000``: mode switches per 1,000 steps of the chains started at the data (mixing
  at T = 1);
* ``kl_q``: KL[q ‖ p_θ] of the training negatives q (the final replay buffer; for CD-10 the
  chains from the data), histogram estimate; ``kl_bias`` the same estimator on exact draws of
  p_θ of the same size (its bias floor).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from ebmref.energy import Energy
from ebmref.samplers import decoupled_noise, langevin
from ebmref.training import TrainingDiverged, train
from toy_problems import metrics as M
from toy_problems.config import ToyConfig
from toy_problems.methods import (
    METHODS,
    Budget,
    make_energy,
    make_train_config,
    make_transition,
    run_chains,
)
from toy_problems.targets import Target, train_test_split

N_TRAJECTORIES = 8  # chains per start type whose whole path is kept for the figures


@dataclass
class RunArtefacts:
    """What the figures need from one run (kept for seed 0 only)."""

    grid: M.DensityGrid
    x_noise: Tensor  # final states of chains from noise
    x_data: Tensor  # final states of chains from data
    path_noise: Tensor  # (steps+1, N_TRAJECTORIES, d)
    path_data: Tensor


def data_for(target: Target, cfg: ToyConfig, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1000 + seed)
    return train_test_split(target, cfg.n_train, cfg.n_test, g)


def uniform_box(target: Target, n: int, generator: torch.Generator) -> Tensor:
    lo = torch.tensor([b[0] for b in target.bounds])
    hi = torch.tensor([b[1] for b in target.bounds])
    return lo + (hi - lo) * torch.rand(n, target.dim, generator=generator)


def grid_points(target: Target, cfg: ToyConfig) -> int:
    return cfg.grid_points_2d if target.dim == 2 else cfg.grid_points_1d


def negatives(result, energy: Energy, train_x: Tensor, budget: Budget, tcfg,
              generator: torch.Generator) -> Tensor:
    """Samples of the training negatives' law q: the replay buffer, or CD chains from data."""
    if result.buffer is not None:
        return result.buffer.storage.detach()
    x0 = train_x[: budget.buffer_size]
    x, _ = run_chains(energy, x0, tcfg.sampler.n_steps, tcfg.sampler.step_size, generator,
                      noise=tcfg.sampler.noise)
    return x


def run_one(target: Target, method_name: str, seed: int, cfg: ToyConfig,
            keep_artefacts: bool = False) -> tuple[dict, RunArtefacts | None, Energy | None]:
    budget = cfg.budget()
    method = METHODS[method_name]
    train_x, test_x = data_for(target, cfg, seed)
    energy = make_energy(target, budget, seed)
    tcfg = make_train_config(method, target, budget, seed)
    record: dict = {"target": target.name, "method": method_name, "seed": seed}
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        result = train(energy, train_x, tcfg, transition=make_transition(method, target))
    except TrainingDiverged as err:  # a method that blows up is a result, not a crash
        record.update(diverged=str(err), train_s=time.perf_counter() - t0,
                      train_cpu_s=time.process_time() - c0)
        return record, None, None
    record.update(train_s=time.perf_counter() - t0, train_cpu_s=time.process_time() - c0)
    energy.eval()
    t1, c1 = time.perf_counter(), time.process_time()
    g = torch.Generator().manual_seed(10_000 + seed)

    grid = M.density_grid(energy, target.bounds, grid_points(target, cfg), cfg.grid_expand)
    nll = M.heldout_nll(energy, test_x, grid.log_z)
    h = M.data_nll(target, test_x)
    record.update(heldout_nll=nll, data_nll=h, nll_gap=nll - h, log_z=grid.log_z,
                  log_z_error=grid.log_z_error, leak=grid.leak,
                  mass_outside=M.mass_outside_support(grid, target),
                  mode_weight_error=M.mode_weight_error(grid, target),
                  model_mode_weights=M.model_mode_weights(grid, target).tolist())

    n = cfg.eval_chains
    dtype = next(energy.parameters()).dtype
    x0 = torch.cat([uniform_box(target, n, g), test_x[:n]]).to(dtype)
    x_end, labels = run_chains(energy, x0, cfg.eval_steps, cfg.step_size, g,
                               label_fn=target.core_of)
    record.update(frac_noise_in_modes=M.fraction_in_modes(x_end[:n], target),
                  frac_data_in_modes=M.fraction_in_modes(x_end[n:], target),
                  switches_per_1000=M.mode_switches_per_1000(labels[:, n:]))

    q = negatives(result, energy, train_x, budget, tcfg, g)
    kl_bias = M.histogram_kl(M.sample_grid(grid, q.shape[0], g), grid, cfg.kl_bins,
                             target.bounds)
    record.update(kl_q=M.histogram_kl(q, grid, cfg.kl_bins, target.bounds), kl_bias=kl_bias,
                  eval_s=time.perf_counter() - t1, eval_cpu_s=time.process_time() - c1)

    artefacts = None
    if keep_artefacts:
        sel = torch.cat([torch.arange(N_TRAJECTORIES), n + torch.arange(N_TRAJECTORIES)])
        paths = langevin(energy, x0[sel], cfg.eval_steps, cfg.step_size, generator=g,
                         record_every=1).trajectory
        artefacts = RunArtefacts(grid=grid, x_noise=x_end[:n], x_data=x_end[n:],
                                 path_noise=paths[:, :N_TRAJECTORIES],
                                 path_data=paths[:, N_TRAJECTORIES:])
    return record, artefacts, energy


def funnel(energy: Energy, target: Target, cfg: ToyConfig, seed: int) -> list[dict]:
    """C28 toy analogue: chains from noise with Du's decoupled step at rising noise σ (fixed
    α = step_size/2, T = σ²/2α). For each T: the fraction of in-mode chains that sit in the mode
    of largest true weight, against that mode's true weight and against the weight the tempered
    law p_θ^{1/T} (the stationary law at T) gives it, computed exactly on the grid."""
    g = torch.Generator().manual_seed(20_000 + seed)
    grid = M.density_grid(energy, target.bounds, grid_points(target, cfg), cfg.grid_expand)
    heavy = int(torch.argmax(target.mode_weights))
    alpha = cfg.step_size / 2
    x0 = uniform_box(target, cfg.eval_chains, g).to(next(energy.parameters()).dtype)
    rows = []
    for temp in cfg.funnel_temperatures:
        x, _ = run_chains(energy, x0, cfg.funnel_steps, alpha, g,
                          noise=decoupled_noise(alpha, temp))
        modes = target.mode_of(x)
        in_mode = modes >= 0
        frac = float((modes == heavy).sum()) / max(int(in_mode.sum()), 1)
        tw = M.tempered_mode_weights(grid, target, temp)
        rows.append({"target": target.name, "seed": seed, "temperature": temp,
                     "noise": decoupled_noise(alpha, temp), "frac_heavy": frac,
                     "frac_in_modes": float(in_mode.to(torch.float64).mean()),
                     "tempered_heavy": float(tw[heavy] / tw.sum().clamp_min(1e-300)),
                     "true_heavy": float(target.mode_weights[heavy])})
    return rows


def reference_row(target: Target, cfg: ToyConfig) -> dict:
    """The same metrics for p_data itself (exact samples), the floor every method aims at."""
    _, test_x = data_for(target, cfg, 0)
    g = torch.Generator().manual_seed(30_000)
    x = target.sample(cfg.eval_chains, g)
    row = {"target": target.name, "method": "data (exact)", "seed": 0, "nll_gap": 0.0,
           "heldout_nll": M.data_nll(target, test_x), "data_nll": M.data_nll(target, test_x),
           "frac_noise_in_modes": M.fraction_in_modes(x, target),
           "frac_data_in_modes": M.fraction_in_modes(x, target), "mode_weight_error": 0.0}
    if hasattr(target, "mixture"):
        grid = M.density_grid(target.mixture, target.bounds, grid_points(target, cfg),
                                cfg.grid_expand)
        row["mass_outside"] = M.mass_outside_support(grid, target)
    else:
        row["mass_outside"] = 0.0
    if target.symmetry == "rot8":
        row["annulus_gap"] = M.rotational_average_gap(target, test_x)
    return row


def summarise(records: list[dict], keys: list[str]) -> dict:
    """Mean and sample sd over seeds of each metric, per (target, method)."""
    out: dict = {}
    for r in records:
        out.setdefault((r["target"], r["method"]), []).append(r)
    summary = {}
    for (t, m), rs in out.items():
        cell = {"n": len(rs), "diverged": sum("diverged" in r for r in rs)}
        for k in keys:
            vals = [r[k] for r in rs if k in r and r[k] is not None and math.isfinite(r[k])]
            if vals:
                mean = sum(vals) / len(vals)
                sd = (math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
                      if len(vals) > 1 else float("nan"))
                cell[k] = {"mean": mean, "sd": sd, "n": len(vals)}
        summary[f"{t}/{m}"] = cell
    return summary
