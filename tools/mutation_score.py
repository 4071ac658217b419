"""The mutation score of ebmref/ from mutmut's results and the committed list of equivalent
mutants (tools/mutation.sh runs mutmut, then this).

    python tools/mutation_score.py                  # per-module table and the score
    python tools/mutation_score.py --list survived  # ids of one status (survived, no tests, …)
    python tools/mutation_score.py --check          # exit 1 below --goal (default 97 %)
    python tools/mutation_score.py --draw 0.2       # a random 20 % of the unchecked mutants

mutmut (3.8.1) keeps one ``mutants/<path>.meta`` JSON file per mutated source file, with the
test run's exit code per mutant id. Status: killed (a test failed), timeout (the tests ran
past mutmut's CPU-time limit: an infinite loop or a blow-up, detected), survived (every test
that reaches the mutated function passed), no tests (no selected test reaches it), not checked
(not run yet). Equivalent mutants — no test can or should tell them apart from the original —
are the ids in tools/mutation_survivors.md (any backquoted ``ebmref….__mutmut_N``), each with
its argument there. Help-text mutants are recognised here, by rule: a mutant whose function is
the original once the text only a reader of ``--help`` sees is removed from both (the ``help``,
``metavar``, ``description`` and ``epilog`` of argparse calls, argument-group titles). The
suite pins what the command lines do, not their wording; those mutants are reported apart and
left out of the score like equivalent ones.

    score = (killed + timeout) / (mutants − equivalent − help text)

An id listed as equivalent that a test kills counts as killed (and is reported as stale).
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

from mutation_sample import draw, estimate, read_sample

ROOT = Path(__file__).resolve().parents[1]
SURVIVORS = ROOT / "tools" / "mutation_survivors.md"
ID = re.compile(r"`(ebmref\.[\w.ǁ]+__mutmut_\d+)`")
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests",
          None: "not checked", 36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout",
          255: "timeout", 34: "skipped", 37: "type check"}
DETECTED = ("killed", "timeout")
COLUMNS = ("mutants", "killed", "timeout", "survived", "no tests", "not checked", "equivalent",
           "help text", "score %")
EXCLUDED = ("equivalent", "help text")
HELP_KEYWORDS = {"help", "metavar", "description", "epilog", "title"}
MUTANT = re.compile(r"(.+)__mutmut_(\d+|orig)$")


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


class _DropHelpText(ast.NodeTransformer):
    """Removes what only ``--help`` shows: help-like keywords, argument-group titles."""

    def visit_Call(self, node: ast.Call) -> ast.Call:
        self.generic_visit(node)
        node.keywords = [k for k in node.keywords if k.arg not in HELP_KEYWORDS]
        if isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument_group":
            node.args = []
        return node


def _functions(tree: ast.Module, prefix: str) -> dict[str, ast.AST]:
    """Mutated functions (module level and in classes) by mutmut's id, ``…__mutmut_orig`` too."""
    found = {}
    for node in tree.body:
        body = node.body if isinstance(node, ast.ClassDef) else [node]
        for f in body:
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and MUTANT.match(f.name):
                found[prefix + f.name] = f
    return found


def _normalised(function: ast.AST) -> str:
    function.name = ""
    return ast.dump(_DropHelpText().visit(function))


def help_text_only(mutants_dir: Path) -> set[str]:
    """Ids of the mutants that differ from their original only in help text (see above)."""
    ids = set()
    for path in sorted((mutants_dir / "ebmref").rglob("*.py")):
        module = ".".join(path.relative_to(mutants_dir).with_suffix("").parts) + "."
        functions = _functions(ast.parse(path.read_text()), module)
        originals = {MUTANT.match(k)[1]: _normalised(f) for k, f in functions.items()
                     if k.endswith("__mutmut_orig")}
        for key, f in functions.items():
            base = MUTANT.match(key)[1]
            if not key.endswith("__mutmut_orig") and originals.get(base) == _normalised(f):
                ids.add(key)
    return ids


def module_of(mutant: str) -> str:
    """``ebmref.samplers.x_mala__mutmut_3`` → ``ebmref.samplers``."""
    return mutant.split(".x")[0] if ".x" in mutant else mutant.rsplit(".", 1)[0]


def kinds(results: dict[str, str], excluded: dict[str, str]) -> dict[str, str]:
    """{id: status}, an excluded id (equivalent, help text) as such unless a test detects it."""
    return {m: excluded[m] if m in excluded and s not in DETECTED else s
            for m, s in results.items()}


def tabulate(results: dict[str, str], excluded: dict[str, str]) -> dict[str, Counter]:
    """Counts per module (and ``total``)."""
    rows: dict[str, Counter] = defaultdict(Counter)
    for mutant, kind in kinds(results, excluded).items():
        for key in (module_of(mutant), "total"):
            rows[key]["mutants"] += 1
            rows[key][kind] += 1
    return rows


def score(c: Counter) -> float:
    """(killed + timeout) / (mutants − equivalent − help text), in %."""
    denominator = c["mutants"] - sum(c[k] for k in EXCLUDED)
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
    p.add_argument("--draw", type=float, metavar="F",
                   help="print a random fraction F of each module's unchecked mutants instead")
    p.add_argument("--seed", type=int, default=0, help="seed of --draw")
    args = p.parse_args(argv)
    results = load_results(args.mutants)
    if not results:
        print(f"no mutmut results under {args.mutants}; run tools/mutation.sh first",
              file=sys.stderr)
        return 2
    equivalent = load_equivalent(args.survivors)
    excluded = dict.fromkeys(help_text_only(args.mutants), "help text")
    excluded.update(dict.fromkeys(equivalent, "equivalent"))
    found = kinds(results, excluded)
    if args.list:
        print("\n".join(sorted(m for m, s in found.items() if s == args.list)))
        return 0
    if args.draw is not None:
        print("\n".join(draw(found, args.draw, args.seed, module_of)))
        return 0
    rows = tabulate(results, excluded)
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
          f"{total['mutants'] - total['equivalent'] - total['help text']} non-equivalent "
          f"mutants; {total['equivalent']} equivalent, {total['help text']} help text, "
          f"{total['not checked']} not checked)")
    achieved = score(total)
    sample = read_sample(args.mutants / "sample.txt")
    if sample:
        est = estimate(found, sample, module_of)
        achieved = est.score
        print(f"estimated over all mutants from a random sample of {est.sampled} of the "
              f"{est.population} unchecked: {est.score:.1f} % [95 % CI {est.low:.1f}, "
              f"{est.high:.1f}] ({est.undetected:.0f} undetected)"
              + (f"; {est.outside} unchecked mutants outside any sample" if est.outside else ""))
    return 1 if args.check and achieved < args.goal else 0


if __name__ == "__main__":
    sys.exit(main())
