"""One MNIST training iteration of the IGEBM recipe (PEERS.md: 60 Langevin steps, α = 10,
σ = 0.005, gradient clip 0.01, clamp [0, 1], replay buffer, L2 = 1, Adam): ebmref against the
eager loop that tutorials write (per step ``x.requires_grad_()``, ``torch.autograd.grad``,
clip, clamp).

Both sides use the same ``ebmref.nets.IGEBMEnergy`` weights, the same chain starts and batch,
dtype and threads; the images are uniform noise (the cost of an iteration does not depend on
pixel values), so no dataset is needed. Batch 128 on GPU, 16 on CPU by default. The optional
``--compile`` adds a ``torch.compile``d energy (compiled in the warm-up round, not timed).

    python benchmarks/train_step.py --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import fmt, interleaved_medians, machine_info, markdown_table

from ebmref.buffer import ReplayBuffer, UniformNoise
from ebmref.nets import IGEBMEnergy
from ebmref.objectives import contrastive_loss
from ebmref.samplers import langevin

N_STEPS, STEP, NOISE, CLIP, L2 = 60, 10.0, 0.005, 0.01, 1.0


def ebmref_iteration(energy, opt, buffer, x_pos, g):
    x0, _ = buffer.sample(x_pos.shape[0], g)
    x_neg = langevin(energy, x0, N_STEPS, STEP, NOISE, generator=g, grad_clip=CLIP,
                     clamp=(0.0, 1.0)).x
    buffer.push(x_neg, g)
    loss = contrastive_loss(energy(x_pos), energy(x_neg), L2)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def tutorial_iteration(model, opt, store, x_pos, g):
    # Replay buffer as tutorials keep it: a tensor, 5 % fresh noise.
    idx = torch.randint(0, store.shape[0], (x_pos.shape[0],), generator=g, device=x_pos.device)
    x = store[idx]
    fresh = torch.rand(x.shape, generator=g, device=x.device)
    keep = (torch.rand(x.shape[0], generator=g, device=x.device) > 0.05).float()[:, None, None, None]
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
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=None, help="128 on GPU, 16 on CPU")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
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

    def setup(model):
        opt = torch.optim.Adam(model.parameters(), lr=3e-4, betas=(0.0, 0.999))
        return model, opt

    m1, o1 = setup(copy.deepcopy(base))
    buf = ReplayBuffer(10_000, "noise", 0.05, noise_fn=UniformNoise((1, 28, 28), device=dev),
                       device=dev)
    m2, o2 = setup(copy.deepcopy(base))
    store = torch.rand(10_000, 1, 28, 28, device=dev)
    fns = {"ebmref": lambda: ebmref_iteration(m1, o1, buf, x_pos, g),
           "tutorial": lambda: tutorial_iteration(m2, o2, store, x_pos, g)}
    if args.compile:
        m3, o3 = setup(copy.deepcopy(base))
        # energy_and_grad calls self(x) → forward: compile the bound method (no recursion).
        m3.forward = torch.compile(m3.forward)
        buf3 = ReplayBuffer(10_000, "noise", 0.05,
                            noise_fn=UniformNoise((1, 28, 28), device=dev), device=dev)
        fns["ebmref + torch.compile"] = lambda: ebmref_iteration(m3, o3, buf3, x_pos, g)
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
