#!/usr/bin/env bash
# Install the checkout into a fresh virtual environment (not editable) and run every console
# entry point's --help from a directory outside the repository. The fresh environment borrows
# the already installed dependencies of .venv (a path entry, not a copy: no second torch).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$repo/.venv/bin/python" -m venv "$tmp/venv"
deps=$("$repo/.venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
site=$("$tmp/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$deps" > "$site/ebmref-deps.pth"
"$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "$repo" 2>&1 \
  | grep -v "^WARNING: Location" || true
cd "$tmp"
scripts=$(grep -oE '^ebmref-[a-z0-9-]+' "$repo/pyproject.toml")
for s in $scripts; do
  "$tmp/venv/bin/$s" --help > /dev/null || { echo "check_install: $s --help failed" >&2; exit 1; }
  echo "check_install: $s --help ok (from $PWD)"
done
"$tmp/venv/bin/python" -m toy_problems --help > /dev/null
echo "check_install: python -m toy_problems --help ok"
