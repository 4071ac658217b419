"""Test and validation log-likelihoods of digit energies by annealed importance sampling
(:mod:`ebmref.ais`), per member of an ensemble, and the checks of how far AIS can be trusted
on this rung.

NLL of member g on an evaluation set {xᵢ} (nats per image):

    NLL_g = mean_i E_g(xᵢ) + log Ẑ_g,

log Ẑ_g from forward AIS along the geometric path from a Gaussian base p₀ (fitted to noisy
training digits, widened by ``inflate``) to exp(−E_g), MALA kernels with step sizes tuned on a
pilot run (Neal, 2001). log Ẑ is a stochastic lower bound on log Z, so the NLL estimate is a
stochastic lower bound on the true NLL (optimistic); its standard error comes from the
log-weights (sd of the normalised weights / √N) and is trustworthy only when the effective
sample size is not tiny (the checks in :func:`validate_on_mixture` and the schedule comparison
of the study say how far).

An ensemble of G members is annealed in one vectorised run: G·N particles, block g (N rows)
belongs to member g, and each block's weights give that member's log Ẑ.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from ebmref.ais import ais, fit_gaussian, reverse_ais, schedule, summarise_log_weights
from ebmref.energy import Energy, Gaussian, GaussianMixture
from ebmref.validation import check_int_range, check_positive


@dataclass(frozen=True)
class AISConfig:
    """n_temps: K intermediate distributions (sigmoid schedule); n_particles: per member;
    step_size: MALA's first step (then adapted on a pilot of ``n_pilot`` particles per member,
    target acceptance 0.6); n_mcmc: MALA steps per temperature."""

    n_temps: int = 1000
    n_particles: int = 200
    step_size: float = 4e-3
    n_pilot: int = 16
    n_mcmc: int = 1

    def __post_init__(self):
        check_int_range(self.n_temps, "n_temps", 1)
        check_int_range(self.n_particles, "n_particles", 2)
        check_positive(self.step_size, "step_size")
        check_int_range(self.n_pilot, "n_pilot", 1)
        check_int_range(self.n_mcmc, "n_mcmc", 1)

    def to_dict(self) -> dict:
        return asdict(self)


def make_base(train_noisy: Tensor, inflate: float) -> Gaussian:
    """The AIS base: N(mean, inflate²·cov) of noisy training digits (N, 64), float32."""
    return fit_gaussian(train_noisy.double(), inflate=inflate).float()


@dataclass
class MemberLogZ:
    """Per member: log Ẑ, its standard error, the effective sample size (of N), and the
    mean MALA acceptance along the path."""

    log_z: list[float]
    se: list[float]
    ess: list[float]
    acceptance: float
    n_particles: int


def log_z_members(energy: Energy, base: Gaussian, cfg: AISConfig,
                  generator: torch.Generator) -> MemberLogZ:
    """Forward AIS for every member of ``energy`` (one vectorised run, module docstring)."""
    g_members = energy.n_members
    for p in energy.parameters():
        p.requires_grad_(False)
    try:
        res = ais(energy, base, cfg.n_particles * g_members, schedule(cfg.n_temps, "sigmoid"),
                  cfg.step_size, n_mcmc=cfg.n_mcmc, adapt=True, n_pilot=cfg.n_pilot * g_members,
                  generator=generator)
    finally:
        for p in energy.parameters():
            p.requires_grad_(True)
    parts = [summarise_log_weights(w) for w in res.log_weights.view(g_members, -1)]
    log_z0 = res.log_z0
    return MemberLogZ([log_z0 + p[0] for p in parts], [p[1] for p in parts],
                      [p[2] for p in parts], float(torch.nanmean(res.acceptance)),
                      cfg.n_particles)


@torch.no_grad()
def mean_energy_members(energy: Energy, x: Tensor, batch: int = 2000) -> list[float]:
    """mean_i E_g(xᵢ) for every member g on the same rows x (M, 64)."""
    g_members = energy.n_members
    sums = torch.zeros(g_members, dtype=torch.float64)
    for i in range(0, x.shape[0], batch):
        xb = x[i:i + batch]
        e = energy(xb.repeat(g_members, 1)).view(g_members, -1).double()
        sums += e.sum(1)
    return (sums / x.shape[0]).tolist()


def nll_members(energy: Energy, x_eval: Tensor, base: Gaussian, cfg: AISConfig,
                generator: torch.Generator) -> dict:
    """{"nll", "se", "ess", "log_z", "mean_energy"} lists over members, plus the path's mean
    acceptance: NLL_g = mean E_g(x) + log Ẑ_g (nats per image)."""
    lz = log_z_members(energy, base, cfg, generator)
    e = mean_energy_members(energy, x_eval)
    return {"nll": [a + b for a, b in zip(e, lz.log_z)], "se": lz.se, "ess": lz.ess,
            "log_z": lz.log_z, "mean_energy": e, "acceptance": lz.acceptance,
            "n_particles": lz.n_particles}


def class_mixture(train_noisy: Tensor, labels: Tensor, jitter: float = 1e-4) -> GaussianMixture:
    """A tractable model of the same dimension: one full-covariance Gaussian per digit class
    fitted to noisy training digits, weights = class frequencies; exact log Z and samples."""
    means, covs, logits = [], [], []
    x = train_noisy.double()
    for c in range(10):
        xc = x[labels == c]
        means.append(xc.mean(0))
        covs.append(torch.cov(xc.T) + jitter * torch.eye(x.shape[1], dtype=x.dtype))
        logits.append(math.log(xc.shape[0] / x.shape[0]))
    return GaussianMixture(torch.tensor(logits), torch.stack(means), torch.stack(covs),
                           dtype=torch.float64)


def validate_on_mixture(mixture: GaussianMixture, base: Gaussian, cfg: AISConfig, n_runs: int,
                        generator: torch.Generator) -> dict:
    """AIS with the study's settings on a target with exact log Z (``mixture``, log Z = 0 up
    to its logits): ``n_runs`` independent forward runs (each with ``cfg.n_particles``
    particles) and as many reverse runs from exact samples. Returns each run's error
    log Ẑ − log Z, stated SE and ESS, and the z-scores error/SE."""
    check_int_range(n_runs, "n_runs", 1)
    target = _Float32(mixture)
    log_z = float(torch.logsumexp(mixture.logits.detach(), 0))
    betas = schedule(cfg.n_temps, "sigmoid")
    fwd, rev = [], []
    for _ in range(n_runs):
        f = ais(target, base, cfg.n_particles, betas, cfg.step_size, n_mcmc=cfg.n_mcmc,
                adapt=True, n_pilot=cfg.n_pilot, generator=generator)
        fwd.append((f.log_z - log_z, f.log_z_se, f.ess))
        samples = mixture.sample(cfg.n_particles, generator).float()
        r = reverse_ais(target, base, samples, betas, f.step_sizes, n_mcmc=cfg.n_mcmc,
                        generator=generator)
        rev.append((r.log_z - log_z, r.log_z_se, r.ess))
    out = {"log_z": log_z, "n_runs": n_runs, "config": cfg.to_dict()}
    for name, runs in (("forward", fwd), ("reverse", rev)):
        err = [r[0] for r in runs]
        out[name] = {"error": err, "se": [r[1] for r in runs], "ess": [r[2] for r in runs],
                     "z": [r[0] / r[1] if r[1] > 0 else math.nan for r in runs],
                     "mean_error": sum(err) / len(err), "max_abs_error": max(map(abs, err))}
    return out


class _Float32(Energy):
    """A float64 analytic energy evaluated on float32 particles (the EBMs' dtype)."""

    def __init__(self, inner: Energy):
        super().__init__()
        self.inner = inner
        self.event_shape = inner.event_shape

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x.double()).to(x.dtype)

    def energy_and_grad(self, x: Tensor, create_graph: bool = False) -> tuple[Tensor, Tensor]:
        e, g = self.inner.energy_and_grad(x.double())
        return e.to(x.dtype), g.to(x.dtype)
