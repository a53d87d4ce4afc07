#!/usr/bin/env bash
# The llama-server adapter against a real llama.cpp server: build llama-server from
# PyPI's llama-cpp-python source package (once; cached, ~4-10 min on 2 cores), then
# run tests/test_llama_server.py. Needs scripts/setup.sh --dev first (test.sh does it).
set -euo pipefail
cd "$(dirname "$0")/.."
PHILS_LLAMA_SERVER="$(bash scripts/build-llama-server.sh)"
export PHILS_LLAMA_SERVER
exec .venv/bin/python -m pytest -q -ra tests/test_llama_server.py "$@"
