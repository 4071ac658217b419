"""Measurements of the GPU study (:mod:`mnist.gpu_study`, parts a–c): the device's two ceilings,
the correctness of the device against a float64 CPU reference, and the time of one IGEBM
training iteration against its FLOP floor.

Ceilings (measured, never datasheet values): a large device-to-device copy (GB/s, counting the
bytes read plus the bytes written) and large matrix products in bf16, strict fp32 ("ieee") and
TF32 (TFLOP/s, 2n³ per n×n×n product), each the median of repeated runs on random data after
warm-ups, timed with CUDA events.

FLOP floor of one training iteration of the paper's IGEBM recipe (§6, §8.3; Du & Mordatch 2019):
with F_l the forward FLOPs of layer l for one image — 2·(output elements)·(C_in/groups)·k_h·k_w
for a convolution, 2·out·in for a linear layer (biases and activations not counted) — and
F = Σ_l F_l, a sampler step costs a forward and an input-gradient pass (2F per chain), and the
loss (eq. 3) forwards B data and B negatives and back-propagates both to the weights (forward,
input gradient of every layer but the first, weight gradient: 3F − F_1 per image), so

    FLOPs per iteration = B·T·2F + 2B·(3F − F_1),     B = 128 chains, T = 60 sampler steps.

For the published net (width 64, 28×28 inputs) F ≈ 57.3 MFLOP, so one iteration is ≈ 0.92
TFLOP; the floor is that count over the measured matrix-product ceiling at the precision the
iteration runs in (float32 convolutions run as TF32 under PyTorch's default cuDNN setting).
"""

from __future__ import annotations

import contextlib
import copy
import math
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from unittest import mock

import torch
from torch import Tensor, nn

import ebmref.training
from ebmref.config import SamplerConfig, TrainConfig
from ebmref.energy import Energy
from ebmref.negatives import Negatives
from ebmref.samplers import Transition, langevin, langevin_coefficients, mala
from ebmref.training import TrainState, train_step

# -- timing --------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], device: torch.device, warmup: int,
               repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` calls: CUDA events
    around each call on a GPU, the wall clock (after a synchronisation) on a CPU."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def summary(times: list[float]) -> dict:
    """Median, min and max (s) of repeated timings, and their count."""
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "n": len(times)}


# -- precision settings ---------------------------------------------------------------------


def _read(getter: Callable[[], object]) -> object:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return getter()
    except (RuntimeError, AttributeError) as err:
        return f"unreadable: {str(err).splitlines()[0][:120]}"


def precision_settings() -> dict:
    """How float32 matrix products and convolutions may run on CUDA (TF32 or strict IEEE), in
    both of torch's spellings; a flag torch refuses to read is recorded as unreadable."""
    b = torch.backends
    return {"float32_matmul_precision": _read(torch.get_float32_matmul_precision),
            "matmul_allow_tf32": _read(lambda: b.cuda.matmul.allow_tf32),
            "cudnn_allow_tf32": _read(lambda: b.cudnn.allow_tf32),
            "matmul_fp32_precision": _read(lambda: b.cuda.matmul.fp32_precision),
            "cudnn_conv_fp32_precision": _read(lambda: b.cudnn.conv.fp32_precision)}


@contextlib.contextmanager
def fp32_mode(mode: str | None) -> Iterator[None]:
    """Run float32 matrix products and cuDNN convolutions as ``"tf32"`` or strict ``"ieee"``
    inside the block (``None``: leave the settings as found); restored afterwards.

    Through the ``allow_tf32`` flags, which set matrix products, convolutions and RNNs
    together: writing the per-operator ``fp32_precision`` flags instead leaves torch (2.9 and
    later) in a "mix of the legacy and new APIs" state in which reading the legacy flags, as
    ``torch.compile``'s inductor does, raises. The per-operator flags are used only where
    torch no longer has the legacy ones."""
    if mode is None:
        yield
        return
    if mode not in ("tf32", "ieee"):
        raise ValueError(f"mode: expected 'tf32', 'ieee' or None, got {mode!r}")
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    legacy = hasattr(matmul, "allow_tf32") and hasattr(cudnn, "allow_tf32")
    names = (("allow_tf32", "allow_tf32") if legacy else ("fp32_precision", "fp32_precision"))
    targets = (matmul, cudnn) if legacy else (matmul, cudnn.conv)
    value = (mode == "tf32") if legacy else mode
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy flags' deprecation notice
        saved = [getattr(t, n) for t, n in zip(targets, names)]
        for t, n in zip(targets, names):
            setattr(t, n, value)
        try:
            yield
        finally:
            for t, n, v in zip(targets, names, saved):
                setattr(t, n, v)


# -- ceilings -------------------------------------------------------------------------------


def copy_ceiling(device: torch.device, n_bytes: int, warmup: int = 3, repeats: int = 10
                 ) -> dict:
    """Device-to-device copy of ``n_bytes`` (random float32): GB/s = 2·bytes / median time."""
    n = n_bytes // 4
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    t = summary(time_calls(lambda: dst.copy_(src), device, warmup, repeats))
    return {"bytes_copied": 4 * n, "GB_per_s": 2 * 4 * n / t["median_s"] / 1e9, **t}


def matmul_ceiling(device: torch.device, n: int, dtype: torch.dtype, mode: str | None,
                   warmup: int = 3, repeats: int = 10) -> dict:
    """n×n×n products of random matrices: TFLOP/s = 2n³ / median time."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    out = torch.empty(n, n, device=device, dtype=dtype)
    with fp32_mode(mode):
        t = summary(time_calls(lambda: torch.mm(a, b, out=out), device, warmup, repeats))
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "fp32_mode": mode,
            "TFLOP_per_s": 2 * n**3 / t["median_s"] / 1e12, **t}


def ceilings(device: torch.device, copy_bytes: int, matmul_n: int) -> dict:
    """The copy ceiling and the bf16 / fp32 (strict) / TF32 matrix-product ceilings. A kind the
    device cannot run is recorded with its reason instead of a number."""
    out: dict = {"copy": copy_ceiling(device, copy_bytes)}
    kinds = {"bf16": (torch.bfloat16, None), "fp32": (torch.float32, "ieee"),
             "tf32": (torch.float32, "tf32")}
    for name, (dtype, mode) in kinds.items():
        if device.type != "cuda" and name == "tf32":
            out[name] = {"skipped": "TF32 exists on CUDA devices only"}
            continue
        if device.type == "cuda" and name == "bf16" and not torch.cuda.is_bf16_supported():
            out[name] = {"skipped": "torch.cuda.is_bf16_supported() is False on this device"}
            continue
        try:
            out[name] = matmul_ceiling(device, matmul_n, dtype, mode)
        except RuntimeError as err:
            out[name] = {"skipped": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
    return out


# -- FLOP floor ------------------------------------------------------------------------------


def layer_flops(energy: nn.Module, event_shape: tuple[int, ...]) -> list[dict]:
    """Forward FLOPs of each convolution and linear layer for one input, in call order:
    2·(output elements)·(C_in/groups)·k_h·k_w, or 2·out·in (module docstring)."""
    rows: list[dict] = []

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            k = module.in_channels // module.groups * math.prod(module.kernel_size)
            rows.append({"layer": names[module], "flops": 2 * output.numel() * k})
        else:
            rows.append({"layer": names[module], "flops": 2 * output.numel() * module.in_features})

    names = {m: n for n, m in energy.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    handles = [m.register_forward_hook(hook) for m in names]
    p = next(energy.parameters())
    try:
        with torch.no_grad():
            energy(torch.zeros((1, *event_shape), device=p.device, dtype=p.dtype))
    finally:
        for h in handles:
            h.remove()
    return rows


FLOOR_FORMULA = ("FLOPs per iteration = B·T·2F + 2B·(3F − F_1); F = Σ_l F_l forward FLOPs of one "
                 "image (convolution: 2·out_elements·(C_in/groups)·k_h·k_w; linear: 2·out·in), "
                 "F_1 the first layer's, B chains, T sampler steps")


def iteration_flops(layers: list[dict], batch: int, n_steps: int) -> dict:
    """The FLOP count of one training iteration (:data:`FLOOR_FORMULA`)."""
    f = sum(r["flops"] for r in layers)
    f1 = layers[0]["flops"] if layers else 0
    sampler = batch * n_steps * 2 * f
    loss = 2 * batch * (3 * f - f1)
    return {"formula": FLOOR_FORMULA, "batch": batch, "n_steps": n_steps,
            "forward_flops_per_image": f, "first_layer_flops": f1, "layers": layers,
            "sampler_flops": sampler, "loss_flops": loss, "total_flops": sampler + loss}


def floor_fractions(total_flops: float, median_s: float, ceil: dict) -> dict:
    """For each matrix-product ceiling: floor time (FLOPs / ceiling) and the fraction of the
    floor reached (floor time / measured time; 1 = at the ceiling)."""
    out = {}
    for name in ("tf32", "fp32", "bf16"):
        rate = ceil.get(name, {}).get("TFLOP_per_s")
        if rate:
            floor = total_flops / (rate * 1e12)
            out[name] = {"floor_s": floor, "fraction_of_floor": floor / median_s}
    return out


# -- identical random numbers on both sides -------------------------------------------------


def _shape(size: tuple) -> tuple[int, ...]:
    if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
        return tuple(size[0])
    return tuple(int(s) for s in size)


@contextlib.contextmanager
def host_random(seed: int) -> Iterator[torch.Generator]:
    """Inside the block every ``torch.rand``, ``torch.randn`` and ``torch.randint`` call (the
    library's buffer reads, re-initialisations, Langevin noise and MALA's accept draws) ignores
    its generator and draws from one CPU generator seeded ``seed`` — floats in float64 — then
    casts and moves the draw to the requested dtype and device. A float64 CPU reference and a
    float32 device run inside two such blocks with the same seed therefore see identical random
    numbers (up to the float32 rounding of the draws)."""
    gen = torch.Generator().manual_seed(seed)
    orig = {name: getattr(torch, name) for name in ("rand", "randn", "randint")}

    def floats(name: str):
        def draw(*size, generator=None, dtype=None, device=None, **kwargs):
            size = size or (kwargs.pop("size"),)
            x = orig[name](_shape(size), generator=gen, dtype=torch.float64)
            return x.to(dtype=dtype or torch.get_default_dtype(), device=device or "cpu")
        return draw

    def randint(*args, size=None, generator=None, dtype=None, device=None, **kwargs):
        if size is None:
            *bounds, size = args
        else:
            bounds = list(args)
        low, high = (0, bounds[0]) if len(bounds) == 1 else bounds
        x = orig["randint"](int(low), int(high), _shape((size,)), generator=gen)
        return x.to(dtype=dtype or torch.int64, device=device or "cpu")

    patched = {"rand": floats("rand"), "randn": floats("randn"), "randint": randint}
    try:
        for name, fn in patched.items():
            setattr(torch, name, fn)
        yield gen
    finally:
        for name, fn in orig.items():
            setattr(torch, name, fn)


def rel_err(a: Tensor, ref: Tensor) -> float | None:
    """‖a − ref‖ / ‖ref‖ in float64 on the CPU; ``None`` when either holds a NaN or ±inf (a
    non-finite result never passes)."""
    a, ref = a.detach().double().cpu(), ref.detach().double().cpu()
    if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(ref).all())):
        return None
    den = float(ref.norm())
    return float((a - ref).norm()) / (den if den > 0 else 1.0)


# -- a sampler loop that CUDA graphs can replay ------------------------------------------------


class GraphedLangevin:
    """The Langevin loop of :func:`ebmref.samplers.langevin` (Du's decoupled step, eq. 1's
    variant of §2.3: x ← clamp(x − α·clip(∇ₓE(x)) + σξ)) over static tensors, so that one CUDA
    graph can hold all T steps: the chain starts are copied into ``x``, the T noise draws are
    written into ``noise`` by one in-place call before each replay (the graph holds no random
    number generation), and ``out`` holds the chain ends. Without ``capture`` (a CPU, or a
    device where capture failed) the same loop runs eagerly."""

    def __init__(self, energy: Energy, cfg: SamplerConfig, shape: tuple[int, ...],
                 device: torch.device, dtype: torch.dtype = torch.float32):
        if cfg.kind != "ula" or cfg.transition_every:
            raise ValueError("cfg: the graphed sampler runs plain ULA (no MALA, no transitions)")
        self.energy, self.cfg = energy, cfg
        self.drift, self.noise_std, _ = langevin_coefficients(cfg.step_size, cfg.noise)
        self.x = torch.zeros(shape, device=device, dtype=dtype)
        self.noise = torch.zeros((cfg.n_steps, *shape), device=device, dtype=dtype)
        self.out: Tensor | None = None
        self.graph = None

    def loop(self) -> Tensor:
        x, c = self.x, self.cfg
        for t in range(c.n_steps):
            g = self.energy.grad(x)
            if c.grad_clip is not None:
                g = g.clamp(-c.grad_clip, c.grad_clip)
            x = torch.add(x, g, alpha=-self.drift).add_(self.noise[t], alpha=self.noise_std)
            if c.clamp is not None:
                x = x.clamp(c.clamp[0], c.clamp[1])
        return x

    def capture(self, warmup: int = 3) -> None:
        """Warm up on a side stream (library handles, workspaces, cuDNN plans), then capture the
        loop on that same stream."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self.loop()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=side):  # the stream the warm-up used
            self.out = self.loop()

    def run(self, x0: Tensor, noise: Tensor | None = None,
            generator: torch.Generator | None = None) -> Tensor:
        """Chain ends from ``x0``: with the given ``noise`` (T, B, ...), else fresh N(0, 1)."""
        self.x.copy_(x0)
        if noise is not None:
            self.noise.copy_(noise)
        else:
            self.noise.normal_(generator=generator)
        if self.graph is not None:
            self.graph.replay()
            return self.out.clone()
        return self.loop().detach()


@contextlib.contextmanager
def graphed_negatives(graphed: GraphedLangevin) -> Iterator[None]:
    """Inside the block :func:`ebmref.training.train_step` draws its negatives with
    ``graphed`` whenever the update is plain ULA without the KL loss on the graphed batch
    shape; any other update keeps the library's sampler."""
    original = ebmref.training.sample_negatives

    def sample(energy, x0, sampler, kl=None, *, generator, transition=None):
        plain = (energy is graphed.energy and sampler == graphed.cfg and x0.shape ==
                 graphed.x.shape and not (kl is not None and kl.enabled))
        if not plain:
            return original(energy, x0, sampler, kl, generator=generator, transition=transition)
        return Negatives(graphed.run(x0, generator=generator))

    with mock.patch.object(ebmref.training, "sample_negatives", sample):
        yield


# -- correctness: device against a float64 CPU reference ---------------------------------------

TOLERANCES = {
    "ula": {"x_end": 1e-3, "drift": 1e-2, "energy_at_start": 1e-3, "grad_at_start": 1e-3},
    "mala": {"x_end_agreeing_chains": 1e-3},
    "train_step": {"x_neg": 1e-2, "weight_grad": 5e-2, "loss": 1e-2},
}
"""Largest relative errors ‖device − reference‖/‖reference‖ that pass, for a strict float32
device run against float64. One float32 operation errs by ~1e-7; on a CPU, float32 against
float64 gave 2e-5 on the drift of 60 Langevin steps and 1.4e-3 on the weight gradient of one
update (the contrastive loss E(x⁺) − E(x⁻) cancels), so these bounds leave about a factor of
ten for other summation orders and convolution algorithms. TF32 rounds products to 10 bits
(~5e-4), so a run at the device's default precision is reported and fails only on a NaN or
±inf."""

MALA_SPREAD = 10.0
"""MALA runs on the energy scaled so that E has standard deviation 10 over the chain starts: an
untrained net is so flat that every proposal would be accepted and the Metropolis test would
go unchecked."""


def _on(energy: Energy, device: torch.device | str, dtype: torch.dtype) -> Energy:
    return copy.deepcopy(energy).to(device=device, dtype=dtype)


def mode_name(mode: str | None) -> str:
    return {None: "default", "ieee": "strict_fp32", "tf32": "tf32"}[mode]


def _compare(device: dict, reference: dict) -> dict:
    return {k: rel_err(device[k], reference[k]) for k in reference}


def _ula_outputs(energy: Energy, x: Tensor, cfg: SamplerConfig, seed: int) -> dict:
    with host_random(seed):
        xt = langevin(energy, x, cfg.n_steps, cfg.step_size, cfg.noise, grad_clip=cfg.grad_clip,
                      clamp=cfg.clamp, check_finite=False).x
    with host_random(seed):  # the same draws again: Σξ, to take the noise out of x_T − x_0
        noise_sum = sum(torch.randn(x.shape, dtype=torch.float64) for _ in range(cfg.n_steps))
    e0, g0 = energy.energy_and_grad(x)
    drift = xt.double().cpu() - x.double().cpu() - (cfg.noise or 0.0) * noise_sum
    return {"x_end": xt, "drift": drift, "energy_at_start": e0, "grad_at_start": g0}


def check_ula(energy: Energy, x0: Tensor, cfg: SamplerConfig, device: torch.device,
              dtype: torch.dtype, seed: int, modes: tuple[str | None, ...]) -> dict:
    """Du's Langevin chains (§2.3, the decoupled step) on the device, in each precision
    ``mode``, against float64 on the CPU: same weights, starts and noise. Relative errors of
    the chain ends, of their drift part x_T − x_0 − σΣξ (the shared noise cancels, leaving the
    gradient steps, clipping and clamping) and of E and ∇ₓE at the starts."""
    ref = _ula_outputs(_on(energy, "cpu", torch.float64), x0.double(), cfg, seed)
    out: dict = {"n_chains": int(x0.shape[0]), "n_steps": cfg.n_steps}
    for mode in modes:
        with fp32_mode(mode):
            dev = _ula_outputs(_on(energy, device, dtype), x0.to(device, dtype), cfg, seed)
        out[mode_name(mode)] = _compare(dev, ref)
    return out


def sharpened(energy: Energy, x0: Tensor, spread: float = MALA_SPREAD) -> tuple[Energy, float]:
    """A copy of ``energy`` whose output layer (its last linear layer) is scaled by k so that
    E has standard deviation ``spread`` over ``x0``; returns it and k."""
    e = copy.deepcopy(energy)
    last = [m for m in e.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        k = spread / max(float(e.double()(x0.double()).std()), 1e-30)
        last.weight.mul_(k)
        last.bias.mul_(k)
    return e.float(), k


def check_mala(energy: Energy, x0: Tensor, n_steps: int, step_size: float,
               device: torch.device, dtype: torch.dtype, seed: int,
               modes: tuple[str | None, ...]) -> dict:
    """MALA (eq. 1's proposal and the Metropolis test, §2.3.2) on the device against float64 on
    the CPU with the same proposal noise and accept draws, on the energy scaled to a spread of
    :data:`MALA_SPREAD`. An accept decision flips when log u lies within rounding of the log
    acceptance ratio; such chains are counted and the error is also given over the others."""
    energy, k = sharpened(energy, x0)
    with host_random(seed):
        ref = mala(_on(energy, "cpu", torch.float64), x0.double(), n_steps, step_size,
                   check_finite=False)
    out: dict = {"n_chains": int(x0.shape[0]), "n_steps": n_steps, "step_size": step_size,
                 "energy_scale": k, "acceptance_reference": float(ref.acceptance.mean())}
    for mode in modes:
        with fp32_mode(mode), host_random(seed):
            dev = mala(_on(energy, device, dtype), x0.to(device, dtype), n_steps, step_size,
                       check_finite=False)
        same = (dev.acceptance.double().cpu() - ref.acceptance).abs() < 0.5 / n_steps
        out[mode_name(mode)] = {
            "x_end": rel_err(dev.x, ref.x),
            "x_end_agreeing_chains": rel_err(dev.x.cpu()[same], ref.x[same]) if bool(same.any())
            else None,
            "chains_with_flipped_decisions": int((~same).sum()),
            "acceptance": float(dev.acceptance.mean())}
    return out


def _step_outputs(energy: Energy, cfg: TrainConfig, x_pos: Tensor, seed: int) -> dict:
    device = cfg.run.resolved_device()
    dtype = torch.float64 if cfg.run.dtype == "float64" else torch.float32
    e = _on(energy, device, dtype).train()
    before = [p.detach().double().cpu().clone() for p in e.parameters()]
    state = TrainState.create(e, cfg)
    with host_random(seed):
        out = train_step(state, x_pos.to(device, dtype))
    return {"x_neg": out.x_neg,
            "weight_grad": torch.cat([p.grad.detach().double().cpu().flatten()
                                      for p in e.parameters()]),
            "param_update": torch.cat([(p.detach().double().cpu() - b).flatten()
                                       for p, b in zip(e.parameters(), before)]),
            **{k: torch.tensor(out.stats[k], dtype=torch.float64)
               for k in ("loss", "energy_data", "energy_samples", "grad_norm")}}


def check_train_step(energy: Energy, cfg_device: TrainConfig, cfg_reference: TrainConfig,
                     x_pos: Tensor, seed: int,
                     modes: tuple[str | None, ...]) -> dict:
    """One :func:`ebmref.training.train_step` (the update of §3 with the replay buffer of
    §5.1.1) on the device, in each precision ``mode``, against float64 on the CPU: same initial
    weights, data batch and random numbers (buffer fill and reads, re-initialisation and
    Langevin noise, :func:`host_random`). Relative errors of the negatives, the weight
    gradients (after clipping), the Adam step's parameter change (β₁ = 0: its first step is
    about lr·sign(∇), so weights with a near-zero gradient can flip; reported, not judged) and
    the logged statistics."""
    ref = _step_outputs(energy, cfg_reference, x_pos, seed)
    out: dict = {"batch": int(x_pos.shape[0]), "n_steps": cfg_device.sampler.n_steps,
                 "reference_stats": {k: float(ref[k]) for k in ("loss", "energy_data",
                                                                  "energy_samples", "grad_norm")}}
    for mode in modes:
        with fp32_mode(mode):
            dev = _step_outputs(energy, cfg_device, x_pos, seed)
        out[mode_name(mode)] = _compare(dev, ref)
    return out


def judge(results: dict, mode: str, strict: bool) -> list[str]:
    """The failures of one precision mode: a non-finite result always, an error above
    :data:`TOLERANCES` when ``strict``."""
    failures = []
    for check, tolerances in TOLERANCES.items():
        errors = results[check][mode]
        for key, value in errors.items():
            if value is None and key != "x_end_agreeing_chains":
                failures.append(f"{check} {key} ({mode}): not finite")
        for key, tol in tolerances.items():
            value = errors.get(key)
            if value is None and key == "x_end_agreeing_chains":
                failures.append(f"{check} {key} ({mode}): every chain flipped a decision")
            elif strict and value is not None and value > tol:
                failures.append(f"{check} {key} ({mode}): relative error {value:.2e} > {tol:.0e}")
    return failures


# -- one training iteration, three ways --------------------------------------------------------

StateFactory = Callable[[], TrainState]
RECOVERABLE = (RuntimeError, ValueError, TypeError, LookupError, AttributeError, AssertionError,
               NotImplementedError, ImportError, OSError)
"""What a compiler, a graph capture or a CUDA call raises when a variant cannot run (dynamo's
and inductor's errors, CUDA errors and out-of-memory are RuntimeErrors): recorded as the
variant's result. Anything else stops the study."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def time_eager(make_state: StateFactory, x_pos: Tensor, device: torch.device, warmup: int,
               repeats: int) -> dict:
    """:func:`ebmref.training.train_step` as the library runs it."""
    state = make_state()
    return summary(time_calls(lambda: train_step(state, x_pos), device, warmup, repeats))


def time_compiled(make_state: StateFactory, x_pos: Tensor, device: torch.device, warmup: int,
                  repeats: int, backend: str) -> dict:
    """The same update with the energy's forward compiled (``torch.compile``, so every sampler
    step's forward and input-gradient backward and the loss run compiled kernels). The first
    call, which compiles, is timed apart; a compilation failure is recorded, not raised."""
    state = make_state()
    try:
        state.energy.forward = torch.compile(state.energy.forward, backend=backend)
        t0 = time.perf_counter()
        train_step(state, x_pos)
        sync(device)
        first = time.perf_counter() - t0
        times = time_calls(lambda: train_step(state, x_pos), device, warmup, repeats)
    except RECOVERABLE as err:  # a compiler failure is a result to report
        return {"failed": _first_line(err), "backend": backend}
    return {"backend": backend, "first_call_s": first, **summary(times)}


GRAPH_TOLERANCE = 1e-4
"""The replayed loop runs the library sampler's kernels on the same numbers: anything above
float32 rounding flags the graphs variant as disagreeing (its time is then not comparable)."""


def _graph_agrees(graphed: GraphedLangevin, energy: Energy, device: torch.device,
                  seed: int) -> float | None:
    """Relative error of the graphed loop against :func:`ebmref.samplers.langevin` from the
    same starts with the same noise (the T draws of one CPU generator)."""
    c, shape = graphed.cfg, tuple(graphed.x.shape)
    x0 = torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed + 1)
    noise = torch.stack([torch.randn(shape, generator=gen, dtype=torch.float64)
                         for _ in range(c.n_steps)])
    with host_random(seed + 1):
        ref = langevin(energy, x0.to(device, graphed.x.dtype), c.n_steps, c.step_size, c.noise,
                       grad_clip=c.grad_clip, clamp=c.clamp, check_finite=False).x
    got = graphed.run(x0.to(device, graphed.x.dtype), noise=noise.to(device, graphed.x.dtype))
    return rel_err(got, ref)


def time_graphed(make_state: StateFactory, x_pos: Tensor, device: torch.device, warmup: int,
                 repeats: int, seed: int) -> dict:
    """The update with its T Langevin steps replayed from one CUDA graph
    (:class:`GraphedLangevin`, :func:`graphed_negatives`); the buffer read, the loss and Adam
    stay eager. The replay is checked against the library's sampler (same starts and noise)
    after the warm-up updates, so it is checked on weights that changed after the capture.
    Without CUDA the same static loop runs uncaptured, and the record says so."""
    state = make_state()
    shape = (state.config.run.batch_size, *x_pos.shape[1:])
    graphed = GraphedLangevin(state.energy, state.config.sampler, shape, device, x_pos.dtype)
    out: dict = {"graph_replayed": False}
    if device.type != "cuda":
        out["capture"] = ("not attempted: CUDA graphs need a CUDA device (CPU dry run); the "
                          "static-tensor loop ran uncaptured")
    else:
        try:
            graphed.capture()
            out.update(graph_replayed=True, capture="captured: T sampler steps in one graph")
        except RECOVERABLE as err:  # why capture failed is the result
            return {"graph_replayed": False, "capture": f"failed: {_first_line(err)}"}
    try:
        with graphed_negatives(graphed):
            for _ in range(warmup):
                train_step(state, x_pos)
            err = _graph_agrees(graphed, state.energy, device, seed)
            out.update(rel_err_vs_library_sampler=err,
                       agrees=err is not None and err <= GRAPH_TOLERANCE)
            times = time_calls(lambda: train_step(state, x_pos), device, 0, repeats)
    except RECOVERABLE as err:  # reported with the capture status
        return {**out, "failed": _first_line(err)}
    return {**out, **summary(times)}


def time_update(state: TrainState, x_pos: Tensor, pool: Tensor | None,
                transition: Transition | None,
                device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of one eager update of a preset (for sizing the §6 parts)."""
    times = time_calls(lambda: train_step(state, x_pos, pool=pool, transition=transition),
                       device, warmup, repeats)
    return statistics.median(times)


def time_chain_step(energy: Energy, n_chains: int, n_steps: int, device: torch.device,
                    seed: int) -> float:
    """Median seconds of one step of ``n_chains`` long-run chains (``mnist.sample``'s sampler:
    IGEBM's step, no weight gradients)."""
    e = copy.deepcopy(energy).to(device).eval()
    for p in e.parameters():
        p.requires_grad_(False)
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.rand((n_chains, *e.event_shape), device=device, generator=g)
    c = SamplerConfig()
    times = time_calls(lambda: langevin(e, x, n_steps, c.step_size, c.noise, generator=g,
                                        grad_clip=c.grad_clip, clamp=c.clamp), device, 1, 2)
    return statistics.median(times) / n_steps
