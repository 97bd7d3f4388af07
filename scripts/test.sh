#!/usr/bin/env bash
# Installs what the tests need (a minimal sandbox runtime, the real upstream servers) and runs the whole
# suite, phase by phase, printing each phase's time: lint, types, layers, then the fast tier (everything
# that needs nothing beyond this repo's install) and the slow tiers, each marked by what it needs
# (browser: Debian's headless chromium for the playground; real_server: llama-cpp-python's and LiteLLM's
# servers). With arguments, the checks run and then pytest with those arguments only (e.g. a path, -k,
# or -m real_server).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
timings=()
phase() {
  local name=$1 started=$SECONDS status=0
  shift
  echo "== $name"
  "$@" || status=$?
  timings+=("$(printf '%-26s %5d s%s' "$name" $((SECONDS - started)) "$([ $status -eq 0 ] || echo "  FAILED ($status)")")")
  return $status
}
report() { printf '== phase times\n'; printf '   %s\n' "${timings[@]}"; }
trap report EXIT

phase "install" "$here/scripts/install.sh" --test --runtime "${EXECBRIDGE_TEST_RUNTIME:-minimal}"
cd "$here"
phase "ruff" .venv/bin/ruff check src tests benchmarks
phase "ruff format" .venv/bin/ruff format --check src tests benchmarks
phase "mypy" .venv/bin/mypy                 # strict, on src/ (pyproject.toml [tool.mypy])
phase "import layers" .venv/bin/lint-imports  # the layer contract (pyproject.toml [tool.importlinter])
# pytest exits 5 when it collected nothing; that must fail CI like any other failure.
pytest=(.venv/bin/python -m pytest -q -p no:cacheprovider)
if [ $# -gt 0 ]; then
  phase "pytest $*" "${pytest[@]}" "$@"
  exit 0
fi
phase "fast tier" "${pytest[@]}" -m "not real_server and not browser"
phase "browser (playground)" "${pytest[@]}" -m browser
phase "real servers (slow tier)" "${pytest[@]}" -m real_server
