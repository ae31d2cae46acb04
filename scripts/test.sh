#!/usr/bin/env bash
# Install everything the tests need and run the whole suite with coverage.
#
#   bash scripts/test.sh [PYTEST ARGS...]
#
# Needs only Python 3 (with venv and pip) and, for the Azure tests, Node.js with npm.
# Creates .venv if missing, installs cloudput with its test and dev extras, installs the
# pinned Azurite from package.json, then runs pytest under coverage. Coverage includes
# the cloudput processes the tests start (pyproject: [tool.coverage.run] patch).
# Writes reports/junit.xml, reports/coverage.xml and reports/htmlcov/.
# Fails when a test fails, when no test was collected, or when coverage of
# src/cloudput is under COVERAGE_FAIL_UNDER percent.
set -euo pipefail

COVERAGE_FAIL_UNDER=80
PYTHON="${PYTHON:-python3}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
REPORTS="$ROOT/reports"
# Re-install only when the dependency lists changed since the last install.
PIP_STAMP="$VENV/.cloudput-test-install"
NPM_STAMP="$ROOT/node_modules/.cloudput-test-install"

say() { printf '[test.sh] %s\n' "$*" >&2; }

install_python() {
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  if [ ! -f "$PIP_STAMP" ] || [ pyproject.toml -nt "$PIP_STAMP" ]; then
    say "installing cloudput with its test and dev extras"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e '.[test,dev]'
    touch "$PIP_STAMP"
  fi
}

install_node_tools() {
  if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    say "Node.js/npm not found: the Azure tests will be skipped (and fail when CI is set)"
    return
  fi
  if [ ! -x node_modules/.bin/azurite-blob ] || [ ! -f "$NPM_STAMP" ] \
    || [ package-lock.json -nt "$NPM_STAMP" ]; then
    say "installing Azurite (npm ci)"
    npm ci --no-audit --no-fund --loglevel=error
    touch "$NPM_STAMP"
  fi
}

run_pytest() {
  local color=()
  if [ -t 1 ]; then color=(--color=yes); fi
  mkdir -p "$REPORTS"
  rm -rf "$REPORTS/htmlcov" "$REPORTS/coverage.xml" "$REPORTS/junit.xml"
  "$VENV/bin/coverage" erase
  set +e
  "$VENV/bin/coverage" run -m pytest ${color[@]+"${color[@]}"} \
    --junitxml="$REPORTS/junit.xml" "$@" 2>&1 | tee "$REPORTS/pytest-output.txt"
  PYTEST_STATUS=${PIPESTATUS[0]}
  set -e
}

report_coverage() {
  "$VENV/bin/coverage" combine --quiet || true
  "$VENV/bin/coverage" html --quiet -d "$REPORTS/htmlcov" || true
  "$VENV/bin/coverage" xml --quiet -o "$REPORTS/coverage.xml" || true
  set +e
  "$VENV/bin/coverage" report --fail-under="$COVERAGE_FAIL_UNDER"
  COVERAGE_STATUS=$?
  set -e
}

lint() {
  # STYLE.md: ruff format at 88 columns, ruff lint with import sorting, mypy on src/.
  say "lint: ruff check, ruff format --check, mypy src"
  "$VENV/bin/ruff" check src tests scripts benchmarks
  "$VENV/bin/ruff" format --check --quiet src tests scripts benchmarks
  "$VENV/bin/mypy" src
}

install_python
install_node_tools
lint
export COVERAGE_FILE="$ROOT/.coverage"
run_pytest "$@"
report_coverage

summary="$(grep -E '^=+ .*( in [0-9.]+s).* =+$' "$REPORTS/pytest-output.txt" | tail -n 1 || true)"
say "pytest: ${summary:-no summary line (see $REPORTS/pytest-output.txt)}"
say "reports: $REPORTS/junit.xml, $REPORTS/coverage.xml, $REPORTS/htmlcov/index.html"

if [ "$PYTEST_STATUS" -eq 5 ]; then
  say "FAILED: pytest collected no tests (exit 5)"
  exit 1
fi
if [ "$PYTEST_STATUS" -ne 0 ]; then
  say "FAILED: pytest exited with $PYTEST_STATUS"
  exit "$PYTEST_STATUS"
fi
if [ "$COVERAGE_STATUS" -ne 0 ]; then
  say "FAILED: coverage of src/cloudput is under $COVERAGE_FAIL_UNDER% (or no data)"
  exit 1
fi
say "OK"
