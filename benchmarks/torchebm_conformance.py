"""ebmref's conformance checks run on torchebm's samplers (benchmark environment only).

Adapters give torchebm's ``LangevinDynamics`` and ``HamiltonianMonteCarlo`` the signature
``fn(energy, x0, n_steps, step_size, generator)`` of :func:`ebmref.conformance.check_sampler`,
on a torchebm ``BaseModel`` whose ``forward`` is the very ebmref energy of the check (torchebm
differentiates it with autograd, its default), float64, CPU, the check's generator passed to
torchebm's ``sample(..., generator=)``.

* ULA: torchebm's step is x − η∇U + √(2η)·s·ξ; eq. 1 with step λ is η = λ/2, s = 1 (kind
  "ula"), and Du's x − α∇E + σξ is η = α, s = σ/√(2α) (kind "decoupled").
* HMC: ``step_size`` is the leapfrog step ε, with ``--leapfrog`` (default 5) leapfrog steps per
  proposal and unit mass; one proposal per chain step (kind "exact").

torchebm is never a dependency of ebmref; install it in the benchmark environment
(benchmarks/README.md) and run

    benchmarks/.venv-bench/bin/python -m benchmarks.torchebm_conformance

which writes benchmarks/conformance_torchebm.md (tables, torchebm's version, the machine, the
command and the seed) and exits 1 unless torchebm's samplers pass and the two controls (wrong
uses of torchebm's Langevin step) fail.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

from benchmarks._common import machine_info
from ebmref.cli import ArgumentParser, add_debug_argument, guarded
from ebmref.conformance import Report, check_sampler
from ebmref.energy import Energy

F64 = torch.float64
SIGMA = 0.5  # σ of the decoupled check
OUT = Path(__file__).resolve().parent / "conformance_torchebm.md"


def _wrapped(energy: Energy):
    """A torchebm BaseModel whose forward is ``energy`` (float64, CPU)."""
    from torchebm.core import BaseModel

    class Wrapped(BaseModel):
        def __init__(self, base: Energy):
            super().__init__(dtype=F64, device="cpu")
            self.base = base

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.base(x)

    return Wrapped(energy)


def torchebm_ula(energy: Energy, x0: torch.Tensor, n_steps: int, step_size: float,
                 generator: torch.Generator) -> torch.Tensor:
    """Eq. 1 with step λ through torchebm's LangevinDynamics: η = λ/2, noise_scale 1."""
    from torchebm.samplers import LangevinDynamics
    sampler = LangevinDynamics(_wrapped(energy), step_size=step_size / 2, noise_scale=1.0,
                               dtype=F64, device="cpu")
    return sampler.sample(x=x0, n_steps=n_steps, generator=generator)


def torchebm_decoupled(energy: Energy, x0: torch.Tensor, n_steps: int, step_size: float,
                       generator: torch.Generator) -> torch.Tensor:
    """Du's x − α∇E + σξ (σ = SIGMA) through LangevinDynamics: η = α, s = σ/√(2α)."""
    from torchebm.samplers import LangevinDynamics
    sampler = LangevinDynamics(_wrapped(energy), step_size=step_size,
                               noise_scale=SIGMA / math.sqrt(2 * step_size), dtype=F64,
                               device="cpu")
    return sampler.sample(x=x0, n_steps=n_steps, generator=generator)


def torchebm_hmc(n_leapfrog: int):
    """HamiltonianMonteCarlo with leapfrog step ε = ``step_size`` and ``n_leapfrog`` steps."""
    def fn(energy: Energy, x0: torch.Tensor, n_steps: int, step_size: float,
           generator: torch.Generator) -> torch.Tensor:
        from torchebm.samplers import HamiltonianMonteCarlo
        sampler = HamiltonianMonteCarlo(_wrapped(energy), step_size=step_size,
                                        n_leapfrog_steps=n_leapfrog, dtype=F64, device="cpu")
        return sampler.sample(x=x0, n_steps=n_steps, generator=generator)
    return fn


def torchebm_ula_eta_lambda(energy: Energy, x0: torch.Tensor, n_steps: int, step_size: float,
                            generator: torch.Generator) -> torch.Tensor:
    """Control (a wrong mapping, must fail): torchebm's step_size set to λ itself, i.e.
    x − λ∇U + √(2λ)ξ, twice eq. 1's drift and noise variance."""
    from torchebm.samplers import LangevinDynamics
    sampler = LangevinDynamics(_wrapped(energy), step_size=step_size, noise_scale=1.0,
                               dtype=F64, device="cpu")
    return sampler.sample(x=x0, n_steps=n_steps, generator=generator)


def run_checks(seed: int, n_leapfrog: int) -> list[tuple[str, bool, Report]]:
    """(sampler, expected to pass, report) for each check, in the order of the written file:
    torchebm's samplers under the mappings above, then two controls that must fail (they
    show that the same adapters and checks see an error when there is one)."""
    return [
        ("torchebm `LangevinDynamics` as eq. 1 (η = λ/2, s = 1)", True,
         check_sampler(torchebm_ula, kind="ula", seed=seed)),
        (f"torchebm `LangevinDynamics` as Du's step (η = α, s = σ/√(2α), σ = {SIGMA})", True,
         check_sampler(torchebm_decoupled, kind="decoupled", noise=SIGMA, seed=seed)),
        (f"torchebm `HamiltonianMonteCarlo` ({n_leapfrog} leapfrog steps of ε = step size)",
         True, check_sampler(torchebm_hmc(n_leapfrog), kind="exact", seed=seed)),
        ("control: torchebm `LangevinDynamics` with η = λ (wrong mapping) as eq. 1", False,
         check_sampler(torchebm_ula_eta_lambda, kind="ula", seed=seed)),
        ("control: torchebm `LangevinDynamics` (η = λ/2) as an exact kernel (ULA is biased)",
         False, check_sampler(torchebm_ula, kind="exact", seed=seed)),
    ]


def _run(args) -> int:
    try:
        import torchebm
    except ImportError:
        raise RuntimeError("torchebm is not installed: run this in the benchmark environment "
                           "(benchmarks/README.md)") from None
    torch.set_num_threads(args.threads)
    command = ("benchmarks/.venv-bench/bin/python -m benchmarks.torchebm_conformance "
               f"--seed {args.seed} --leapfrog {args.leapfrog}")
    intro = (f"Command: `{command}` (seed {args.seed}, float64, CPU). Each check's total "
             "false-failure rate is α = 1e-6 (Bonferroni over its rows); the controls are "
             "deliberately wrong uses that the checks must flag.")
    lines = ["# ebmref conformance checks on torchebm's samplers", "",
             f"torchebm {torchebm.__version__}; machine: {machine_info()}", "", intro, "",
             "| sampler | check | expected | verdict |", "| --- | --- | --- | --- |"]
    results = run_checks(args.seed, args.leapfrog)
    for name, expected, report in results:
        verdict = "pass" if report.passed else \
            f"fail ({len(report.failures)} of {len(report.rows)} rows)"
        lines.append(f"| {name} | {report.title} | {'pass' if expected else 'fail'} "
                     f"| **{verdict}** |")
    for name, _, report in results:
        lines += ["", f"## {name}", "", report.markdown().replace("### ", "#### ", 1)]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)
    return 0 if all(r.passed == expected for _, expected, r in results) else 1


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m benchmarks.torchebm_conformance",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0, help="generator seed of the checks")
    p.add_argument("--leapfrog", type=int, default=5, help="HMC leapfrog steps per proposal")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--out", default=str(OUT), help="where to write the Markdown tables")
    add_debug_argument(p)
    args = p.parse_args(argv)
    return guarded(p.prog, lambda: _run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
