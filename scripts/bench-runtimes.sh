#!/usr/bin/env bash
# One sitting on this machine: phils int8 and int4 and llama.cpp q4_0 (built natively
# from PyPI's llama-cpp-python sources) on the same random weights of Phi-2's shape.
#   bash scripts/bench-runtimes.sh [MODEL_DIR] [RUNTIMES]
# Builds what is missing first (the model ~1 min, llama.cpp ~5-35 min, the GGUF ~2 min);
# results go to bench/results/runtimes-phi2-shape.{md,json}. Not part of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-/tmp/phi2-shape}"
runtimes="${2:-int8,int4,llama.cpp}"
[[ -f "$model/config.json" ]] || .venv/bin/phils make-test-model "$model" --shape phi-2
llama="$(bash scripts/build-llama-server.sh --native)"
gguf="$model-gguf/q4_0.gguf"
if [[ ! -f "$gguf" ]]; then
    mkdir -p "$model-gguf"
    .venv/bin/python scripts/hf-to-gguf.py "$llama" "$model" "$model-gguf/f32.gguf" f32 >&2
    "$llama/bin/llama-quantize" "$model-gguf/f32.gguf" "$gguf" q4_0 >&2
    rm -f "$model-gguf/f32.gguf"
fi
exec .venv/bin/phils bench runtimes --model "$model" --runtimes "$runtimes" --gguf "$gguf" \
    --llama-server "$llama/bin/llama-server" \
    --file .venv/lib/python3.11/site-packages/pygls/workspace/text_document.py --name "$(basename "$model")"
