"""Langevin (ULA, paper eq. 1) and MALA throughput on analytic 2-D energies, side by side:

* ebmref           – ``ebmref.samplers.langevin`` / ``mala`` with the energy's closed-form gradient;
* ebmref (autograd ∇) – the same samplers on the same energy with the generic autograd gradient
                     (separates the sampler's own overhead from the closed-form gradient);
* torchebm         – ``torchebm.samplers.LangevinDynamics`` (x − η∇U + √(2η)·s·ξ with η = λ/2,
                     s = 1, which is eq. 1 with step λ) on a torchebm ``BaseModel`` whose forward
                     is the very same ebmref energy (autograd gradient, torchebm's default);
                     torchebm has no MALA;
* plain loop       – the loop a user writes: ``requires_grad_``, ``torch.autograd.grad`` each
                     step (for MALA the current state's energy and gradient are kept, as in ebmref).

The last column is MALA's floor on the same energy: a ULA step plus one uniform per chain and
its log, the work any MALA accept test adds without evaluating the energy again (run as ULA
with a transition hook that draws them), as a ratio to the ULA step.

Same energy, start states, number of chains and steps, dtype and threads for every column;
one warm-up round, then the median of ``--repeats`` interleaved rounds. Throughput is
chains·steps per second. torchebm lives only in the benchmark environment
(benchmarks/README.md); without it that column is skipped.

    python -m benchmarks.samplers                   # 1e3, 1e4, 1e5 chains
    python -m benchmarks.samplers --chains 1000 --repeats 3
"""

from __future__ import annotations

import math

import torch

from benchmarks._common import fmt, interleaved_medians, machine_info, markdown_table
from ebmref.cli import ArgumentParser
from ebmref.energy import Energy, Gaussian, GaussianMixture
from ebmref.samplers import langevin, mala

STEP = 0.01  # λ of eq. 1


def make_energy(name: str, dtype: torch.dtype) -> Energy:
    if name == "mixture":  # ring of 8 isotropic components, radius 4, σ = 0.3
        angle = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        means = 4.0 * torch.stack([angle.cos(), angle.sin()], 1)
        return GaussianMixture(torch.zeros(8), means, torch.full((8,), 0.09), dtype=dtype)
    if name == "gaussian":
        return Gaussian([1.0, -1.0], [[1.0, 0.6], [0.6, 2.0]], dtype=dtype)
    raise ValueError(f"energy: expected 'mixture' or 'gaussian', got {name!r}")


class AutogradGradient(Energy):
    """The same energy, but ∇ₓE through the generic autograd path of ``Energy``."""

    def __init__(self, base: Energy):
        super().__init__()
        self.base = base
        self.event_shape = base.event_shape

    def forward(self, x):
        return self.base(x)


def torchebm_sampler(energy: Energy, dtype: torch.dtype):
    try:
        from torchebm.core import BaseModel
        from torchebm.samplers import LangevinDynamics
    except ImportError:
        return None

    class Wrapped(BaseModel):
        def __init__(self, base):
            super().__init__(dtype=dtype)
            self.base = base

        def forward(self, x):
            return self.base(x)

    # torchebm: x − η∇U + √(2η)·s·ξ; eq. 1 with step λ is η = λ/2, s = 1.
    return LangevinDynamics(Wrapped(energy), step_size=STEP / 2, noise_scale=1.0, dtype=dtype,
                            device="cpu")


def uniform_and_log(x, generator):
    """Transition hook for the MALA floor: draw one uniform per chain and take its log."""
    torch.rand(x.shape[0], generator=generator, dtype=x.dtype).log_()
    return x


def plain_langevin(energy, x0, n_steps, generator):
    x = x0
    for _ in range(n_steps):
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(energy(x).sum(), x)
        x = x - 0.5 * STEP * g + math.sqrt(STEP) * torch.randn(x.shape, generator=generator,
                                                              dtype=x.dtype)
    return x.detach()


def plain_mala(energy, x0, n_steps, generator):
    def e_and_g(z):
        z = z.detach().requires_grad_(True)
        e = energy(z)
        (g,) = torch.autograd.grad(e.sum(), z)
        return e.detach(), g

    x = x0.detach()
    e_x, g_x = e_and_g(x)
    for _ in range(n_steps):
        y = x - 0.5 * STEP * g_x + math.sqrt(STEP) * torch.randn(x.shape, generator=generator,
                                                                dtype=x.dtype)
        e_y, g_y = e_and_g(y)
        fwd = ((y - x + 0.5 * STEP * g_x) ** 2).sum(-1) / (2 * STEP)
        bwd = ((x - y + 0.5 * STEP * g_y) ** 2).sum(-1) / (2 * STEP)
        log_alpha = e_x - e_y + fwd - bwd
        accept = torch.rand(x.shape[0], generator=generator, dtype=x.dtype).log() < log_alpha
        x = torch.where(accept[:, None], y, x)
        e_x = torch.where(accept, e_y, e_x)
        g_x = torch.where(accept[:, None], g_y, g_x)
    return x


def bench(energy_name, chains, n_steps, repeats, dtype, use_torchebm, clock_kind):
    energy = make_energy(energy_name, dtype)
    autograd = AutogradGradient(energy)
    g = torch.Generator().manual_seed(0)
    x0 = 3.0 * torch.randn(chains, 2, generator=g, dtype=dtype)
    tebm = torchebm_sampler(energy, dtype) if use_torchebm else None

    ula = {
        "ebmref": lambda: langevin(energy, x0, n_steps, STEP, generator=g),
        "autograd": lambda: langevin(autograd, x0, n_steps, STEP, generator=g),
        "plain": lambda: plain_langevin(energy, x0, n_steps, g),
        "floor": lambda: langevin(energy, x0, n_steps, STEP, generator=g,
                                  transition=uniform_and_log, transition_every=1),
        "mala_ebmref": lambda: mala(energy, x0, n_steps, STEP, generator=g),
        "mala_autograd": lambda: mala(autograd, x0, n_steps, STEP, generator=g),
        "mala_plain": lambda: plain_mala(energy, x0, n_steps, g),
    }
    if tebm is not None:
        ula["torchebm"] = lambda: tebm.sample(x=x0, n_steps=n_steps, generator=g)
    t = interleaved_medians(ula, repeats, clock_kind=clock_kind)
    rate = {k: chains * n_steps / v for k, v in t.items()}
    rows = []
    te = rate.get("torchebm")
    rows.append([energy_name, f"{chains:.0e}", str(n_steps), "langevin",
                 fmt(rate["ebmref"]), fmt(rate["autograd"]), fmt(te), fmt(rate["plain"]),
                 fmt(rate["ebmref"] / te if te else None, 3),
                 fmt(rate["ebmref"] / rate["plain"], 3), "1", "n/a"])
    rows.append([energy_name, f"{chains:.0e}", str(n_steps), "mala",
                 fmt(rate["mala_ebmref"]), fmt(rate["mala_autograd"]), "n/a",
                 fmt(rate["mala_plain"]), "n/a", fmt(rate["mala_ebmref"] / rate["mala_plain"], 3),
                 fmt(t["mala_ebmref"] / t["ebmref"], 3), fmt(t["floor"] / t["ebmref"], 3)])
    return rows, {"torchebm_ratio": rate["ebmref"] / te if te else None,
                  "mala_cost": t["mala_ebmref"] / t["ebmref"],
                  "floor_cost": t["floor"] / t["ebmref"]}


def main(argv=None):
    p = ArgumentParser(prog="python -m benchmarks.samplers",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--chains", type=int, nargs="+", default=[1_000, 10_000, 100_000],
                   help="numbers of parallel chains")
    p.add_argument("--work", type=float, default=1e6,
                   help="chains·steps per timed run: steps = max(--steps, work / chains)")
    p.add_argument("--steps", type=int, default=10, help="minimum steps per timed run")
    p.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds")
    p.add_argument("--energies", nargs="+", default=["mixture", "gaussian"],
                   help="mixture: ring of 8 Gaussians; gaussian: correlated 2-D Gaussian")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="chain dtype")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                   help="cpu: process CPU time (steady on a shared machine, 1 thread); wall")
    p.add_argument("--no-torchebm", action="store_true", help="skip the torchebm column")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    use_tebm = not args.no_torchebm
    if use_tebm:
        try:
            import torchebm
            tebm_note = f"torchebm {torchebm.__version__}"
        except ImportError:
            use_tebm = False
            tebm_note = "torchebm not installed: column skipped (benchmarks/README.md)"
    else:
        tebm_note = "torchebm column skipped (--no-torchebm)"

    print(f"## Samplers: chains·steps per second ({args.dtype}, step λ = {STEP})\n")
    print(f"Machine: {machine_info()}; {tebm_note}; clock: {args.clock} time, median of "
          f"{args.repeats} interleaved rounds after a warm-up\n")
    header = ["energy", "chains", "steps", "sampler", "ebmref", "ebmref (autograd ∇)", "torchebm",
              "plain loop", "ebmref ÷ torchebm", "ebmref ÷ plain", "cost ÷ ULA step",
              "floor ÷ ULA step"]
    rows, summary = [], []
    for name in args.energies:
        for n in args.chains:
            steps = max(args.steps, int(args.work // n))
            r, s = bench(name, n, steps, args.repeats, dtype, use_tebm, args.clock)
            rows += r
            summary.append((name, n, s))
    print(markdown_table(header, rows))
    print()
    big = max(args.chains)
    for name, n, s in summary:
        if n != big:
            continue
        if s["torchebm_ratio"] is not None:
            ok = "met" if s["torchebm_ratio"] >= 2 else "NOT met"
            print(f"- target Langevin ≥ 2× torchebm at {n:.0e} chains, {name}: "
                  f"{s['torchebm_ratio']:.2f}× ({ok})")
        ok = "met" if s["mala_cost"] <= 1.3 else "NOT met"
        print(f"- target MALA step ≤ 1.3× ULA step at {n:.0e} chains, {name}: "
              f"{s['mala_cost']:.2f}× ({ok})")
        print(f"- MALA floor at {n:.0e} chains, {name}: a ULA step plus one uniform per chain "
              f"and its log costs {s['floor_cost']:.2f}× a ULA step (MALA: {s['mala_cost']:.2f}×)")


if __name__ == "__main__":
    main()
