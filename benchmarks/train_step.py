"""One MNIST training iteration of the IGEBM recipe (Du & Mordatch 2019: 60 Langevin steps,
α = 10, σ = 0.005, gradient clip 0.01, clamp [0, 1], replay buffer, L2 = 1, Adam): ebmref's
:func:`ebmref.training.train_step` — the very step ``train()`` runs — against the eager loop
that tutorials write (per step ``x.requires_grad_()``, ``torch.autograd.grad``, clip, clamp).

Both sides use the same ``ebmref.nets.IGEBMEnergy`` weights, batch, dtype and threads, the same
optimiser (Adam, lr 3e-4, no weight-gradient clipping); the images are uniform noise (the cost
of an iteration does not depend on pixel values), so no dataset is needed. Batch 128 on GPU, 16
on CPU by default. The optional ``--compile`` adds a ``torch.compile``d energy (compiled in the
warm-up round, not timed).

    python -m benchmarks.train_step --repeats 3
"""

from __future__ import annotations

import copy

import torch

from benchmarks._common import fmt, interleaved_medians, machine_info, markdown_table
from ebmref.cli import ArgumentParser
from ebmref.config import TrainConfig, with_overrides
from ebmref.nets import IGEBMEnergy
from ebmref.training import TrainState, train_step

N_STEPS, STEP, NOISE, CLIP, L2, LR = 60, 10.0, 0.005, 0.01, 1.0, 3e-4


def ebmref_state(energy, batch: int, device: str) -> TrainState:
    """The IGEBM recipe as a TrainConfig (its defaults), on the benchmark's optimiser."""
    cfg = with_overrides(TrainConfig(), {
        "sampler.n_steps": N_STEPS, "sampler.step_size": STEP, "sampler.noise": NOISE,
        "sampler.grad_clip": CLIP, "optim.l2": L2, "optim.lr": LR, "optim.max_grad_norm": None,
        "run.batch_size": batch, "run.device": device, "run.progress": False})
    state = TrainState.create(energy, cfg)
    state.ensure_buffer((1, 28, 28))
    return state


def tutorial_iteration(model, opt, store, x_pos, g):
    # Replay buffer as tutorials keep it: a tensor, 5 % fresh noise.
    idx = torch.randint(0, store.shape[0], (x_pos.shape[0],), generator=g, device=x_pos.device)
    x = store[idx]
    fresh = torch.rand(x.shape, generator=g, device=x.device)
    keep = (torch.rand(x.shape[0], generator=g, device=x.device) > 0.05).float()
    keep = keep[:, None, None, None]
    x = keep * x + (1 - keep) * fresh
    for p in model.parameters():
        p.requires_grad_(False)
    for _ in range(N_STEPS):
        x = x.detach().requires_grad_(True)
        e = model(x)
        (grad,) = torch.autograd.grad(e.sum(), x)
        x = x - STEP * grad.clamp(-CLIP, CLIP) + NOISE * torch.randn(x.shape, generator=g,
                                                                   device=x.device)
        x = x.clamp(0.0, 1.0)
    for p in model.parameters():
        p.requires_grad_(True)
    x = x.detach()
    store[idx] = x
    e_pos, e_neg = model(x_pos), model(x)
    loss = e_pos.mean() - e_neg.mean() + L2 * (e_pos**2 + e_neg**2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main(argv=None):
    p = ArgumentParser(prog="python -m benchmarks.train_step",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu or cuda (default: cuda when available)")
    p.add_argument("--batch", type=int, default=None, help="128 on GPU, 16 on CPU")
    p.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--compile", action="store_true", help="also time a torch.compile'd energy")
    p.add_argument("--clock", choices=["cpu", "wall"], default=None,
                   help="default: process CPU time on CPU (shared machines), wall time on GPU")
    args = p.parse_args(argv)
    dev = args.device
    batch = args.batch or (128 if dev.startswith("cuda") else 16)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g = torch.Generator(device=dev).manual_seed(0)
    base = IGEBMEnergy().to(dev)
    x_pos = torch.rand(batch, 1, 28, 28, device=dev)

    s1 = ebmref_state(copy.deepcopy(base), batch, dev)
    m2 = copy.deepcopy(base)
    o2 = torch.optim.Adam(m2.parameters(), lr=LR, betas=(0.0, 0.999))
    store = torch.rand(10_000, 1, 28, 28, device=dev)
    fns = {"ebmref": lambda: train_step(s1, x_pos),
           "tutorial": lambda: tutorial_iteration(m2, o2, store, x_pos, g)}
    if args.compile:
        m3 = copy.deepcopy(base)
        # energy_and_grad calls self(x) → forward: compile the bound method (no recursion).
        m3.forward = torch.compile(m3.forward)
        s3 = ebmref_state(m3, batch, dev)
        fns["ebmref + torch.compile"] = lambda: train_step(s3, x_pos)
    clock_kind = args.clock or ("wall" if dev.startswith("cuda") else "cpu")
    t = interleaved_medians(fns, args.repeats, dev, warmup=1, clock_kind=clock_kind)
    rows = [[k, str(batch), fmt(v), fmt(batch * N_STEPS / v), fmt(t["tutorial"] / v)]
            for k, v in t.items()]
    print(f"## One MNIST training iteration (IGEBM CNN, {N_STEPS} sampler steps, {dev})\n")
    print(f"Machine: {machine_info(dev)}; clock: {clock_kind} time, median of {args.repeats} "
          f"interleaved rounds after a warm-up\n")
    print(markdown_table(["implementation", "batch", "s / iteration", "chain·steps / s",
                          "speed-up vs tutorial loop"], rows))


if __name__ == "__main__":
    main()
