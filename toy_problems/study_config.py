"""The claims study's configuration and its pre-registered comparisons.

Everything that decides a verdict is fixed here before any model is trained, and written to
``config.json`` at the start of a run: the training procedure (grid, patience, cap, seeds), the
metric of each claim, the two arms of each comparison, the predicted direction, the
non-inferiority or equivalence margins, α and the number of seeds n.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ebmref.validation import check_int_range, check_positive, check_probability
from toy_problems.methods import METHODS
from toy_problems.targets import TARGETS

DU_TEMPERATURE = 0.005**2 / (2 * 0.01)  # Du's σ = 0.005 at α = λ/2 = 0.01: T = 1.25e-3


@dataclass(frozen=True)
class Registered:
    """One pre-registered comparison: metric of method ``a`` vs method ``b`` on ``target``.

    ``shift`` s turns a non-inferiority claim into the verdict rule's directional test: arm b is
    compared as b + s, so "a < b + s" ("a is within s of b, or below") is the predicted
    direction "less" (s = margin), and "a > b − s" is "greater" (s = −margin). ``effect``
    reported = mean(a) − mean(b) − s."""

    experiment: str
    name: str
    target: str
    metric: str
    a: str
    b: str
    direction: str
    paired: bool = False
    shift: float = 0.0
    units: str = ""
    meaning: str = ""


@dataclass
class StudyConfig:
    """The claims study (``python -m toy_problems --study claims``); see the module docstring
    of :mod:`toy_problems.study` for what each part measures."""

    out: str = "toy_problems/results/claims"
    quick: bool = False
    # where each trained job is cached ("" = nowhere): a rerun loads the jobs found there, so a
    # later stage can be redone without retraining (same config assumed; not part of results)
    cache: str = ""
    threads: int = 1
    # final runs: seeds seed_offset … seed_offset + seeds − 1; tuning: 0 … tune_seeds − 1
    seeds: int = 10
    seed_offset: int = 100
    tune_seeds: int = 2
    lr_grid: list[float] = field(default_factory=lambda: [3e-3, 1e-2, 3e-2])
    l2_grid: list[float] = field(default_factory=lambda: [0.1, 0.5])
    # early stopping (toy_problems.fit.StopRule), the same for every method and for tuning
    eval_every: int = 100
    patience: int = 6
    cap: int = 2000
    min_updates: int = 300
    min_delta: float = 1e-3
    # the network, batch and sampler every method shares (toy_problems.methods)
    hidden: int = 64
    depth: int = 3
    hidden_1d: int = 32  # width of ring8_hd's one-coordinate block networks
    batch_size: int = 128
    n_steps: int = 10
    step_size: float = 0.02
    buffer_size: int = 1000
    beta1: float = 0.9
    dtype: str = "float32"
    # data (one draw per target, shared by all members and methods)
    n_train: int = 5000
    n_val: int = 2000
    n_test: int = 5000
    data_seed: int = 1234
    # quadrature: validation grid (coarse, during training) and final grid (fine)
    val_points_2d: int = 101
    val_points_1d: int = 801
    grid_points_2d: int = 121
    grid_points_1d: int = 2001
    grid_expand: int = 2
    max_expand: int = 16
    leak_tol: float = 1e-3
    # C7 / C27: chains from noise and from test data, ULA eq. 1 at T = 1
    chain_lengths: list[int] = field(default_factory=lambda: [0, 10, 30, 100, 300, 1000])
    n_chains: int = 1000
    tv_bins_2d: int = 10
    tv_bins_1d: int = 40
    c7_targets: list[str] = field(
        default_factory=lambda: ["ring8", "two_modes", "checkerboard", "bimodal_1d"])
    c7_margin: float = 0.05
    c27_targets: list[str] = field(
        default_factory=lambda: ["ring8", "two_modes", "checkerboard", "bimodal_1d"])
    c27_margin: float = 0.05
    # tuning reused across targets: {target: target whose tuned setting it takes, per method}
    reuse_tuning: dict[str, str] = field(default_factory=lambda: {"ring8_hd": "ring8"})
    # C16: far field and spurious minima
    c16_targets: list[str] = field(
        default_factory=lambda: ["ring8", "two_modes", "checkerboard", "ring8_hd"])
    far_distance: float = 0.5
    descent_points_2d: int = 31
    descent_points_1d: int = 121
    descent_steps: int = 400
    minimum_radius: float = 0.05  # an end point is a minimum if E rises in every probe direction
    merge_radius: float = 0.1
    # C26: frozen-θ step test (exact laws on a grid) and training in Du's regime
    c26_frozen_targets: list[str] = field(default_factory=lambda: ["bimodal_1d", "ring8"])
    c26_train_targets: list[str] = field(default_factory=lambda: ["ring8"])
    kl_chains: int = 1000
    kl_step: float = 1e-3  # the frozen-θ step's length relative to ‖θ‖
    kernel_spacing_2d: float = 0.06
    kernel_spacing_1d: float = 0.01
    kl_bins_2d: int = 20
    kl_bins_1d: int = 60
    # C28: Du's decoupled step at rising temperature on an unequal and an equal target
    c28_targets: list[str] = field(default_factory=lambda: ["bimodal_1d", "bimodal_1d_equal"])
    temperatures: list[float] = field(
        default_factory=lambda: [DU_TEMPERATURE, 0.1, 0.3, 1.0])
    t_high: float = 0.3
    funnel_steps: int = 3000
    funnel_chains: int = 500
    # the decision rule (ebmref.verdict)
    alpha: float = 0.05

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name in ("seeds", "tune_seeds", "eval_every", "patience", "cap", "hidden", "depth",
                     "hidden_1d",
                     "batch_size", "n_steps", "buffer_size", "n_train", "n_val", "n_test",
                     "n_chains", "descent_steps", "kl_chains", "funnel_steps", "funnel_chains",
                     "threads"):
            check_int_range(getattr(self, name), name, 1)
        check_int_range(self.seed_offset, "seed_offset", self.tune_seeds)
        check_int_range(self.min_updates, "min_updates", 0, self.cap)
        for name in ("lr_grid", "l2_grid", "temperatures"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"{name}: must not be empty")
            for v in values:
                check_positive(v, name)
        for name in ("kl_step", "step_size", "far_distance", "minimum_radius",
                     "merge_radius", "kernel_spacing_2d", "kernel_spacing_1d", "leak_tol",
                     "t_high"):
            check_positive(getattr(self, name), name)
        for name in ("c7_margin", "c27_margin"):
            check_probability(getattr(self, name), name)
        check_probability(self.alpha, "alpha")
        if self.t_high not in self.temperatures:
            raise ValueError(f"t_high: {self.t_high} must be one of temperatures "
                             f"{self.temperatures}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype: must be 'float32' or 'float64', got {self.dtype!r}")
        lengths = self.chain_lengths
        if not lengths or lengths != sorted(lengths) or lengths[0] < 0:
            raise ValueError(f"chain_lengths: expected ascending non-negative, got {lengths}")
        self._validate_targets_and_grids()

    def _validate_targets_and_grids(self) -> None:
        for t, src in self.reuse_tuning.items():
            if t not in TARGETS or src not in TARGETS:
                raise ValueError(f"reuse_tuning: {t!r} → {src!r} must name targets of "
                                 f"{tuple(TARGETS)}")
        for name in ("c7_targets", "c27_targets", "c16_targets", "c26_frozen_targets",
                     "c26_train_targets", "c28_targets"):
            for t in getattr(self, name):
                if t not in TARGETS:
                    raise ValueError(f"{name}: {t!r} is not one of {tuple(TARGETS)}")
        if any(TARGETS[t]().blocks is not None for t in
               (*self.c7_targets, *self.c27_targets, *self.c26_frozen_targets,
                *self.c26_train_targets, *self.c28_targets)):
            raise ValueError("targets: factorised targets (ring8_hd) are for C16 only")
        for name in ("val_points_2d", "val_points_1d", "grid_points_2d", "grid_points_1d",
                     "descent_points_2d", "descent_points_1d"):
            n = getattr(self, name)
            if not (isinstance(n, int) and n >= 5 and n % 2 == 1):
                raise ValueError(f"{name}: must be an odd integer ≥ 5, got {n!r}")
        check_int_range(self.max_expand, "max_expand", self.grid_expand)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def jobs(self) -> list[tuple[str, str]]:
        """The (method, target) ensembles the registered comparisons need, in training order."""
        need: list[tuple[str, str]] = []
        for t in dict.fromkeys([*self.c7_targets, *self.c27_targets, *self.c16_targets,
                                *self.c26_frozen_targets, *self.c28_targets]):
            need.append(("nll", t))
        need += [("cd10", t) for t in self.c16_targets] + [("pcd", t) for t in self.c16_targets]
        need += [("true_cd", t) for t in self.c27_targets]
        need += [(m, t) for t in self.c26_train_targets
                 for m in ("nll_du", "du_kl_du2020", "du_kl_cd")]
        # a job that reuses another target's tuning must come after it
        order = {job: i for i, job in enumerate(need)}
        for m, t in list(need):
            src = self.reuse_tuning.get(t)
            if src is not None and (m, src) not in order:
                need.insert(need.index((m, t)), (m, src))
                order = {job: i for i, job in enumerate(need)}
        for m, _ in need:
            if m not in METHODS:
                raise ValueError(f"jobs: method {m!r} is not defined in toy_problems.methods")
        return list(dict.fromkeys(need))


def quick_overrides() -> dict:
    """A smoke version (well under a minute): 2 seeds, tiny budgets, two targets."""
    return {"seeds": 2, "tune_seeds": 1, "lr_grid": [1e-2], "l2_grid": [0.1], "eval_every": 10,
            "patience": 2, "cap": 30, "min_updates": 10, "n_train": 500, "n_val": 200,
            "n_test": 200, "val_points_2d": 41, "val_points_1d": 201, "grid_points_2d": 61,
            "grid_points_1d": 401, "chain_lengths": [0, 10, 20], "n_chains": 100,
            "c7_targets": ["ring8", "bimodal_1d"], "c27_targets": ["bimodal_1d"],
            "c16_targets": ["ring8"], "descent_points_2d": 11, "descent_steps": 50,
            "c26_frozen_targets": ["bimodal_1d"], "c26_train_targets": ["bimodal_1d"],
            "kl_chains": 100, "kernel_spacing_1d": 0.03,
            "c28_targets": ["bimodal_1d", "bimodal_1d_equal"], "funnel_steps": 50,
            "funnel_chains": 50, "buffer_size": 200, "batch_size": 32,
            "out": "runs/toy_claims_quick"}


def registered(cfg: StudyConfig) -> list[Registered]:
    """Every comparison the study will decide, fixed from the config before training."""
    r: list[Registered] = []
    for t in cfg.c7_targets:
        r.append(Registered(
            "C7", f"{t}: model", t, "excess_tv_noise", "nll", "margin", "less", True,
            cfg.c7_margin, "TV", f"excess TV (chain ends from noise after "
            f"{cfg.chain_lengths[-1]} steps vs p_θ, minus the exact-sample floor) < "
            f"{cfg.c7_margin} (non-inferiority)"))
    for t in cfg.c7_targets:
        r.append(Registered(
            "C7 control", f"{t}: true energy", t, "excess_tv_noise", "true", "margin", "less",
            True, cfg.c7_margin, "TV", "the same chains on the true energy, vs p_data"))
    for t in cfg.c16_targets:
        for metric, units in (("far_mass", ""), ("n_spurious", "minima")):
            for b in ("pcd", "nll"):
                r.append(Registered("C16", f"{t}: {metric}, cd10 vs {b}", t, metric, "cd10", b,
                                    "greater", False, 0.0, units))
    for t in cfg.c26_frozen_targets:
        r.append(Registered("C26 frozen", f"{t}: one KL-loss step", t, "delta_kl",
                            "du2020", "cd", "less", True, 0.0, "nats",
                            "exact ΔKL[q‖p_θ] after a small step on the KL loss, du2020 vs cd "
                            "sign"))
    for t in cfg.c26_train_targets:
        for b in ("du_kl_cd", "nll_du"):
            r.append(Registered("C26 training", f"{t}: du_kl_du2020 vs {b}", t, "excess_kl_q",
                                "du_kl_du2020", b, "less", False, 0.0, "nats"))
    for t in cfg.c27_targets:
        r.append(Registered("C27", f"{t}: noise→mode", t, "frac_noise_in_modes", "true_cd",
                            "nll", "less", False, 0.0))
        r.append(Registered("C27", f"{t}: noise chains vs own p_θ", t, "excess_tv_noise",
                            "true_cd", "nll", "greater", False, 0.0, "TV"))
        r.append(Registered("C27", f"{t}: data→mode (non-inferior)", t, "frac_data_in_modes",
                            "true_cd", "nll", "greater", False, -cfg.c27_margin))
    for t in cfg.c28_targets:
        r.append(Registered("C28", f"{t}: collapse at T = {cfg.t_high:g}", t, "frac_major",
                            f"T={cfg.t_high:g}", f"T={cfg.temperatures[0]:g}", "greater",
                            True, 0.0, "", "fraction of in-mode chains in p_θ's heavier mode"))
    if len(cfg.c28_targets) == 2:
        r.append(Registered("C28 contrast", "collapse: unequal vs equal modes",
                            "/".join(cfg.c28_targets), "collapse_effect", cfg.c28_targets[0],
                            cfg.c28_targets[1], "greater", False, 0.0, "",
                            "per-seed collapse (frac_major at t_high − at Du's T) on the "
                            "unequal target minus on the equal target"))
    return r
