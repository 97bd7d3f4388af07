#!/usr/bin/env bash
# Installs what the tests need (a minimal sandbox runtime) and runs the whole suite: lint, types, layers,
# then pytest. Extra arguments go to pytest (e.g. a path, or -k).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/install.sh" --test --runtime "${EXECBRIDGE_TEST_RUNTIME:-minimal}"
cd "$here"
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
.venv/bin/mypy                 # strict, on src/ (pyproject.toml [tool.mypy])
.venv/bin/lint-imports         # the layer contract (pyproject.toml [tool.importlinter])
# pytest exits 5 when it collected nothing; that must fail CI like any other failure.
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
