#!/usr/bin/env bash
# Set up .venv with ebmref, its pinned dependencies and the dev tools (idempotent; offline on
# the project's machines). Prints one line per stage with the time it took.
#
#   EBMREF_TORCH_INDEX=https://download.pytorch.org/whl/cpu ./setup.sh   # a CPU-only torch
#   PYTHON=python3.12 ./setup.sh                                          # another interpreter
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
start=$SECONDS
stage() { printf '[setup %4ss] %s\n' "$((SECONDS - start))" "$*"; }

if [ -z "${EBMREF_TORCH_INDEX:-}" ]; then
  stage "installs torch 2.14.1 + torchvision 0.29.1 (the CUDA build: about 5.5 GB in .venv, \
3.2 GB of it CUDA libraries, which also run on a CPU); set EBMREF_TORCH_INDEX to a package \
index with CPU wheels for a smaller .venv"
else
  stage "installs torch 2.14.1 + torchvision 0.29.1 from $EBMREF_TORCH_INDEX"
fi
[ -x .venv/bin/python ] || { stage "creating .venv with $($PY --version 2>&1)"; "$PY" -m venv .venv; }
pip=(.venv/bin/python -m pip --disable-pip-version-check)
stage "upgrading pip"
"${pip[@]}" install -q --upgrade pip >/dev/null 2>&1 || true
stage "installing the pinned requirements (requirements.txt; pip shows its own progress)"
if [ -n "${EBMREF_TORCH_INDEX:-}" ]; then
  "${pip[@]}" install --index-url "$EBMREF_TORCH_INDEX" --extra-index-url https://pypi.org/simple \
    -r requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
else
  "${pip[@]}" install -r requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
fi
stage "installing ebmref, toy_problems, mnist and digits (editable) with the dev tools"
"${pip[@]}" install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import ebmref, torch, toy_problems, mnist, digits" \
  || { echo "setup: the installed packages do not import" >&2; exit 1; }
stage "done: $(du -sh .venv 2>/dev/null | cut -f1) in .venv; run .venv/bin/python -m pytest verification/ -n 2"
