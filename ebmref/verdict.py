"""The pre-registered decision rule for experimental comparisons: per-seed values in, verdict out.

Experiments (toys, digits, MNIST) compare trained models, whose spread across seeds is the
noise. This module is the one place that turns such a comparison into a verdict word; reports
and ``verification/CLAIMS.md`` take their words from it.

Vocabulary (:data:`VERDICTS`)
-----------------------------
* **verified** — the two-sided test of "no difference" is significant at α after Holm's
  correction over the experiment's comparisons, and the effect lies in the predicted direction;
* **refuted** — the opposite effect is significant at α after Holm, or a two-one-sided-tests
  (TOST) equivalence test bounds the effect inside the margin ±δ stated before the run;
* **not reproduced** — neither; the row states the minimum detectable effect (MDE) at 80 %
  power, or says the design is underpowered (its smallest attainable p exceeds α);
* **qualified** — :func:`qualified`: verified under a stated condition and shown to fail without
  it (refuted there, or a verified contrast of the effect between the two conditions);
* **not measured** — :func:`not_measured`: the experiment could not run; a reason is stated.

The rule (:func:`decide`)
-------------------------
It is a three-decision rule (two-sided test, then the sign): each direction is claimed at level
α/2, so the chance of any directional claim under "no difference" is ≤ α. The p-values:

* ``test="auto"``: an exact permutation test when every arm has ≤ 10 values (all C(n_a + n_b,
  n_a) relabellings; all 2ⁿ sign flips of the differences when paired), otherwise Welch's t
  (Welch 1947) — or the paired t test on the differences. ``test="permutation"`` forces
  permutations for means (exact up to 32 pooled values). Medians always use permutations
  (exact when there are ≤ 200 000 relabellings, else ``n_perm`` random ones, p = (k + 1)/(R + 1)).
* Welch: t = Δ/se, se² = s_a²/n_a + s_b²/n_b, df = se⁴ / [(s_a²/n_a)²/(n_a − 1) +
  (s_b²/n_b)²/(n_b − 1)]; paired: t = d̄/(s_d/√n), df = n − 1. One-sided p = P(T_df ≥ t),
  P(T_df ≤ t); two-sided p = min(1, 2·min of the two) (also for the permutation tests).
* Permutation (Fisher/Pitman): p_greater = #{relabellings g : Δ(g) ≥ Δ_obs}/K, counting ties
  (within 1e-12 of the data's scale) as "at least as extreme". It tests exchangeability of
  the arms, exactly, at any n; its smallest attainable two-sided p is 2/K.
* TOST (Schuirmann 1987), only with a margin δ > 0: p_TOST = max(p[Δ > −δ], p[Δ < +δ]), each
  one-sided test run on arm a shifted by ∓δ with the same test as above.
* Multiplicity (:func:`family`): Holm's step-down (Holm 1979) over the two-sided p-values of the
  experiment's m measured comparisons. TOST p-values join the same step-down; a comparison's
  "no difference" and "not equivalent" nulls cannot both be true, so at most m nulls are true
  at once and every multiplier is capped at m (Shaffer 1986's logical restriction). With no
  margins this is plain Holm over m.

Reported numbers: the effect (difference of means; difference of medians, or median of the
paired differences), a 95 % CI — Welch / paired t interval for means (``ci="t"``), BCa bootstrap
(Efron & Tibshirani 1993, ch. 14; percentile when BCa degenerates) for medians or on request
(``ci="bootstrap"``, for Fréchet distances, rates) — and the MDE: the effect the rule would
call verified with probability 80 %, from the noncentral t with the pooled sd of the two arms
(sd of the differences when paired), df = n_a + n_b − 2 (n − 1), at the two-sided level α/m
(the level a comparison faces at Holm's first step; for exact permutation tests the largest
attainable level ≤ α/m). The CI is descriptive and not Holm-adjusted; the verdict reads p only.

Non-finite values (NaN, inf) raise ``ValueError`` naming the argument: a diverged seed is a
result to report (:func:`not_measured`, or a finite stand-in stated in the config), never a value
to drop silently.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache

import numpy as np
from scipy import optimize, stats

from ebmref.validation import check_choice, check_int_range

VERDICTS = ("verified", "qualified", "not reproduced", "refuted", "not measured")
DIRECTIONS = ("greater", "less")
STATISTICS = ("mean", "median")
TESTS = ("auto", "welch", "permutation")
CIS = ("auto", "t", "bootstrap")
EXACT_MAX_N = 10
"""``test="auto"`` runs an exact permutation test when every arm has at most this many values."""
EXACT_MAX_RELABELLINGS = 200_000
"""Largest number of relabellings enumerated in full (medians); means use a meet-in-the-middle
count that stays exact up to :data:`MITM_MAX_N` pooled values."""
MITM_MAX_N = 32
POWER = 0.8
CI_LEVEL = 0.95


# --------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class Comparison:
    """One comparison a − b of per-seed values, and its verdict. ``None`` numbers carry a reason
    in ``missing``. p-values: ``p_two_sided`` (raw), ``p_predicted`` / ``p_opposite`` (raw
    one-sided, in / against ``direction``), ``p_adjusted`` (Holm over ``m`` comparisons; the
    verdict reads this one), ``p_equivalence`` / ``p_equivalence_adjusted`` (TOST, with a
    margin). ``sd`` is the pooled sd of the arms (sd of the differences when paired), ``df`` its
    degrees of freedom; ``mde`` the minimum detectable effect at 80 % power (``mde_basis``)."""

    verdict: str
    label: str = ""
    note: str = ""
    direction: str | None = None
    statistic: str = "mean"
    paired: bool = False
    test: str = ""
    n_a: int = 0
    n_b: int = 0
    effect: float | None = None
    ci: tuple[float, float] | None = None
    ci_method: str = ""
    p_two_sided: float | None = None
    p_predicted: float | None = None
    p_opposite: float | None = None
    p_adjusted: float | None = None
    m: int = 1
    alpha: float = 0.05
    margin: float | None = None
    p_equivalence: float | None = None
    p_equivalence_adjusted: float | None = None
    p_min: float | None = None
    n_relabellings: int | None = None
    sd: float | None = None
    df: float | None = None
    mde: float | None = None
    mde_basis: str = ""
    units: str = ""
    missing: Mapping[str, str] = field(default_factory=dict)
    parts: tuple[Comparison, ...] = ()

    def numbers(self) -> str:
        """The row's numbers: effect [95 % CI] units, n, p_Holm (m), α, MDE when not verified."""
        if self.verdict == "not measured":
            return self.note
        sym = "Δ median" if self.statistic == "median" else "Δ"
        u = f" {self.units}" if self.units else ""
        ci = f" [{_num(self.ci[0])}, {_num(self.ci[1])}]" if self.ci else " [CI: n/a]"
        n = f"{self.n_a} pairs" if self.paired else f"{self.n_a} + {self.n_b}"
        s = (f"{sym} = {_num(self.effect)}{ci}{u}, n = {n}, "
             f"p_Holm = {_p(self.p_adjusted)} (m = {self.m}), α = {self.alpha:g}")
        if self.margin is not None:
            s += f", TOST ±{_num(self.margin)}: p_Holm = {_p(self.p_equivalence_adjusted)}"
        if self.verdict == "not reproduced":
            s += f", MDE = {_num(self.mde)}{u}" if self.mde is not None else ", MDE: n/a"
        return s

    def line(self) -> str:
        """One line for a report or CLAIMS.md, e.g. ``verified: Δ = −0.31 [−0.45, −0.17] nats,
        n = 10 + 10, p_Holm = 0.002 (m = 5), α = 0.05``."""
        if self.parts:
            return self.verdict + (f" ({self.note})" if self.note else "")
        if self.verdict == "not measured":
            return f"not measured: {self.note}"
        head = self.verdict + (f" ({self.note})" if self.note else "")
        return f"{head}: {self.numbers()}"

    def to_dict(self) -> dict:
        """Strict-JSON dict (no NaN/inf): every number finite or ``None`` with a reason in
        ``missing``; ``line`` included."""
        d = asdict(self)
        d["ci"] = list(self.ci) if self.ci else None
        d["missing"] = dict(self.missing)
        d["parts"] = [p.to_dict() for p in self.parts]
        d["line"] = self.line()
        for k, v in d.items():
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{k}: non-finite value {v!r} in a Comparison")
        return d


def _num(x: float | None) -> str:
    if x is None:
        return "n/a"
    s = f"{x:.3g}"
    return "−" + s[1:] if s.startswith("-") else s


def _p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return f"{p:.2g}"


# --------------------------------------------------------------------------- argument checks


def _values(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected a 1-D sequence of numbers, got {x!r}") from err
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D sequence of per-seed values, "
                         f"got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{name}: {bad.size} non-finite value(s) (NaN/inf) at index "
                         f"{bad.tolist()}; a diverged seed is a result: report it (not_measured, "
                         f"or a finite stand-in stated in the config), do not drop it")
    return arr


def _check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, (int, float)) and 0.0 < alpha < 1.0):
        raise ValueError(f"alpha: must lie in (0, 1), got {alpha!r}")


def _check_args(a: np.ndarray, b: np.ndarray, *, direction: str, alpha: float,
                margin: float | None, paired: bool, statistic: str, test: str, ci: str) -> None:
    check_choice(direction, "direction", DIRECTIONS)
    _check_alpha(alpha)
    if margin is not None and not (isinstance(margin, (int, float)) and math.isfinite(margin)
                                   and margin > 0):
        raise ValueError(f"margin: must be None or a finite number > 0, got {margin!r}")
    check_choice(statistic, "statistic", STATISTICS)
    check_choice(test, "test", TESTS)
    check_choice(ci, "ci", CIS)
    if paired and a.size != b.size:
        raise ValueError(f"b: paired=True needs one value per seed in each arm, got "
                         f"len(a) = {a.size}, len(b) = {b.size}")
    if statistic == "median" and test == "welch":
        raise ValueError("test: 'welch' compares means; statistic='median' needs "
                         "test='permutation' or 'auto'")
    if statistic == "median" and ci == "t":
        raise ValueError("ci: the t interval is for means; use ci='bootstrap' or 'auto'")
    if test == "welch":
        for name, arr in (("a", a), ("b", b)):
            if arr.size < 2:
                raise ValueError(f"{name}: Welch's t needs ≥ 2 values per arm, got {arr.size}")


# --------------------------------------------------------------------------- t tests


def _t_parts(a: np.ndarray, b: np.ndarray, paired: bool) -> tuple[float, float, float]:
    """(effect, se, df) of the Welch or paired t statistic; se = 0 for constant arms."""
    if paired:
        d = a - b
        return float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size)), float(d.size - 1)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se2 = va + vb
    df = se2**2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1)) if se2 > 0 else a.size + b.size - 2
    return float(a.mean() - b.mean()), math.sqrt(se2), float(df)


def _t_one_sided(a: np.ndarray, b: np.ndarray, paired: bool) -> tuple[float, float]:
    """(P(T ≥ t), P(T ≤ t)) for Welch's t (Welch 1947) or the paired t; with zero variance
    the difference is certain: p = 0 on its side, 1 on the other (both 1 for a zero effect)."""
    effect, se, df = _t_parts(a, b, paired)
    if se == 0.0:
        return (0.0 if effect > 0 else 1.0), (0.0 if effect < 0 else 1.0)
    t = effect / se
    return float(stats.t.sf(t, df)), float(stats.t.cdf(t, df))


# --------------------------------------------------------------------------- permutation tests


@lru_cache(maxsize=64)
def _half_masks(h: int) -> tuple[np.ndarray, np.ndarray]:
    """All 2^h 0/1 rows of length h, and their row sums."""
    masks = ((np.arange(2**h)[:, None] >> np.arange(h)) & 1).astype(np.float64)
    return masks, masks.sum(1).astype(np.int64)


def _tol(x: np.ndarray) -> float:
    return 1e-12 * float(np.abs(x).sum())


def _count_tails(left: np.ndarray, right: np.ndarray, s_obs: float, tol: float) -> tuple[int, int]:
    """#(l + r ≥ s_obs − tol) and #(l + r ≤ s_obs + tol) over all pairs (l, r)."""
    right = np.sort(right)
    ge = right.size - np.searchsorted(right, s_obs - tol - left, side="left")
    le = np.searchsorted(right, s_obs + tol - left, side="right")
    return int(ge.sum()), int(le.sum())


def _exact_mean_independent(a: np.ndarray, b: np.ndarray) -> tuple[float, float, int]:
    """Exact permutation p of Δ = mean(a) − mean(b) over all K = C(N, n_a) relabellings.

    Δ(g) = S(g)·(1/n_a + 1/n_b) − T/n_b increases with the sum S(g) of the values labelled
    "a", so p_greater = #{S(g) ≥ S_obs}/K; the subset sums are counted meet-in-the-middle
    (two halves of the pooled values, sums grouped by subset size), O(2^(N/2) log) work."""
    x = np.concatenate([a, b])
    k, h = a.size, x.size // 2
    (ml, cl), (mr, cr) = _half_masks(h), _half_masks(x.size - h)
    sl, sr = ml @ x[:h], mr @ x[h:]
    s_obs, tol = float(a.sum()), _tol(x)
    ge = le = 0
    for j in range(max(0, k - (x.size - h)), min(k, h) + 1):
        g, lo = _count_tails(sl[cl == j], sr[cr == k - j], s_obs, tol)
        ge, le = ge + g, le + lo
    n = math.comb(x.size, k)
    return ge / n, le / n, n


def _exact_mean_paired(d: np.ndarray) -> tuple[float, float, int]:
    """Exact sign-flip p of the mean difference over all K = 2ⁿ sign patterns: p_greater =
    #{Σ sᵢdᵢ ≥ Σ dᵢ}/K (meet-in-the-middle over two halves of the differences)."""
    h = d.size // 2
    (ml, _), (mr, _) = _half_masks(h), _half_masks(d.size - h)
    sl = 2.0 * (ml @ d[:h]) - d[:h].sum()
    sr = 2.0 * (mr @ d[h:]) - d[h:].sum()
    ge, le = _count_tails(sl, sr, float(d.sum()), _tol(d))
    n = 2**d.size
    return ge / n, le / n, n


@lru_cache(maxsize=8)
def _all_subsets(n: int, k: int) -> np.ndarray:
    idx = itertools.chain.from_iterable(itertools.combinations(range(n), k))
    return np.fromiter(idx, dtype=np.int16, count=math.comb(n, k) * k).reshape(-1, k)


def _exact_median(a: np.ndarray, b: np.ndarray, paired: bool) -> tuple[float, float, int]:
    """Exact permutation p of the median effect, by full enumeration of the relabellings
    (independent: median(a) − median(b); paired: median of the sign-flipped differences)."""
    if paired:
        d = a - b
        signs = 1.0 - 2.0 * _half_masks(d.size)[0]
        null, obs, tol = np.median(signs * d, axis=1), float(np.median(d)), _tol(d)
    else:
        x = np.concatenate([a, b])
        sub = _all_subsets(x.size, a.size)
        inb = np.ones((sub.shape[0], x.size), dtype=bool)
        np.put_along_axis(inb, sub.astype(np.int64), False, axis=1)
        rest = x[np.nonzero(inb)[1].reshape(sub.shape[0], -1)]
        null = np.median(x[sub], axis=1) - np.median(rest, axis=1)
        obs, tol = float(np.median(a) - np.median(b)), _tol(x)
    return (float((null >= obs - tol).mean()), float((null <= obs + tol).mean()), null.size)


def _monte_carlo(a: np.ndarray, b: np.ndarray, paired: bool, statistic: str, n_perm: int,
                 seed: int) -> tuple[float, float, int]:
    """Random-relabelling p (scipy.stats.permutation_test): (k + 1)/(R + 1), valid at any R."""
    f = np.mean if statistic == "mean" else np.median
    if paired:
        def stat(x, y, axis):
            return f(x - y, axis=axis)
    else:
        def stat(x, y, axis):
            return f(x, axis=axis) - f(y, axis=axis)
    out = []
    for alt in ("greater", "less"):
        res = stats.permutation_test((a, b), stat, vectorized=True, n_resamples=n_perm,
                                     permutation_type="samples" if paired else "independent",
                                     alternative=alt, rng=np.random.default_rng(seed))
        out.append(float(res.pvalue))
    return out[0], out[1], n_perm


def _n_relabellings(n_a: int, n_b: int, paired: bool) -> int:
    return 2**n_a if paired else math.comb(n_a + n_b, n_a)


def _choose_test(n_a: int, n_b: int, paired: bool, statistic: str, test: str) -> str:
    """'t', 'exact' or 'monte carlo' (see the module docstring for the rule)."""
    t_ok = min(n_a, n_b) >= 2 and max(n_a, n_b) > EXACT_MAX_N
    if statistic == "mean" and (test == "welch" or (test == "auto" and t_ok)):
        return "t"
    pooled = n_a if paired else n_a + n_b
    if statistic == "mean":
        return "exact" if pooled <= MITM_MAX_N else "monte carlo"
    ok = _n_relabellings(n_a, n_b, paired) <= EXACT_MAX_RELABELLINGS
    return "exact" if ok else "monte carlo"


def _one_sided(a: np.ndarray, b: np.ndarray, *, paired: bool, statistic: str, kind: str,
               n_perm: int, seed: int) -> tuple[float, float]:
    """(p_greater, p_less) of the effect of a − b with the chosen test."""
    if kind == "t":
        return _t_one_sided(a, b, paired)
    if kind == "monte carlo":
        return _monte_carlo(a, b, paired, statistic, n_perm, seed)[:2]
    if statistic == "median":
        return _exact_median(a, b, paired)[:2]
    if paired:
        return _exact_mean_paired(a - b)[:2]
    return _exact_mean_independent(a, b)[:2]


def _test_name(kind: str, n_a: int, n_b: int, paired: bool, n_perm: int, df: float) -> str:
    if kind == "t":
        return f"paired t (df {df:.3g})" if paired else f"Welch t (df {df:.3g})"
    what = "sign patterns" if paired else "relabellings"
    if kind == "exact":
        return f"exact permutation ({_n_relabellings(n_a, n_b, paired)} {what})"
    return f"Monte Carlo permutation ({n_perm} random {what})"


# --------------------------------------------------------------------------- intervals, power


def _bootstrap_ci(a: np.ndarray, b: np.ndarray, paired: bool, statistic: str, n_boot: int,
                  seed: int) -> tuple[tuple[float, float] | None, str]:
    """BCa bootstrap interval (Efron & Tibshirani 1993, ch. 14) of the effect, resampling each
    arm (pairs jointly when paired); percentile interval when BCa degenerates."""
    if (a.size < 2 or b.size < 2) and not (paired and a.size >= 2):
        return None, "bootstrap needs ≥ 2 values per arm"
    f = np.mean if statistic == "mean" else np.median
    if paired:
        def stat(x, y, axis):
            return f(x - y, axis=axis)
    else:
        def stat(x, y, axis):
            return f(x, axis=axis) - f(y, axis=axis)
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.bootstrap((a, b), stat, n_resamples=n_boot, paired=paired,
                                  vectorized=True, confidence_level=CI_LEVEL, method=method,
                                  rng=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(lo) and math.isfinite(hi):
            return (lo, hi), f"{method} bootstrap ({n_boot} resamples)"
    return None, "bootstrap interval undefined"


def _t_ci(a: np.ndarray, b: np.ndarray, paired: bool) -> tuple[tuple[float, float] | None, str]:
    """Effect ± t_{0.975, df}·se (Welch df, or n − 1 paired)."""
    if a.size < 2 or b.size < 2:
        return None, "t interval needs ≥ 2 values per arm"
    effect, se, df = _t_parts(a, b, paired)
    half = float(stats.t.ppf(0.5 + CI_LEVEL / 2, df)) * se
    name = "paired t" if paired else "Welch t"
    return (effect - half, effect + half), f"{name} (df {df:.3g})"


@lru_cache(maxsize=512)
def _ncp_for_power(df: float, level: float, power: float) -> float:
    """Noncentrality λ with P(T_{df,λ} > t_{1−level/2, df}) = power (noncentral t)."""
    crit = float(stats.t.isf(level / 2, df))
    f = lambda lam: float(stats.nct.sf(crit, df, lam)) - power
    hi = 2.0 * (crit + 2.0)
    while f(hi) < 0:
        hi *= 2.0
    return float(optimize.brentq(f, 0.0, hi, xtol=1e-10))


def minimum_detectable_effect(sd: float, n_a: int, n_b: int | None = None, *, alpha: float = 0.05,
                              power: float = POWER, paired: bool = False) -> float:
    """Smallest true effect δ > 0 that the rule calls significant in its direction with
    probability ``power``, for normal data with standard deviation ``sd``.

    Unpaired: se = sd·√(1/n_a + 1/n_b), df = n_a + n_b − 2 (sd = the pooled sd). Paired
    (``n_b`` ignored): se = sd/√n_a, df = n_a − 1 (sd of the differences). δ = λ·se with λ the
    noncentrality at which the noncentral t exceeds the two-sided critical value t_{1−α/2, df}
    with probability ``power`` (the opposite tail is not counted: it would not verify)."""
    if not (isinstance(sd, (int, float)) and math.isfinite(sd) and sd >= 0):
        raise ValueError(f"sd: must be a finite number ≥ 0, got {sd!r}")
    check_int_range(n_a, "n_a", 2 if paired else 1)
    _check_alpha(alpha)
    _check_alpha(power)
    if paired:
        se, df = sd / math.sqrt(n_a), n_a - 1
    else:
        n_b = n_a if n_b is None else n_b
        check_int_range(n_b, "n_b", 1)
        if n_a + n_b < 3:
            raise ValueError(f"n_a, n_b: need n_a + n_b ≥ 3 for a pooled sd, got {n_a} + {n_b}")
        se, df = sd * math.sqrt(1 / n_a + 1 / n_b), n_a + n_b - 2
    return _ncp_for_power(float(df), float(alpha), float(power)) * se


def _pooled_sd(a: np.ndarray, b: np.ndarray, paired: bool) -> tuple[float | None, float | None]:
    """(pooled sd, df), or the sd of the differences when paired; (None, None) if undefined."""
    if paired:
        return (float((a - b).std(ddof=1)), float(a.size - 1)) if a.size >= 2 else (None, None)
    df = a.size + b.size - 2
    if df < 1:
        return None, None
    ss = ((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()
    return float(math.sqrt(ss / df)), float(df)


def _mde(c: Comparison) -> tuple[float | None, str, str]:
    """(MDE, basis, reason if None) at the level α/m the comparison faces at Holm's first
    step; exact permutation tests use the largest attainable level 2⌊level·K/2⌋/K."""
    level = c.alpha / c.m
    if c.statistic != "mean":
        return None, "", "no MDE formula for medians (report the CI)"
    if c.sd is None or c.df is None:
        return None, "", "no variance estimate (n too small)"
    if c.test.startswith("exact") and c.n_relabellings:
        k = c.n_relabellings
        level = 2 * math.floor(level * k / 2) / k
        if level <= 0:
            return None, "", f"the test cannot reach p ≤ α/m = {c.alpha / c.m:.3g}"
    n_b = c.n_a if c.paired else c.n_b
    mde = minimum_detectable_effect(c.sd, c.n_a, n_b, alpha=level, paired=c.paired)
    what = "sd of differences" if c.paired else "pooled sd"
    basis = (f"80 % power, noncentral t, {what} {c.sd:.3g}, df {c.df:.3g}, two-sided level "
             f"{level:.3g} (α/m = {c.alpha:g}/{c.m})")
    return mde, basis, ""


# --------------------------------------------------------------------------- the decision


def decide(*, p_adjusted: float, p_predicted: float, p_opposite: float, alpha: float,
           p_equivalence_adjusted: float | None = None, p_min: float = 0.0,
           margin: float | None = None) -> tuple[str, str]:
    """The decision rule: (verdict, note) from Holm-adjusted p-values.

    1. p_adjusted ≤ α and p_predicted < p_opposite → **verified** (noted when TOST also puts
       the effect inside the margin: significant but smaller than the margin);
    2. p_adjusted ≤ α and p_opposite < p_predicted → **refuted** (opposite effect);
    3. p_equivalence_adjusted ≤ α → **refuted** (equivalence inside ±margin);
    4. otherwise **not reproduced**, noted "underpowered" when the test's smallest attainable
       two-sided p exceeds α (no outcome could have verified it)."""
    if p_equivalence_adjusted is not None and margin is None:
        raise ValueError("margin: the TOST p-value p_equivalence_adjusted needs the margin it "
                         "was computed for, got margin=None")
    sig = p_adjusted <= alpha
    eq = p_equivalence_adjusted is not None and p_equivalence_adjusted <= alpha
    inside = f"|Δ| < {margin:g} by TOST" if eq else ""
    if sig and p_predicted < p_opposite:
        return "verified", (f"significant, but {inside}: smaller than the margin" if eq else "")
    if sig and p_opposite < p_predicted:
        return "refuted", "opposite effect significant" + (f"; {inside}" if eq else "")
    if eq:
        return "refuted", f"equivalence: {inside}"
    if p_min > alpha:
        return "not reproduced", (f"underpowered: minimum attainable p = {p_min:.3g} > "
                                  f"α = {alpha:g}")
    return "not reproduced", ""


def _finish(c: Comparison) -> Comparison:
    """Fill the verdict, note, MDE and the reasons for missing numbers."""
    verdict, note = decide(p_adjusted=c.p_adjusted, p_predicted=c.p_predicted,
                           p_opposite=c.p_opposite, alpha=c.alpha, p_min=c.p_min or 0.0,
                           p_equivalence_adjusted=c.p_equivalence_adjusted, margin=c.margin)
    mde, basis, why = _mde(c)
    missing = {k: v for k, v in c.missing.items() if k != "mde"}
    if mde is None:
        missing["mde"] = why
    if c.margin is None:
        missing.update(margin="no equivalence margin stated", p_equivalence="no margin",
                       p_equivalence_adjusted="no margin")
    return replace(c, verdict=verdict, note=note, mde=mde, mde_basis=basis, missing=missing)


def compare(a, b, *, direction: str, alpha: float = 0.05, margin: float | None = None,
            paired: bool = False, statistic: str = "mean", test: str = "auto", ci: str = "auto",
            units: str = "", label: str = "", n_boot: int = 9999, n_perm: int = 9999,
            seed: int = 0) -> Comparison:
    """Compare per-seed values ``a`` and ``b`` (paired by seed when ``paired``) against the
    predicted sign of a − b (``direction`` "greater" or "less"), at level ``alpha``, with an
    optional equivalence ``margin`` δ > 0 stated before the run. The tests, interval and MDE
    are those of the module docstring; the result is one comparison (m = 1) — pass several to
    :func:`family` for Holm's correction. ``seed`` fixes the bootstrap and Monte Carlo draws."""
    a, b = _values(a, "a"), _values(b, "b")
    _check_args(a, b, direction=direction, alpha=alpha, margin=margin, paired=paired,
                statistic=statistic, test=test, ci=ci)
    check_int_range(n_boot, "n_boot", 100)
    check_int_range(n_perm, "n_perm", 100)
    kind = _choose_test(a.size, b.size, paired, statistic, test)
    run = {"paired": paired, "statistic": statistic, "kind": kind, "n_perm": n_perm, "seed": seed}
    p_g, p_l = _one_sided(a, b, **run)
    p_eq = None
    if margin is not None:
        p_eq = max(_one_sided(a + margin, b, **run)[0], _one_sided(a - margin, b, **run)[1])
    f: Callable = np.mean if statistic == "mean" else np.median
    effect = float(f(a - b)) if paired and statistic == "median" else float(f(a) - f(b))
    use_t = ci == "t" or (ci == "auto" and statistic == "mean")
    interval, ci_method = (_t_ci(a, b, paired) if use_t
                           else _bootstrap_ci(a, b, paired, statistic, n_boot, seed))
    sd, df = _pooled_sd(a, b, paired)
    k = None if kind == "t" else (_n_relabellings(a.size, b.size, paired) if kind == "exact"
                                  else n_perm + 1)
    p_two = min(1.0, 2.0 * min(p_g, p_l))
    missing = {} if interval else {"ci": ci_method}
    if sd is None:
        missing["sd"] = missing["df"] = "n too small for a variance estimate"
    if k is None:
        missing["n_relabellings"] = "t test"
    pred, opp = (p_g, p_l) if direction == "greater" else (p_l, p_g)
    c = Comparison(
        verdict="not reproduced", label=label, direction=direction, statistic=statistic,
        paired=paired, n_a=int(a.size), n_b=int(b.size), effect=effect, ci=interval,
        ci_method=ci_method if interval else "", p_two_sided=p_two, p_predicted=pred,
        p_opposite=opp, p_adjusted=p_two, alpha=float(alpha), margin=margin, p_equivalence=p_eq,
        p_equivalence_adjusted=p_eq, p_min=0.0 if k is None else min(1.0, 2.0 / k),
        n_relabellings=k, sd=sd, df=df, units=units, missing=missing,
        test=_test_name(kind, a.size, b.size, paired, n_perm, _t_parts(a, b, paired)[2]
                        if kind == "t" else 0.0))
    return _finish(c)


# --------------------------------------------------------------------------- multiplicity


def holm(pvalues: Sequence[float], *, max_true: int | None = None) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979), in the input order.

    With p₍₁₎ ≤ … ≤ p₍ₙ₎: p̃₍ⱼ₎ = max_{k ≤ j} min(1, c_k·p₍ₖ₎), c_k = n − k + 1. Rejecting
    p̃ ≤ α controls the family-wise error rate at α under any dependence. ``max_true`` caps
    c_k when at most that many nulls can be true at once (Shaffer 1986); None: no cap."""
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1 or p.size == 0 or not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"pvalues: expected a non-empty 1-D sequence in [0, 1], got {pvalues!r}")
    if max_true is not None:
        check_int_range(max_true, "max_true", 1)
    n = p.size
    order = np.argsort(p, kind="stable")
    mult = np.arange(n, 0, -1, dtype=np.float64)
    if max_true is not None:
        mult = np.minimum(mult, max_true)
    adj = np.maximum.accumulate(np.minimum(1.0, mult * p[order]))
    out = np.empty(n)
    out[order] = adj
    return out.tolist()


def family(comparisons: Mapping[str, Comparison]) -> dict[str, Comparison]:
    """The comparisons of one experiment, Holm-adjusted together and re-decided.

    The m measured comparisons' two-sided p-values (and the TOST p-values of those with a
    margin) go through one step-down, multipliers capped at m (:func:`holm`, ``max_true``);
    each comparison gets ``m``, its adjusted p-values, a verdict at the adjusted p and an MDE
    at level α/m. Comparisons that were not measured pass through and do not count in m."""
    if not isinstance(comparisons, Mapping) or not comparisons:
        raise ValueError("comparisons: expected a non-empty mapping name → Comparison")
    for name, c in comparisons.items():
        if not isinstance(c, Comparison) or c.parts:
            raise ValueError(f"comparisons: {name!r} is not a single Comparison from compare()")
    measured = [n for n, c in comparisons.items() if c.verdict != "not measured"]
    alphas = {comparisons[n].alpha for n in measured}
    if len(alphas) > 1:
        raise ValueError(f"comparisons: one experiment, one α; got {sorted(alphas)}")
    if not measured:
        return {n: replace(c, label=n) for n, c in comparisons.items()}
    keys = [(n, "diff") for n in measured]
    keys += [(n, "eq") for n in measured if comparisons[n].p_equivalence is not None]
    raw = [comparisons[n].p_two_sided if kind == "diff" else comparisons[n].p_equivalence
           for n, kind in keys]
    adj = dict(zip(keys, holm(raw, max_true=len(measured))))
    out = {}
    for n, c in comparisons.items():
        if c.verdict == "not measured":
            out[n] = replace(c, label=n)
            continue
        out[n] = _finish(replace(c, label=n, m=len(measured), p_adjusted=adj[(n, "diff")],
                                 p_equivalence_adjusted=adj.get((n, "eq"))))
    return out


# --------------------------------------------------------------------------- other verdicts


def not_measured(reason: str, *, label: str = "") -> Comparison:
    """The verdict of an experiment that could not run at the scale its claim needs."""
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError("reason: say why the experiment could not run (which scale, and why)")
    return Comparison(verdict="not measured", label=label, note=reason.strip(),
                      missing={"all": reason.strip()})


def qualified(under: Comparison, without: Comparison, *, condition: str,
              interaction: Comparison | None = None, label: str = "") -> Comparison:
    """Combine the claim's comparison ``under`` a stated condition with the same comparison
    ``without`` it (and optionally the ``interaction``: the effect under the condition minus
    the effect without, predicted larger). Pass comparisons already adjusted by :func:`family`.

    * either not measured → not measured;
    * ``under`` verified and (``without`` refuted, or ``interaction`` verified) → **qualified**;
    * ``under`` verified otherwise → **verified** (noted: "without …" when not reproduced there);
    * ``under`` not verified → its own verdict (the claim fails where it should hold best)."""
    if not isinstance(condition, str) or not condition.strip():
        raise ValueError("condition: state the condition under which the claim holds")
    parts = tuple(c for c in (under, without, interaction) if c is not None)
    for name, c in (("under", under), ("without", without), ("interaction", interaction)):
        if c is not None and (not isinstance(c, Comparison) or c.parts):
            raise ValueError(f"{name}: expected a single Comparison from compare()/family()")
    detail = f"when {condition}: {under.line()}; without: {without.line()}"
    if interaction is not None:
        detail += f"; contrast: {interaction.line()}"
    if "not measured" in (under.verdict, without.verdict) or (
            interaction is not None and interaction.verdict == "not measured"):
        return replace(not_measured(detail, label=label), parts=parts)
    if under.verdict == "verified":
        shown = without.verdict == "refuted" or (interaction is not None
                                                 and interaction.verdict == "verified")
        verdict = "qualified" if shown else "verified"
    else:
        verdict = under.verdict
    return replace(under, verdict=verdict, label=label, note=detail, parts=parts)
