"""The verdict records of ebmref/verdict.py as a report reads them: the exact text of
``Comparison.line()`` / ``numbers()`` (numbers recomputed with scipy, formatted as the module
docstring states), the keys and types of ``to_dict()``, the full messages of the argument
checks of ``family``, ``qualified`` and ``holm``, Holm's cap at 1 and p = 0 by hand, and how
labels, parts and "not measured" pass through ``family``, ``qualified`` and ``not_measured``."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import numpy as np
import pytest
from scipy import stats

from ebmref.verdict import Comparison, compare, decide, family, holm, not_measured, qualified

BASE = np.array([1.0, 1.1, 0.9, 1.2, 0.8, 1.05, 0.95, 1.15, 0.85, 1.0])
K10 = math.comb(20, 10)  # relabellings of 10 + 10
SMALL = np.array([1.0, 1.2, 0.9, 1.1, 1.05])
K5 = math.comb(10, 5)  # 252 relabellings of 5 + 5


def _g(x: float) -> str:
    """A number as the report writes it: 3 significant digits, a true minus sign."""
    return f"{x:.3g}".replace("-", "−")


def _exact_p(a, b, alternative, f=np.mean):
    """Exact permutation p of f(a) − f(b), by scipy's full enumeration."""
    def diff(x, y, axis):
        return f(x, axis=axis) - f(y, axis=axis)
    return stats.permutation_test((a, b), diff, vectorized=True, n_resamples=np.inf,
                                  alternative=alternative).pvalue


def _welch_ci(a, b):
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    return f"[{_g(ci.low)}, {_g(ci.high)}]"


# --------------------------------------------------------------------------- line / numbers


def test_line_of_a_refuted_comparison_without_units():
    """The verdict's note in parentheses, Δ, the Welch interval, n, p_Holm, m and α; no units
    means no trailing space before the comma."""
    c = compare(BASE + 1, BASE, direction="less")
    assert c.line() == (f"refuted (opposite effect significant): Δ = 1 {_welch_ci(BASE + 1, BASE)}"
                        f", n = 10 + 10, p_Holm = {2 / K10:.2g} (m = 1), α = 0.05")


def test_line_of_a_median_comparison_names_the_median():
    """Medians are written "Δ median", with their units."""
    a = np.array([3.1, 2.9, 3.4, 3.0, 2.7])
    c = compare(a, a - 2.0, direction="greater", statistic="median", units="nats", n_boot=200)
    lo, hi = c.ci
    p_two = 2 * _exact_p(a, a - 2.0, "greater", np.median)
    assert c.line() == (f"verified: Δ median = 2 [{_g(lo)}, {_g(hi)}] nats, n = 5 + 5, "
                        f"p_Holm = {p_two:.2g} (m = 1), α = 0.05")


def test_line_with_an_equivalence_margin_appends_the_tost_p():
    """With a margin δ the row adds ", TOST ±δ: p_Holm = …" after α (TOST p = the larger of the
    two shifted one-sided exact tests), and the MDE of a "not reproduced" row after that."""
    a, b = SMALL + 0.01, SMALL
    c = compare(a, b, direction="greater", margin=0.1)
    tost = max(_exact_p(a + 0.1, b, "greater"), _exact_p(a - 0.1, b, "less"))
    assert c.p_equivalence == pytest.approx(tost, rel=1e-12)
    assert c.verdict == "not reproduced"
    p_two = min(1.0, 2 * min(_exact_p(a, b, "greater"), _exact_p(a, b, "less")))
    assert c.line() == (f"not reproduced: Δ = {_g(0.01)} {_welch_ci(a, b)}, n = 5 + 5, "
                        f"p_Holm = {p_two:.2g} (m = 1), α = 0.05, TOST ±0.1: p_Holm = "
                        f"{tost:.2g}, MDE = {_g(c.mde)}")


def test_line_of_a_single_seed_per_arm_writes_missing_numbers_as_na():
    """n = 1 + 1: no interval ("[CI: n/a]"), no MDE ("MDE: n/a"), a negative effect with the
    true minus sign; the design cannot reach p ≤ α, so it is underpowered."""
    c = compare([1.0], [3.0], direction="less")
    assert c.ci is None and c.mde is None
    assert c.line() == ("not reproduced (underpowered: minimum attainable p = 1 > α = 0.05): "
                        "Δ = −2 [CI: n/a], n = 1 + 1, p_Holm = 1 (m = 1), α = 0.05, MDE: n/a")


def test_hand_built_records_render_missing_numbers_and_notes():
    """A record built (or read back) with missing numbers writes them "n/a"; a combined record
    (with parts) and no note is just its verdict; numbers() of a not-measured record is its
    reason; a note is shown in parentheses only when there is one."""
    bare = Comparison(verdict="not reproduced")
    assert bare.numbers() == ("Δ = n/a [CI: n/a], n = 0 + 0, p_Holm = n/a (m = 1), α = 0.05, "
                              "MDE: n/a")
    assert dataclasses.replace(bare, margin=0.5).numbers().endswith(
        ", TOST ±0.5: p_Holm = n/a, MDE: n/a")
    assert Comparison(verdict="qualified", parts=(bare,)).line() == "qualified"
    assert Comparison(verdict="verified", note="x", parts=(bare,)).line() == "verified (x)"
    gone = not_measured("no GPU")
    assert gone.numbers() == "no GPU" and gone.line() == "not measured: no GPU"
    assert Comparison(verdict="verified", note="why").line().startswith("verified (why): Δ = n/a")


# --------------------------------------------------------------------------- to_dict


def test_to_dict_has_one_key_per_field_plus_the_line():
    """Keys: the dataclass fields and "line"; ci a list, missing a dict, parts a list of the
    parts' own dicts (each with its line); the whole is strict JSON."""
    ver = compare(BASE + 1, BASE, direction="greater")
    q = qualified(ver, compare(BASE + 1, BASE, direction="less"), condition="c")
    for c in (ver, q):
        d = c.to_dict()
        assert set(d) == {f.name for f in dataclasses.fields(Comparison)} | {"line"}
        assert d["line"] == c.line()
        assert type(d["ci"]) is list and d["ci"] == list(c.ci)
        assert type(d["missing"]) is dict and d["missing"] == dict(c.missing)
        assert type(d["parts"]) is list and d["parts"] == [p.to_dict() for p in c.parts]
        json.dumps(d, allow_nan=False)
    assert len(q.to_dict()["parts"]) == 2 and q.to_dict()["parts"][0]["line"] == ver.line()
    assert not_measured("r").to_dict()["ci"] is None


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_to_dict_refuses_a_non_finite_number_naming_it(bad):
    """Strict JSON: a non-finite number raises, naming the field."""
    with pytest.raises(ValueError, match=rf"^effect: non-finite value {bad!r} in a Comparison$"):
        Comparison(verdict="verified", effect=bad).to_dict()


# --------------------------------------------------------------------------- holm


def test_holm_caps_at_one_and_accepts_p_zero():
    """Adjusted p-values never exceed 1 (0.6·2 → 1); p = 0 (a zero-variance Welch shift) is a
    valid p-value and stays 0."""
    assert holm([0.6, 0.9]) == [1.0, 1.0]
    assert holm([0.3, 0.9, 0.45]) == pytest.approx([0.9, 0.9, 0.9])
    assert holm([0.0, 0.5]) == [0.0, 0.5]
    assert holm([0.5, 0.0, 0.02]) == pytest.approx([0.5, 0.0, 0.04])


@pytest.mark.parametrize("bad", [[0.5, None], [float("nan")], [-0.1], [1.5], [[0.1, 0.2]]])
def test_holm_refuses_values_outside_0_1_with_its_message(bad):
    """A missing (None), NaN or out-of-range p-value, or a 2-D input, raises ValueError."""
    msg = rf"^pvalues: expected a non-empty 1-D sequence in \[0, 1\], got {re.escape(repr(bad))}$"
    with pytest.raises(ValueError, match=msg):
        holm(bad)


# --------------------------------------------------------------------------- family


def test_family_messages_in_full():
    """family's argument errors, word for word."""
    c = compare(BASE + 1, BASE, direction="greater")
    q = qualified(c, c, condition="c")
    with pytest.raises(ValueError, match=r"^comparisons: expected a non-empty mapping name → "
                                         r"Comparison$"):
        family({})
    for bad in (q, 0.01):
        with pytest.raises(ValueError, match=r"^comparisons: 'x' is not a single Comparison "
                                             r"from compare\(\)$"):
            family({"c": c, "x": bad})


def test_family_labels_every_comparison_and_keeps_the_not_measured_ones():
    """Every output is labelled with its name, also when nothing was measured; a not-measured
    comparison listed first neither stops the others nor counts in m."""
    gone = not_measured("no GPU")
    only = family({"A": gone, "B": not_measured("no data")})
    assert list(only) == ["A", "B"] and [only[k].label for k in "AB"] == ["A", "B"]
    assert only["A"].line() == "not measured: no GPU"
    ver = compare(BASE + 1, BASE, direction="greater")
    fam = family({"D": gone, "V": ver, "T": compare(BASE, BASE, direction="greater")})
    assert list(fam) == ["D", "V", "T"]
    assert [fam[k].label for k in "DVT"] == ["D", "V", "T"]
    assert fam["D"].verdict == "not measured" and fam["V"].m == fam["T"].m == 2
    assert fam["V"].p_adjusted == pytest.approx(2 * 2 / K10) and fam["V"].verdict == "verified"


# ------------------------------------------------------------------ not_measured, qualified


def test_not_measured_label_defaults_to_empty():
    """The label is "" unless given, and kept when given; the reason is stripped."""
    assert not_measured(" r ").label == "" and not_measured("r").note == "r"
    assert not_measured("r", label="C30").label == "C30"


def test_qualified_refuses_combined_records_naming_the_argument():
    """under / without / interaction must be single comparisons (no parts), word for word."""
    c = compare(BASE + 1, BASE, direction="greater")
    q = qualified(c, c, condition="c")
    for kwargs, name in (({"under": q, "without": c}, "under"),
                         ({"under": c, "without": q}, "without"),
                         ({"under": c, "without": c, "interaction": q}, "interaction"),
                         ({"under": c, "without": "refuted"}, "without")):
        with pytest.raises(ValueError, match=rf"^{name}: expected a single Comparison from "
                                             r"compare\(\)/family\(\)$"):
            qualified(condition="c", **kwargs)


def test_qualified_note_label_and_parts():
    """The note lists the condition, the comparison without it and the contrast; the label is
    "" unless given; parts are kept, also in a not-measured result (which a not-measured
    contrast alone causes)."""
    ver = compare(BASE + 1, BASE, direction="greater")
    ref = compare(BASE + 1, BASE, direction="less")
    gone = not_measured("no GPU")
    q = qualified(ver, ref, condition="cold chains", interaction=ver)
    assert q.note == (f"when cold chains: {ver.line()}; without: {ref.line()}; "
                      f"contrast: {ver.line()}")
    assert q.verdict == "qualified" and q.label == "" and q.parts == (ver, ref, ver)
    assert qualified(ver, ref, condition="c", label="C7").label == "C7"
    nm = qualified(ver, ref, condition="c", interaction=gone, label="C7")
    assert nm.verdict == "not measured" and nm.label == "C7" and nm.parts == (ver, ref, gone)
    assert nm.line() == (f"not measured (when c: {ver.line()}; without: {ref.line()}; "
                         f"contrast: not measured: no GPU)")
    assert qualified(gone, ref, condition="c").label == ""


def test_decide_refuses_a_tost_p_without_its_margin():
    """A TOST p-value means equivalence inside ±margin: without the margin the note would have
    nothing to say, so the call is refused; with it, the note states it."""
    args = {"p_adjusted": 0.5, "p_predicted": 0.3, "p_opposite": 0.7, "alpha": 0.05}
    with pytest.raises(ValueError, match=r"^margin: the TOST p-value p_equivalence_adjusted "
                                         r"needs the margin it was computed for, got "
                                         r"margin=None$"):
        decide(**args, p_equivalence_adjusted=0.01)
    assert decide(**args, p_equivalence_adjusted=0.01, margin=0.1) == (
        "refuted", "equivalence: |Δ| < 0.1 by TOST")
    assert decide(**args, margin=0.1) == ("not reproduced", "")
