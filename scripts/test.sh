#!/usr/bin/env bash
# Set up phils with its test dependencies, then run the test suite (offline, CPU only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
# The Neovim terminal test draws in tmux (Debian's package; present on these machines).
if ! command -v tmux >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux
fi
exec .venv/bin/python -m pytest -q -ra "$@"
