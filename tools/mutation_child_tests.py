"""Map the tests that reach ebmref/ only from child processes onto the functions they run there,
in mutmut's test map (``mutants/mutmut-stats.json``); tools/mutation.sh calls this before every
mutmut run.

mutmut learns which tests reach which function by tracing calls in the pytest process, so a
function that only a spawned rank calls (the process-group branches of ebmref.distributed) has
no tests and its mutants would be reported as "no tests" or survive. The spawned ranks do run
the mutant — mutmut passes the mutant under test to them in the MUTANT_UNDER_TEST environment
variable and they import ebmref from mutants/ through the inherited sys.path — so adding the
test to the map is all that is missing.

    python tools/mutation_child_tests.py     # no-op without mutants/mutmut-stats.json
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATS = ROOT / "mutants" / "mutmut-stats.json"
# module → tests whose child processes call every function of it
CHILD_TESTS = {
    "ebmref.distributed": ["verification/test_distributed.py::test_collectives_on_two_ranks"],
}
# used until mutmut has timed the test itself (its next stats run does)
DEFAULT_DURATION_S = 15.0


def add_child_tests(stats: dict) -> int:
    """Add ``CHILD_TESTS`` to every function of their modules; the number of entries added."""
    tests_by_function = stats["tests_by_mangled_function_name"]
    added = 0
    for function in stats.get("function_hashes", {}):
        module = function.split(".x", 1)[0]
        for test in CHILD_TESTS.get(module, []):
            tests = tests_by_function.setdefault(function, [])
            if test not in tests:
                tests.append(test)
                added += 1
            stats["duration_by_test"].setdefault(test, DEFAULT_DURATION_S)
    return added


def main() -> None:
    if not STATS.exists():
        return
    stats = json.loads(STATS.read_text())
    added = add_child_tests(stats)
    STATS.write_text(json.dumps(stats, indent=4))
    print(f"mutation_child_tests: {added} function-test pairs added to {STATS.name}")


if __name__ == "__main__":
    main()
