#!/usr/bin/env bash
# The VS Code real-editor test: install its tools (scripts/setup-editors.sh,
# about 8 minutes on a fresh machine), then run it with missing tools an error.
# Run after scripts/test.sh, which makes .venv (the Neovim test is in the default suite).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh --dev
bash scripts/setup-editors.sh
PHILS_REQUIRE_EDITORS=1 exec .venv/bin/python -m pytest -q -ra tests/test_editor_vscode.py "$@"
