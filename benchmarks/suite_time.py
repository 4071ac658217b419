"""Wall time of the verification suite (``pytest verification/``, default selection: not slow).

    python -m benchmarks.suite_time                     # prints a one-row table
    python -m benchmarks.suite_time --pytest-args "-m slow"
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import machine_info, markdown_table
from ebmref.cli import ArgumentParser

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m benchmarks.suite_time",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--pytest-args", default="", help="extra pytest arguments, one quoted string")
    args = p.parse_args(argv)
    extra = shlex.split(args.pytest_args)
    # The project's environment runs its tests (the benchmark env may lack pytest).
    venv = ROOT / ".venv" / "bin" / "python"
    python = str(venv) if venv.exists() else sys.executable
    cmd = [python, "-m", "pytest", "verification/", "-q", "-p", "no:cacheprovider", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", tail)}
    print("## Verification suite wall time\n")
    print(f"Machine: {machine_info()}\n")
    print(markdown_table(["command", "wall time (s)", "passed", "failed", "skipped"],
                         [[" ".join(["pytest verification/", *extra]), f"{wall:.1f}",
                           str(counts.get("passed", 0)), str(counts.get("failed", 0)),
                           str(counts.get("skipped", 0))]]))
    print(f"\npytest: {tail}")
    # Failing tests are reported in the table; only a pytest that could not run is an error.
    return 0 if counts else (proc.returncode or 1)


if __name__ == "__main__":
    sys.exit(main())
