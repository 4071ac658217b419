"""Long Langevin chains on a trained MNIST energy (paper §6, Figures 3–5):
``python -m mnist.sample --run RUN_DIR --out DIR --init noise --sampler.n-steps 20000``.

Chains use the library samplers (:func:`ebmref.samplers.langevin`, by default Du's decoupled
step x ← clamp(x − α·clip(∇ₓE) + σξ, 0, 1), or :func:`ebmref.samplers.mala`) from uniform noise
or from held-out digits (``--init heldout``: chain j starts on a digit j mod 10), at any noise
level σ, optionally with an elastic deformation every ``sampler.transition_every`` steps (§6.3;
batched on the chains' device, :class:`ebmref.transitions.GridElasticDeform`). Every
``record_every`` steps a frame is kept. Writes ``chains.pt`` (:mod:`mnist.runs`), ``strip.png``
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
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from torchvision.utils import save_image
from tqdm.auto import tqdm

from ebmref.cli import (
    ArgumentParser,
    add_config_arguments,
    add_debug_argument,
    guarded,
    overrides_from_args,
)
from ebmref.config import SamplerConfig, with_overrides
from ebmref.energy import Energy
from ebmref.files import atomic_write, check_output_dir
from ebmref.samplers import langevin, mala
from ebmref.training import CHECKPOINT_NAME
from ebmref.transitions import GridElasticDeform
from ebmref.validation import check_choice, check_int_range
from mnist.data import MNISTData, add_data_arguments, data_from_args
from mnist.evaluate import Evaluator, evaluate_sample_dir, summary_row
from mnist.runs import load_trained, save_chains

INITS = ("noise", "heldout")


@dataclass
class ChainConfig:
    """How to run the chains. Defaults: the paper's test-time sampler (step 10, noise 0.005,
    gradient clip 0.01, clamp [0, 1]) for 20,000 steps, from uniform noise.

    init: ``"noise"`` (uniform in [0, 1]) or ``"heldout"`` (held-out digits, chain j on a digit
    j mod 10). sampler: :class:`ebmref.config.SamplerConfig`; ``sampler.transition_every``
    applies an elastic deformation (``elastic_sigma``, ``elastic_points``) every N steps.
    """

    init: str = "noise"
    n_chains: int = 64
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(n_steps=20_000))
    elastic_sigma: float = 1.0
    elastic_points: int = 3
    record_every: int = 100
    seed: int = 0
    device: str = "auto"
    bf16: bool = False

    def __post_init__(self):
        check_choice(self.init, "init", INITS)
        check_int_range(self.n_chains, "n_chains", 1)
        self.sampler.validate()
        check_int_range(self.record_every, "record_every", 1, self.sampler.n_steps)
        if self.sampler.n_steps % self.record_every:
            raise ValueError(f"record_every: must divide sampler.n_steps="
                             f"{self.sampler.n_steps}, got {self.record_every}")
        check_int_range(self.seed, "seed", 0)

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


CHAIN_ALIASES = {"sampler.n_steps": ["--n_steps", "--n-steps"],
                 "sampler.step_size": ["--step_size", "--step-size"],
                 "sampler.noise": ["--noise"], "sampler.grad_clip": ["--grad_clip", "--grad-clip"],
                 "sampler.clamp": ["--clamp"],
                 "sampler.transition_every": ["--elastic_every", "--elastic-every"],
                 **{k: [f"--{k}"] for k in ("n_chains", "elastic_sigma", "elastic_points",
                                           "record_every")}}
"""Spellings of earlier versions."""


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


def _chunk(cfg: ChainConfig) -> int:
    """Steps per sampler call: a multiple of the recording and transition periods (so the
    chained calls draw the same random numbers and apply the same moves as one call), about
    1 % of the run, for the progress bar."""
    period = math.lcm(cfg.record_every, cfg.sampler.transition_every or 1)
    n = cfg.sampler.n_steps
    return min(n, max(period, period * (n // (100 * period))))


def run_chains(energy: Energy, cfg: ChainConfig, data: MNISTData, progress: bool = False
               ) -> tuple[Tensor, Tensor | None]:
    """Frames (T = n_steps/record_every + 1, B, 1, 28, 28) including the starts, and the start
    labels for data-initialised chains. ``progress``: a bar on stderr."""
    device = cfg.resolved_device()
    energy = energy.to(device).eval()
    for p in energy.parameters():
        p.requires_grad_(False)  # only ∇ₓE is needed: no parameter-gradient work
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    x, labels = chain_starts(cfg, data, g, device)
    s = cfg.sampler
    transition = (GridElasticDeform(cfg.elastic_sigma, cfg.elastic_points)
                  if s.transition_every and s.kind == "ula" else None)
    autocast = (torch.autocast(device_type="cuda", dtype=torch.bfloat16)
                if cfg.bf16 and device.type == "cuda" else contextlib.nullcontext())
    frames, done, chunk = [x], 0, _chunk(cfg)
    bar = tqdm(total=s.n_steps, desc="sampling", unit="step", disable=not progress)
    with autocast:
        while done < s.n_steps:
            k = min(chunk, s.n_steps - done)
            if s.kind == "mala":
                out = mala(energy, x, k, s.step_size, generator=g, record_every=cfg.record_every)
            else:
                out = langevin(energy, x, k, s.step_size, s.noise, generator=g,
                               grad_clip=s.grad_clip, clamp=s.clamp, transition=transition,
                               transition_every=s.transition_every,
                               record_every=cfg.record_every)
            x, done = out.x, done + k
            frames.extend(out.trajectory[1:])
            bar.update(k)
    bar.close()
    return torch.stack(frames).float(), labels


def save_strip(trajectory: Tensor, path: Path, n_rows: int = 8, n_cols: int = 10) -> Path:
    """Rows = the first ``n_rows`` chains, columns = ``n_cols`` evenly spaced frames."""
    t = trajectory.shape[0]
    cols = torch.linspace(0, t - 1, min(n_cols, t)).round().long()
    rows = min(n_rows, trajectory.shape[1])
    tiles = trajectory[cols][:, :rows].transpose(0, 1).reshape(-1, *trajectory.shape[2:])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: save_image(tiles.float().clamp(0, 1), f, format="png",
                                            nrow=len(cols), padding=2, pad_value=1.0))
    return path


def sample_run(run_dir: str | Path, out_dir: str | Path, cfg: ChainConfig, data: MNISTData,
               evaluator: Evaluator | None = None, energy: Energy | None = None,
               model_step: int | None = None, progress: bool = False) -> dict:
    """Run chains on a trained run, save frames/strips and (with an evaluator) metrics.
    ``energy``/``model_step``: an already loaded model of ``run_dir`` and its update count."""
    if energy is None:
        energy, info = load_trained(run_dir, cfg.resolved_device())
        model_step = info["step"]
    t0 = time.perf_counter()
    traj, labels = run_chains(energy, cfg, data, progress=progress)
    seconds = time.perf_counter() - t0
    out = Path(out_dir)
    meta = {**dataclasses.asdict(cfg), "run": str(run_dir), "model_step": model_step,
            "data_source": data.source, "resolved_device": str(cfg.resolved_device()),
            "sampling_seconds": seconds}
    save_chains(out, traj, meta, labels)
    save_strip(traj, out / "strip.png")
    atomic_write(out / "final.png", lambda f: save_image(traj[-1][:64].clamp(0, 1), f,
                                                         format="png", nrow=8, padding=2,
                                                         pad_value=1.0))
    if evaluator is None:
        return {"sampling": meta}
    return evaluate_sample_dir(evaluator, out, energy)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m mnist.sample", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="mnist.train run directory")
    parser.add_argument("--out", required=True, help="output directory for this set of chains")
    parser.add_argument("--no-metrics", action="store_true", help="skip the classifier metrics")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_debug_argument(parser)
    add_data_arguments(parser)
    add_config_arguments(parser, ChainConfig, aliases=CHAIN_ALIASES,
                         title="chains (mnist.sample.ChainConfig)")
    args = parser.parse_args(argv)
    return guarded(parser.prog, lambda: _run(args), debug=args.debug,
                   configs=((ChainConfig, ""),))


def _run(args: argparse.Namespace) -> int:
    cfg = with_overrides(ChainConfig(), overrides_from_args(args))
    if args.threads is not None:
        check_int_range(args.threads, "--threads", 1)
        torch.set_num_threads(args.threads)
    check_output_dir(args.out, "--out")
    if not (Path(args.run) / "run.json").is_file() or not (
            Path(args.run) / CHECKPOINT_NAME).is_file():
        raise FileNotFoundError(f"--run: {args.run} is not a trained mnist.train run directory "
                                "(run.json and checkpoint.pt)")
    heldout = data_from_args(args, "heldout")
    evaluator = None
    if not args.no_metrics:
        print("[1/2] classifier (trained once, then cached)", file=sys.stderr, flush=True)
        evaluator = Evaluator(data_from_args(args, "train"), heldout)
    print(f"[{2 - args.no_metrics}/{2 - args.no_metrics}] sampling {cfg.n_chains} chains for "
          f"{cfg.sampler.n_steps} steps", file=sys.stderr, flush=True)
    m = sample_run(args.run, args.out, cfg, heldout, evaluator, progress=True)
    print(json.dumps(summary_row(m) if evaluator else m))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
