#!/usr/bin/env bash
# phils' GPU paths on a CUDA machine, in one sitting:
#   1. the CUDA tests (tests/test_cuda.py): fp16/bf16, KV reuse, cancel, judging, the server, GPTQ's six branches;
#   2. keystroke replays of Phi-2's exact shape (random weights; speed does not depend on their values) in
#      fp16 (cache off and on), GPTQ 4-bit (TheBloke's main branch), bf16 and GPTQ 8-bit.
# Usage: bash scripts/gpu-check.sh [OUT_DIR]   (results: OUT_DIR, default bench/results; log on stdout)
# PYTHON picks the interpreter (default .venv/bin/python, set up with PHILS_TORCH=torch and the gptq extra).
# Each step has a time limit and a failed step does not stop the next.
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-bench/results}")
py=${PYTHON:-.venv/bin/python}
work=${PHILS_GPU_WORK:-$(mktemp -d)}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

step() {  # step SECONDS NAME COMMAND...: run with a limit, say how it ended and how long it took
    local limit=$1 name=$2 started=$SECONDS
    shift 2
    echo "=== $name"
    timeout "$limit" "$@"
    echo "=== $name: exit $? in $((SECONDS - started)) s"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
"$py" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__)"
step 60 doctor "$py" -m phils doctor

file=$("$py" -c "import pygls.workspace.text_document as m; print(m.__file__)")
replay=(--file "$file" --prompt-lines 80 --requests 8 --new-tokens 16 --out "$out" --set engine.device=cuda)

step 200 "CUDA tests (no GPTQ)" "$py" -m pytest -q -rA -p no:cacheprovider tests/test_cuda.py -k "not gptq"
step 120 "Phi-2 shape, fp16 checkpoint" "$py" -m phils make-test-model "$work/phi2" --shape phi-2 --dtype float16
step 150 "keystrokes fp16" "$py" -m phils bench keystrokes --model "$work/phi2" "${replay[@]}" \
    --modes cache-off,cache-on --off-requests 4 --name phi2-shape-cuda-fp16
step 300 "CUDA tests (GPTQ)" "$py" -m pytest -q -rA -p no:cacheprovider tests/test_cuda.py -k gptq
step 60 "Phi-2 shape, GPTQ 4-bit 128g" "$py" -m phils make-test-model "$work/phi2-gptq4" --shape phi-2 --gptq-bits 4
step 150 "keystrokes GPTQ 4-bit" "$py" -m phils bench keystrokes --model "$work/phi2-gptq4" "${replay[@]}" \
    --modes cache-on --name phi2-shape-cuda-gptq4
step 120 "keystrokes bf16" "$py" -m phils bench keystrokes --model "$work/phi2" "${replay[@]}" \
    --set engine.dtype=bfloat16 --modes cache-on --name phi2-shape-cuda-bf16
step 60 "Phi-2 shape, GPTQ 8-bit 128g act-order" "$py" -m phils make-test-model "$work/phi2-gptq8" --shape phi-2 \
    --gptq-bits 8 --gptq-act-order
step 150 "keystrokes GPTQ 8-bit" "$py" -m phils bench keystrokes --model "$work/phi2-gptq8" "${replay[@]}" \
    --modes cache-on --name phi2-shape-cuda-gptq8
