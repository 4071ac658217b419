"""The Markdown of a conformance Report: the layout (title, the α split, the 7-column table, the
design bullets, the verdict line) for a passing and a failing report, and the number format of
the value and p-value cells (4 significant digits between 1e-3 and 1e5 and for 0, scientific
notation outside, non-finite values as written by Python).
"""

from __future__ import annotations

import math

import pytest

from ebmref.conformance import Report, Row
from ebmref.conformance.report import _fmt

HEADER = ("| target | statistic (null law) | value | p-value | α | detectable effect | verdict |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")


def test_markdown_of_a_passing_report():
    report = Report("demo", 1e-6, 7, [Row("a|b", "s", 0.5, 0.25, 1e-6, "d")], ["line 1"])
    assert report.markdown() == (
        "### demo\n\nTotal α = 1.0e-06, split over 1 rows (Bonferroni: α/1 = 1.00e-06 each); "
        "seed 7; detectable effects from the design, at power ≥ 1 − 1e-3.\n\n" + HEADER +
        "\n| a\\|b | s | 0.5 | 0.25 | 1.00e-06 | d | **pass** |\n\n- line 1\n\n"
        "Verdict: **pass** (all rows pass).")


def test_markdown_of_a_failing_report():
    rows = [Row("t", "s", 2.0, 0.5, 1e-6, "e"), Row("u", "s", 3.0, 1e-9, 1e-6, "e")]
    assert Report("bad", 2e-6, 0, rows).markdown() == (
        "### bad\n\nTotal α = 2.0e-06, split over 2 rows (Bonferroni: α/2 = 1.00e-06 each); "
        "seed 0; detectable effects from the design, at power ≥ 1 − 1e-3.\n\n" + HEADER +
        "\n| t | s | 2 | 0.5 | 1.00e-06 | e | **pass** |"
        "\n| u | s | 3 | 1.000e-09 | 1.00e-06 | e | **fail** |\n\n\n"
        "Verdict: **fail** (1 of 2 rows fail).")


@pytest.mark.parametrize("value, text", [
    (0.0, "0"), (1.0, "1"), (0.001, "0.001"), (1234.5678, "1235"), (1e5, "1.000e+05"),
    (100_000.5, "1.000e+05"), (2.5e-4, "2.500e-04"), (-0.5, "-0.5"),
    (math.nan, "nan"), (math.inf, "inf"),
])
def test_cell_number_format(value, text):
    assert _fmt(value) == text
