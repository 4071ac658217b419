"""The mutation score of ebmref/ from mutmut's results and the committed list of equivalent
mutants (tools/mutation.sh runs mutmut, then this).

    python tools/mutation_score.py                  # per-module table and the score
    python tools/mutation_score.py --list survived  # ids of one status (survived, no tests, …)
    python tools/mutation_score.py --check          # exit 1 below --goal (default 97 %)

mutmut (3.8.1) keeps one ``mutants/<path>.meta`` JSON file per mutated source file, with the
test run's exit code per mutant id. Status: killed (a test failed), timeout (the tests ran
past mutmut's CPU-time limit: an infinite loop or a blow-up, detected), survived (every test
that reaches the mutated function passed), no tests (no selected test reaches it), not checked
(not run yet). Equivalent mutants — no test can or should tell them apart from the original —
are the ids in tools/mutation_survivors.md (any backquoted ``ebmref….__mutmut_N``), each with
its argument there.

    score = (killed + timeout) / (mutants − equivalent)

An id listed as equivalent that a test kills counts as killed (and is reported as stale).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SURVIVORS = ROOT / "tools" / "mutation_survivors.md"
ID = re.compile(r"`(ebmref\.[\w.ǁ]+__mutmut_\d+)`")
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests",
          None: "not checked", 36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout",
          255: "timeout", 34: "skipped", 37: "type check"}
DETECTED = ("killed", "timeout")
COLUMNS = ("mutants", "killed", "timeout", "survived", "no tests", "not checked", "equivalent",
           "score %")


def load_results(mutants_dir: Path) -> dict[str, str]:
    """{mutant id: status} over every ``.meta`` file under ``mutants_dir/ebmref``."""
    results = {}
    for meta in sorted((mutants_dir / "ebmref").rglob("*.py.meta")):
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        for key, code in codes.items():
            results[key] = STATUS.get(code, f"exit {code}")
    return results


def load_equivalent(path: Path) -> set[str]:
    """The ids argued equivalent in ``path`` (empty when the file does not exist)."""
    return set(ID.findall(path.read_text())) if path.exists() else set()


def module_of(mutant: str) -> str:
    """``ebmref.samplers.x_mala__mutmut_3`` → ``ebmref.samplers``."""
    return mutant.split(".x")[0] if ".x" in mutant else mutant.rsplit(".", 1)[0]


def tabulate(results: dict[str, str], equivalent: set[str]) -> dict[str, Counter]:
    """Counts per module (and ``total``); an equivalent id counts as equivalent unless killed."""
    rows: dict[str, Counter] = defaultdict(Counter)
    for mutant, status in results.items():
        kind = "equivalent" if mutant in equivalent and status not in DETECTED else status
        for key in (module_of(mutant), "total"):
            rows[key]["mutants"] += 1
            rows[key][kind] += 1
    return rows


def score(c: Counter) -> float:
    """(killed + timeout) / (mutants − equivalent), in %."""
    denominator = c["mutants"] - c["equivalent"]
    return 100.0 * (c["killed"] + c["timeout"]) / denominator if denominator else 100.0


def markdown(rows: dict[str, Counter]) -> str:
    lines = ["| module | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for module in sorted(k for k in rows if k != "total") + ["total"]:
        c = rows[module]
        cells = [str(c[k]) for k in COLUMNS[:-1]] + [f"{score(c):.1f}"]
        lines.append(f"| {module} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mutants", type=Path, default=ROOT / "mutants", help="mutmut's directory")
    p.add_argument("--survivors", type=Path, default=SURVIVORS,
                   help="the list of equivalent mutants")
    p.add_argument("--list", metavar="STATUS", help="print the ids with this status instead")
    p.add_argument("--check", action="store_true", help="exit 1 when the score is below --goal")
    p.add_argument("--goal", type=float, default=97.0, help="the score --check asks for (%%)")
    args = p.parse_args(argv)
    results = load_results(args.mutants)
    if not results:
        print(f"no mutmut results under {args.mutants}; run tools/mutation.sh first",
              file=sys.stderr)
        return 2
    equivalent = load_equivalent(args.survivors)
    if args.list:
        kind = {m: ("equivalent" if m in equivalent and s not in DETECTED else s)
                for m, s in results.items()}
        print("\n".join(sorted(m for m, s in kind.items() if s == args.list)))
        return 0
    rows = tabulate(results, equivalent)
    print(markdown(rows))
    stale = sorted(m for m in equivalent if results.get(m) in DETECTED)
    unknown = sorted(m for m in equivalent if m not in results)
    if stale:
        print(f"\n{len(stale)} id(s) listed as equivalent are killed (stale): {stale[:5]} …")
    if unknown:
        print(f"\n{len(unknown)} id(s) listed as equivalent are not mutants of this source: "
              f"{unknown[:5]} …")
    total = rows["total"]
    print(f"\nmutation score: {score(total):.1f} % "
          f"({total['killed'] + total['timeout']} detected of "
          f"{total['mutants'] - total['equivalent']} non-equivalent mutants; "
          f"{total['equivalent']} equivalent, {total['not checked']} not checked)")
    return 1 if args.check and score(total) < args.goal else 0


if __name__ == "__main__":
    sys.exit(main())
