"""Seeds as one vectorised ensemble (ebmref.ensemble) against one seed: the time of one toy
training update (the toy problems' MLP 3×64, batch 128 per member, 10 eq.-1 Langevin steps, a
replay buffer of 1000 per member) for G = 1 and G members (``StackedMLPEnergy``, and the generic
``EnsembleEnergy``), side by side in one process, interleaved, median over rounds. The ratio is
what G seeds cost against one.

The last column is the update exactly as the claims study runs it (``toy_problems.fit``): the
stacked MLPs inside ``ConfinedEnergy`` on ring8's box, the step rescaled per member
(``MemberRates``: the tuning grid's learning rates) and the loss forwards through
``MemberPenalty`` (its energy penalties).

    python -m benchmarks.ensemble --members 10 --repeats 20
"""

from __future__ import annotations

import torch

from benchmarks._common import fmt, interleaved_medians, machine_info, markdown_table
from ebmref.cli import ArgumentParser
from ebmref.config import TrainConfig, with_overrides
from ebmref.ensemble import EnsembleEnergy, StackedMLPEnergy
from ebmref.nets import MLPEnergy
from ebmref.training import TrainState, train_step
from toy_problems.fit import MemberPenalty, MemberRates, make_ensemble
from toy_problems.targets import make_target


def _state(members: int, kl: bool, dtype: str, kind: type | str | None) -> TrainState:
    nets = []
    for seed in range(members):
        torch.manual_seed(seed)
        nets.append(MLPEnergy(2, hidden=64, depth=3))
    if kind == "study":
        energy = make_ensemble(make_target("ring8"), list(range(members)), 64, 3,
                               getattr(torch, dtype))
    else:
        energy = nets[0] if kind is None else kind(nets)
    extra = {"kl.weight": 1.0, "kl.entropy_weight": 0.3} if kl else {}
    cfg = with_overrides(TrainConfig(), {
        "run.batch_size": 128, "run.device": "cpu", "run.dtype": dtype,
        "buffer.size": 1000, "buffer.noise_low": -3.0, "buffer.noise_high": 3.0,
        "sampler.n_steps": 10, "sampler.step_size": 0.02, "sampler.noise": None,
        "sampler.grad_clip": None, "sampler.clamp": None, "optim.lr": 1e-3, "optim.l2": 0.1,
        "optim.max_grad_norm": None, **extra})
    state = TrainState.create(energy.to(getattr(torch, dtype)), cfg)
    state.ensure_buffer((2,))
    return state


def _study_step(state: TrainState, x, rates: MemberRates, model: MemberPenalty):
    """The claims study's update (toy_problems.fit.fit): snapshot, train_step, rescale."""
    rates.snapshot()
    train_step(state, x, model=model)
    rates.apply()


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m benchmarks.ensemble",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--members", type=int, default=10, help="G, the seeds in the ensemble")
    p.add_argument("--repeats", type=int, default=20, help="interleaved timing rounds")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="parameter and chain dtype")
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                   help="process CPU time (default, steadier on a shared machine) or wall time")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    g = args.members
    for kl in (False, True):
        states = {"1 seed": _state(1, kl, args.dtype, None),
                  "stacked": _state(g, kl, args.dtype, StackedMLPEnergy),
                  "vmap": _state(g, kl, args.dtype, EnsembleEnergy),
                  "study": _state(g, kl, args.dtype, "study")}
        dt = getattr(torch, args.dtype)
        data = {k: 0.5 * torch.randn(128 * s.energy.n_members, 2, dtype=dt)
                for k, s in states.items()}
        fns = {k: (lambda s=s, x=data[k]: train_step(s, x)) for k, s in states.items()}
        study = states["study"]
        rates = MemberRates([p for p in study.energy.parameters()],
                            [1e-3 * (1 + i % 3) for i in range(g)])
        penalty = MemberPenalty(study.energy, [0.1 * (1 + i % 2) for i in range(g)])
        fns["study"] = (lambda s=study, x=data["study"], r=rates, m=penalty:
                        _study_step(s, x, r, m))
        t = interleaved_medians(fns, args.repeats, warmup=2, clock_kind=args.clock)
        what = "NLL + KL loss (entropy 0.3)" if kl else "NLL (noise buffer)"
        rows.append([what, fmt(t["1 seed"] * 1e3), fmt(t["stacked"] * 1e3),
                     fmt(t["stacked"] / t["1 seed"]), fmt(t["vmap"] * 1e3),
                     fmt(t["vmap"] / t["1 seed"]), fmt(t["study"] * 1e3),
                     fmt(t["study"] / t["1 seed"])])
    print(f"## {g} seeds as one ensemble vs one seed (toy update, {args.dtype})\n")
    print(f"Machine: {machine_info()}; clock: {args.clock} time, median of {args.repeats} "
          "interleaved rounds after 2 warm-up rounds\n")
    print(markdown_table(["objective", "1 seed (ms / update)",
                          f"{g} seeds, StackedMLPEnergy (ms)", "cost ÷ 1 seed",
                          f"{g} seeds, EnsembleEnergy (ms)", "cost ÷ 1 seed",
                          f"{g} seeds as the claims study trains them (ms)", "cost ÷ 1 seed"],
                         rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
