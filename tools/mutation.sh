#!/usr/bin/env bash
# Mutation testing of ebmref/ with mutmut, then the score (tools/mutation_score.py).
#
#   tools/mutation.sh                      # every module of ebmref/, one mutmut run per module
#   tools/mutation.sh samplers buffer      # only these modules (names under ebmref/, no .py)
#   MAX_CHILDREN=2 tools/mutation.sh       # parallel mutant runs (default 1: a shared machine)
#   tools/mutation.sh --score              # only print the table from the last results
#   SAMPLE=0.2 tools/mutation.sh           # a random 20 % (SEED=0) of each module's unchecked
#                                          # mutants, then the score estimated from it
#   tools/mutation.sh --survivors [ID|PATTERN …]  # rerun the survivors (after new tests) and
#                                          # these mutants (e.g. of functions since changed)
#
# Prerequisites (mutmut is not a project dependency and CI does not run this):
#   .venv/bin/python -m pip install mutmut==3.8.1
# Run from anywhere; it works in the repository root. Linux (mutmut forks one worker per
# mutant and limits its CPU time with setrlimit).
#
# What it does: mutmut copies the tree to mutants/ (git-ignored), rewrites every function of
# ebmref/ with its mutants behind a switch, runs the selected tests once to learn which tests
# reach which function, then for every mutant runs only those tests (-x, stopping at the first
# failure). Results persist in mutants/: a rerun only runs mutants not checked yet (rm -rf
# mutants/ to start over; python -m mutmut run <id> reruns one). Configuration: [tool.mutmut]
# in pyproject.toml:
#
# * test selection: the in-process part of verification/. Left out, because they are slow and
#   reach ebmref/ only from child processes mutmut cannot trace: the torchrun/spawn runs of
#   test_distributed.py and the kill tests of test_run_integrity.py; the end-to-end studies
#   test_mnist_tiny.py, test_mnist_gpu_study.py and the quick toy report, claims study and
#   digits study;
#   test_benchmarks_speed.py (timings in a subprocess); test_mnist_data/_metrics.py (they test
#   mnist/, not ebmref/); test_code_style.py (it reads the sources, which mutmut rewrites).
#   The selection runs in ~45 s on 2 loaded cores, against ~110 s for the whole suite.
#   One short spawn test (test_collectives_on_two_ranks) stays in: mutmut cannot trace its
#   ranks either, so tools/mutation_child_tests.py adds it to the test map of
#   ebmref.distributed before each run (its ranks run the mutant: they inherit it).
# * per-mutant time limit: CPU time (15 + 5) … (estimated test time + 5 s) × 5 × 2 (mutmut's
#   timeout_constant and timeout_multiplier): a mutant that loops or blows up is stopped and
#   counted as detected ("timeout").
#
# Equivalent mutants, with the argument for each, are listed in tools/mutation_survivors.md;
# help-text-only mutants are recognised by rule; the score is (killed + timeout) / (mutants −
# equivalent − help text), estimated with a 95 % interval after a SAMPLE run.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
python=${PYTHON:-"$repo/.venv/bin/python"}
[ -x "$python" ] || python=$(command -v python3)
children=${MAX_CHILDREN:-1}

"$python" -c "import mutmut" 2>/dev/null || {
  echo "mutation.sh: mutmut is not installed: $python -m pip install mutmut==3.8.1" >&2
  exit 2
}
if [ -n "${SAMPLE:-}" ]; then
  [ -d mutants/ebmref ] || { echo "mutation.sh: SAMPLE needs a first run (mutants/)" >&2; exit 2; }
  "$python" tools/mutation_score.py --draw "$SAMPLE" --seed "${SEED:-0}" > mutants/sample.txt
  "$python" tools/mutation_child_tests.py
  echo "== a sample of $(wc -l < mutants/sample.txt) unchecked mutants (log: mutants/mutation-sample.log)"
  xargs -a mutants/sample.txt "$python" -m mutmut run --max-children "$children" \
    > mutants/mutation-sample.log 2>&1 || { tail -n 30 mutants/mutation-sample.log >&2; exit 1; }
elif [ "${1:-}" = "--survivors" ]; then
  shift
  { "$python" tools/mutation_score.py --list survived
    "$python" tools/mutation_score.py --list "no tests"
    printf '%s\n' "$@"; } | grep . > mutants/rerun.txt
  "$python" tools/mutation_child_tests.py
  echo "== $(wc -l < mutants/rerun.txt) survivors and named mutants (log: mutants/mutation-rerun.log)"
  xargs -a mutants/rerun.txt -d '\n' "$python" -m mutmut run --max-children "$children" \
    > mutants/mutation-rerun.log 2>&1 || { tail -n 30 mutants/mutation-rerun.log >&2; exit 1; }
elif [ "${1:-}" != "--score" ]; then
  if [ $# -gt 0 ]; then
    modules=("$@")
  else
    mapfile -t modules < <(cd ebmref && find . -name '*.py' ! -name '__init__.py' \
      | sed 's|^\./||; s|\.py$||; s|/|.|g' | sort)
  fi
  mkdir -p mutants
  for m in "${modules[@]}"; do
    [ -f "ebmref/${m//.//}.py" ] || { echo "mutation.sh: no module ebmref/${m//.//}.py" >&2; exit 2; }
    log="mutants/mutation-$m.log"
    echo "== ebmref.$m (log: $log)"
    "$python" tools/mutation_child_tests.py  # tests that reach ebmref/ from child processes
    # The trailing dot keeps e.g. ebmref.config from also selecting ebmref.conformance.
    if ! "$python" -m mutmut run --max-children "$children" "ebmref.$m.*" > "$log" 2>&1; then
      tr '\r' '\n' < "$log" | tail -n 30 >&2
      echo "mutation.sh: mutmut failed on ebmref.$m (log: $log)" >&2
      exit 1
    fi
    tr '\r' '\n' < "$log" | grep -E '[0-9]+ mutations/second' || true
  done
fi
"$python" tools/mutation_score.py
