#!/usr/bin/env bash
# Run every check in one command: ./test.sh [extra pytest arguments, e.g. -m "not slow" -x -k fusion]
# Lint (ruff, Python 3.10 rules), type-check the package (mypy), then the whole pytest suite against the
# built workspace.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
[ -f .venv/bin/activate ] && [ -f install/local_setup.bash ] || { echo "test: not set up yet; run ./setup.sh first" >&2; exit 1; }
set +u
. ./env.sh
set -u
echo "==> ruff check"
ruff check .
echo "==> mypy"
mypy  # the files and options are in pyproject.toml [tool.mypy]
echo "==> pytest"
python -m pytest "$@"
