#!/usr/bin/env bash
# The README's first command: install cloudput in .venv, start local S3, GCS and Azure
# emulators, upload a real directory to each, SIGKILL one upload part-way, resume it, and
# show that every object read back is identical to its file.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
if command -v npm >/dev/null 2>&1; then
  npm ci --no-audit --no-fund --loglevel=error
fi
exec .venv/bin/python scripts/demo.py "$@"
