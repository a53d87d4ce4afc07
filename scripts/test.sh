#!/usr/bin/env bash
# Set up phils with its test dependencies, then run the test suite (offline, CPU only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
exec .venv/bin/python -m pytest -q -ra "$@"
