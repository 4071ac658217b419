"""The result of a conformance check: one row per p-value, a Bonferroni split of the total α,
the effect each row detects by design, and a pass/fail verdict per row.

A row fails iff its p-value is below its level α/m (m = the number of rows; NaN fails), so the
whole check fails a conforming implementation with probability at most α. The ``detectable``
column is computed from the design (sample sizes, known variances, a pilot with its own fixed
seed), never from the sample under test: an error of that size or larger is detected with
probability at least 1 − β (:data:`ebmref.stats.BETA` = 1e-3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ebmref.validation import check_int_range


@dataclass(frozen=True)
class Row:
    """One test of a check: ``statistic`` names the statistic and its null law, ``value`` is
    its observed value, ``alpha`` the level of this row (the check's α over its m rows)."""

    target: str
    statistic: str
    value: float
    p_value: float
    alpha: float
    detectable: str

    @property
    def passed(self) -> bool:
        """p ≥ α/m; a NaN p-value (non-finite states, a failed computation) fails."""
        return bool(self.p_value >= self.alpha)

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"


@dataclass
class Report:
    """A check's table. ``alpha`` is the total false-failure rate (Bonferroni over the rows);
    ``design`` lists the fixed sample sizes and parameters, ``seed`` the generator's seed."""

    title: str
    alpha: float
    seed: int
    rows: list[Row] = field(default_factory=list)
    design: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r.passed for r in self.rows)

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if not r.passed]

    def markdown(self) -> str:
        """The table in Markdown, with the design and the verdict below it."""
        m = len(self.rows)
        intro = (f"Total α = {self.alpha:.1e}, split over {m} rows (Bonferroni: α/{m} = "
                 f"{self.alpha / max(m, 1):.2e} each); seed {self.seed}; detectable effects "
                 "from the design, at power ≥ 1 − 1e-3.")
        header = ("| target | statistic (null law) | value | p-value | α | detectable effect "
                  "| verdict |")
        lines = [f"### {self.title}", "", intro, "", header,
                 "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in self.rows:
            lines.append(f"| {_cell(r.target)} | {_cell(r.statistic)} | {_fmt(r.value)} "
                         f"| {_fmt(r.p_value)} | {r.alpha:.2e} | {_cell(r.detectable)} "
                         f"| **{r.verdict}** |")
        lines += [""] + [f"- {d}" for d in self.design]
        verdict = "all rows pass" if self.passed else \
            f"{len(self.failures)} of {m} rows fail"
        lines += ["", f"Verdict: **{'pass' if self.passed else 'fail'}** ({verdict})."]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.markdown()


def _cell(text: str) -> str:
    """A Markdown table cell: a literal | (absolute values) escaped."""
    return text.replace("|", "\\|")


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    return f"{v:.4g}" if (v == 0 or 1e-3 <= abs(v) < 1e5) else f"{v:.3e}"


def assert_conforms(*reports: Report) -> None:
    """Raise AssertionError with the failing tables when any row of any report fails; the
    pytest one-liner ``assert_conforms(check_sampler(my_fn, kind="ula"))``."""
    if not reports:
        raise ValueError("reports: need at least one Report")
    bad = [r for r in reports if not r.passed]
    if bad:
        raise AssertionError("conformance check failed:\n\n" +
                             "\n\n".join(r.markdown() for r in bad))


def make_generator(seed: int | torch.Generator) -> tuple[torch.Generator, int]:
    """(generator, recorded seed) from an int seed or a ``torch.Generator`` (its initial
    seed is recorded; its current state is used as it is)."""
    if isinstance(seed, torch.Generator):
        return seed, int(seed.initial_seed())
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: expected an int or a torch.Generator, got {seed!r}")
    check_int_range(seed, "seed", 0)
    return torch.Generator().manual_seed(seed), seed
