"""Long Langevin chains on a trained MNIST energy (paper §6, Figures 3–5):
``python -m mnist.sample --run RUN_DIR --out DIR --init noise --n_steps 20000``.

Chains use the library sampler (:func:`ebmref.samplers.langevin`, Du's decoupled step
x ← clamp(x − α·clip(∇ₓE) + σξ, 0, 1)) from uniform noise or from held-out digits (chain j
starts on a digit j mod 10), at any noise level σ, optionally with an elastic deformation every
``elastic_every`` steps (§6.3; batched on the chains' device, :class:`ebmref.transitions.GridElasticDeform`). Every
``record_every`` steps a frame is kept. Writes ``chains.pt`` (frames, float16), ``strip.png``
(rows = chains, columns = evenly spaced frames, like the paper's figures), ``final.png`` and
``metrics.json`` (:mod:`mnist.evaluate`).

On a GPU the loop has no host synchronisation: noise, deformation and clamping stay on the
device and frames are kept as device tensors until the end.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torchvision.utils import save_image

from ebmref.energy import Energy
from ebmref.samplers import langevin
from ebmref.transitions import GridElasticDeform
from ebmref.validation import check_choice, check_int_range, check_nonnegative, check_positive
from mnist.data import MNISTData, add_data_arguments, data_from_args
from mnist.evaluate import Evaluator, evaluate_sample_dir, save_chains, summary_row
from mnist.presets import add_dataclass_arguments, overrides_from_args

INITS = ("noise", "data")


@dataclass
class ChainConfig:
    """How to run the chains. Defaults: the paper's test-time sampler (step 10, noise 0.005,
    gradient clip 0.01, clamp [0, 1]) for 20,000 steps."""

    init: str = "noise"
    n_chains: int = 64
    n_steps: int = 20_000
    step_size: float = 10.0
    noise: float | None = 0.005
    grad_clip: float | None = 0.01
    clamp: tuple[float, float] | None = (0.0, 1.0)
    elastic_every: int = 0
    elastic_sigma: float = 1.0
    elastic_points: int = 3
    record_every: int = 100
    seed: int = 0
    device: str = "auto"
    bf16: bool = False

    def __post_init__(self):
        check_choice(self.init, "init", INITS)
        check_int_range(self.n_chains, "n_chains", 1)
        check_int_range(self.n_steps, "n_steps", 1)
        check_positive(self.step_size, "step_size")
        if self.noise is not None:
            check_nonnegative(self.noise, "noise")
        check_int_range(self.elastic_every, "elastic_every", 0, self.n_steps)
        check_int_range(self.record_every, "record_every", 1, self.n_steps)
        if self.n_steps % self.record_every:
            raise ValueError(f"record_every: must divide n_steps={self.n_steps}, "
                             f"got {self.record_every}")
        check_int_range(self.seed, "seed", 0)

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


def chain_starts(cfg: ChainConfig, data: MNISTData, generator: torch.Generator,
                 device) -> tuple[Tensor, Tensor | None]:
    """Uniform noise in [0, 1], or held-out digits with chain j on digit j mod 10."""
    if cfg.init == "noise":
        x0 = torch.rand((cfg.n_chains, 1, 28, 28), generator=generator, device=generator.device)
        return x0.to(device), None
    picks = []
    for j in range(cfg.n_chains):
        pool = torch.nonzero(data.labels == j % 10).flatten()
        k = int(torch.randint(0, len(pool), (1,), generator=torch.Generator().manual_seed(
            cfg.seed * 100_003 + j)))
        picks.append(int(pool[k]))
    idx = torch.tensor(picks)
    return data.images[idx].to(device), data.labels[idx]


def run_chains(energy: Energy, cfg: ChainConfig, data: MNISTData
               ) -> tuple[Tensor, Tensor | None]:
    """Frames (T = n_steps/record_every + 1, B, 1, 28, 28) including the starts, and the start
    labels for data-initialised chains."""
    device = cfg.resolved_device()
    energy = energy.to(device).eval()
    for p in energy.parameters():
        p.requires_grad_(False)  # only ∇ₓE is needed: no parameter-gradient work
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    x0, labels = chain_starts(cfg, data, g, device)
    transition = (GridElasticDeform(cfg.elastic_sigma, cfg.elastic_points)
                  if cfg.elastic_every else None)
    autocast = (torch.autocast(device_type="cuda", dtype=torch.bfloat16)
                if cfg.bf16 and device.type == "cuda" else contextlib.nullcontext())
    with autocast:
        out = langevin(energy, x0, cfg.n_steps, cfg.step_size, cfg.noise, generator=g,
                       grad_clip=cfg.grad_clip, clamp=cfg.clamp, transition=transition,
                       transition_every=cfg.elastic_every, record_every=cfg.record_every)
    return out.trajectory.float(), labels


def save_strip(trajectory: Tensor, path: Path, n_rows: int = 8, n_cols: int = 10) -> Path:
    """Rows = the first ``n_rows`` chains, columns = ``n_cols`` evenly spaced frames."""
    t = trajectory.shape[0]
    cols = torch.linspace(0, t - 1, min(n_cols, t)).round().long()
    rows = min(n_rows, trajectory.shape[1])
    tiles = trajectory[cols][:, :rows].transpose(0, 1).reshape(-1, *trajectory.shape[2:])
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(tiles.float().clamp(0, 1), path, nrow=len(cols), padding=2, pad_value=1.0)
    return path


def sample_run(run_dir: str | Path, out_dir: str | Path, cfg: ChainConfig, data: MNISTData,
               evaluator: Evaluator | None = None, energy: Energy | None = None,
               model_step: int | None = None) -> dict:
    """Run chains on a trained run, save frames/strips and (with an evaluator) metrics.
    ``energy``/``model_step``: an already loaded model of ``run_dir`` and its update count."""
    from mnist.train import load_trained

    if energy is None:
        energy, info = load_trained(run_dir, cfg.resolved_device())
        model_step = info["step"]
    t0 = time.perf_counter()
    traj, labels = run_chains(energy, cfg, data)
    seconds = time.perf_counter() - t0
    out = Path(out_dir)
    meta = {**dataclasses.asdict(cfg), "run": str(run_dir), "model_step": model_step,
            "data_source": data.source, "resolved_device": str(cfg.resolved_device()),
            "sampling_seconds": seconds}
    save_chains(out, traj, meta, labels)
    save_strip(traj, out / "strip.png")
    save_image(traj[-1][:64].clamp(0, 1), out / "final.png", nrow=8, padding=2, pad_value=1.0)
    if evaluator is None:
        return {"sampling": meta}
    return evaluate_sample_dir(evaluator, out, energy)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mnist.sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="mnist.train run directory")
    parser.add_argument("--out", required=True, help="output directory for this set of chains")
    parser.add_argument("--no-metrics", action="store_true", help="skip the classifier metrics")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_data_arguments(parser)
    add_dataclass_arguments(parser, ChainConfig, "chains (mnist.sample.ChainConfig)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = ChainConfig(**overrides_from_args(args))
    heldout = data_from_args(args, "heldout")
    evaluator = None
    if not args.no_metrics:
        evaluator = Evaluator(data_from_args(args, "train"), heldout)
    m = sample_run(args.run, args.out, cfg, heldout, evaluator)
    print(json.dumps(summary_row(m) if evaluator else m))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
