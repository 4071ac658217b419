"""Memory and time of the KL loss against the number k of differentiated sampler steps (§5.4.2).

x̃ = ``negatives.sample_negatives(...).x_diff`` (the training loop's KL chains) keeps the graph
of the last k
Langevin steps (create_graph=True), then ``kl_loss(energy, x̃)`` and ``backward()``. What must
be held for the backward pass grows linearly in k; Du et al. (2020) use k = 1.

Memory measure: on CUDA the allocator's peak (``torch.cuda.max_memory_allocated``) over forward
and backward; on CPU, where torch has no allocator statistics, the bytes of distinct storages
that autograd holds for the backward pass just before ``backward()`` (recorded with
``torch.autograd.graph.saved_tensors_hooks``), the part of the peak that grows with k
(activations and double-backward buffers of every differentiated step).

    python -m benchmarks.kl_memory                    # IGEBM CNN, 32 chains (Du's KL subset)
    python -m benchmarks.kl_memory --ks 1 2 4 --chains 8
"""

from __future__ import annotations

import gc
import time
import weakref

import torch

from benchmarks._common import fmt, machine_info, markdown_table, sync
from ebmref.cli import ArgumentParser
from ebmref.config import KLConfig, SamplerConfig
from ebmref.negatives import sample_negatives
from ebmref.nets import IGEBMEnergy, MLPEnergy
from ebmref.objectives import kl_loss


class SavedBytes:
    """Bytes of the distinct storages that autograd holds for backward *at measurement time*.

    The pack hook keeps a weak reference to every saved tensor; graphs of the detached sampler
    steps are freed after their ∇ₓE, so their tensors die and are not counted. Measured just
    before ``backward()``, this is what the retained graph of the k differentiated steps (and
    the loss) holds.
    """

    def __init__(self):
        self.refs: list[weakref.ref] = []

    def pack(self, t: torch.Tensor):
        self.refs.append(weakref.ref(t))
        return t

    @staticmethod
    def unpack(t):
        return t

    def alive_bytes(self) -> int:
        seen: dict[int, int] = {}
        for r in self.refs:
            t = r()
            if t is None:
                continue
            try:
                st = t.untyped_storage()
            except (RuntimeError, NotImplementedError):  # tensors without storage
                continue
            seen.setdefault(st.data_ptr(), st.nbytes())
        return sum(seen.values())


def one(energy, x0, n_steps, k, step, noise, device):
    g = torch.Generator(device=device).manual_seed(0)
    meter = SavedBytes()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    sync(device)
    t0 = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
        sampler = SamplerConfig(n_steps=n_steps, step_size=step, noise=noise,
                                grad_clip=0.01 if noise is not None else None,
                                clamp=(0.0, 1.0) if noise is not None else None)
        x_diff = sample_negatives(energy, x0, sampler, KLConfig(weight=1.0,
                                                                differentiable_steps=k),
                                  generator=g).x_diff
        loss = kl_loss(energy, x_diff)
    gc.collect()
    saved = meter.alive_bytes()
    loss.backward()
    sync(device)
    dt = time.perf_counter() - t0
    energy.zero_grad(set_to_none=True)
    peak = (torch.cuda.max_memory_allocated() - base) if device.startswith("cuda") else None
    return saved, peak, dt


def main(argv=None):
    p = ArgumentParser(prog="python -m benchmarks.kl_memory",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["igebm", "mlp"], default="igebm",
                   help="IGEBM CNN on 28×28 images (Du's sampler) or a 2-D MLP (eq. 1)")
    p.add_argument("--chains", type=int, default=32, help="differentiated chains (Du: 32)")
    p.add_argument("--n-steps", type=int, default=60, help="sampler steps per chain run")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 5, 10, 20],
                   help="numbers k of differentiated (last) sampler steps")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = args.device
    if args.model == "igebm":
        energy = IGEBMEnergy().to(dev)
        x0 = torch.rand(args.chains, 1, 28, 28, device=dev)
        step, noise = 10.0, 0.005  # IGEBM's MNIST sampler
    else:
        energy = MLPEnergy(2).to(dev)
        x0 = torch.randn(args.chains, 2, device=dev)
        step, noise = 0.01, None
    one(energy, x0, min(args.n_steps, 3), 1, step, noise, dev)  # warm-up
    rows, results = [], []
    for k in args.ks:
        saved, peak, dt = one(energy, x0, args.n_steps, k, step, noise, dev)
        results.append((k, saved, peak, dt))
    base_saved = results[0][1]
    for k, saved, peak, dt in results:
        rows.append([str(k), fmt(saved / 2**20), fmt(saved / base_saved),
                     fmt(peak / 2**20) if peak is not None else "–", fmt(dt)])
    print(f"## KL loss memory against differentiated steps k ({args.model}, {args.chains} chains, "
          f"{args.n_steps} sampler steps, {dev})\n")
    print(f"Machine: {machine_info(dev)}\n")
    print(markdown_table(["k", "saved for backward (MiB)", "÷ k=1", "CUDA peak (MiB)",
                          "time forward+backward (s)"], rows))
    if len(results) > 1:
        (k0, s0, _, _), (k1, s1, _, _) = results[0], results[-1]
        print(f"\n- growth: {(s1 - s0) / (k1 - k0) / 2**20:.3g} MiB per differentiated step "
              f"(linear in k; k = 1 is Du et al.'s choice)")


if __name__ == "__main__":
    main()
