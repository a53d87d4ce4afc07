"""phils on a CUDA GPU: half precision, KV reuse, cancel, mid-code judging, the server, GPTQ kernels.

CI has no GPU, so this module skips there; it runs where torch sees CUDA (the
project's GPU check, scripts/gpu-check.sh).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
import torch

from phils.config import EngineSettings
from phils.engine import GenerationRequest, load_model

from conftest import server_env
from test_engine import PROMPT, check_reuse_matches_fresh, engine_for

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

# TheBloke/phi-2-GPTQ's six branches: (bits, group size, act-order).
GPTQ_BRANCHES = [(4, 128, False), (4, 32, True), (4, 64, True), (4, 128, True), (8, 128, True), (8, 32, True)]


def on_gpu(model, dtype="auto", **settings):
    return load_model(EngineSettings(model=str(model), device="cuda", dtype=dtype, **settings))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_loads_on_the_gpu_and_generates_the_same_twice(tiny_model, dtype):
    loaded = on_gpu(tiny_model, dtype)
    weights = next(loaded.model.parameters())
    assert loaded.device == "cuda" and loaded.dtype == dtype
    assert weights.is_cuda and weights.dtype == getattr(torch, dtype)
    first = engine_for(loaded).generate(GenerationRequest("a", PROMPT, max_new_tokens=12))
    second = engine_for(loaded).generate(GenerationRequest("a", PROMPT, max_new_tokens=12))
    assert first.new_tokens == 12 and first.reason == "length"
    assert first.text == second.text


def test_reusing_the_kv_prefix_on_the_gpu_gives_the_fresh_result(tiny_model):
    """float32 on CUDA: the cached and the fresh prompt must pick the same tokens."""
    check_reuse_matches_fresh(on_gpu(tiny_model, "float32"))


def test_half_precision_reuse_keeps_the_next_token_logits(tiny_model):
    """fp16 sums in another order when the prompt comes in pieces: the logits must stay close."""
    loaded = on_gpu(tiny_model, "float16")
    ids = loaded.tokenizer(PROMPT * 4, return_tensors="pt").input_ids.cuda()
    with torch.inference_mode():
        whole = loaded.model(ids).logits[0, -1].float()
        start = loaded.model(ids[:, :-7], use_cache=True)
        rest = loaded.model(ids[:, -7:], past_key_values=start.past_key_values).logits[0, -1].float()
    assert (whole - rest).abs().max() <= 0.02 * whole.abs().max()


def test_a_cancelled_request_on_the_gpu_stops_between_tokens(tiny_model):
    loaded = on_gpu(tiny_model)
    cancel, calls = threading.Event(), []

    def stop(text):
        calls.append(text)
        if len(calls) == 3:
            cancel.set()
        return None

    result = engine_for(loaded, ignore_stops=False).generate(
        GenerationRequest("doc", PROMPT, max_new_tokens=500, stop=stop, cancel=cancel))
    assert result.reason in ("cancelled", "eos")
    if result.reason == "cancelled":
        assert result.new_tokens == 3


def test_mid_code_candidates_are_judged_on_the_gpu_and_the_cache_stays_usable(tiny_model):
    loaded = on_gpu(tiny_model)
    engine = engine_for(loaded, ignore_stops=False)
    prompt = 'def total(values):\n    """Sum the values."""\n    result = 0\n    '
    judged = engine.generate(GenerationRequest("doc", prompt, max_new_tokens=24, candidates=3,
                                               fit_suffix="    return result\n\n\nprint(total([1, 2]))\n"))
    assert judged.reason != "error"
    again = engine.generate(GenerationRequest("doc", prompt + "r", max_new_tokens=4))
    assert again.reused_tokens > 0


def test_the_server_answers_from_the_gpu(tiny_model, tmp_path):
    source = tmp_path / "add.py"
    source.write_text('def add(a, b):\n    """Return the sum of a and b."""\n    \n')
    for shared in ([], ["--shared"]):
        done = subprocess.run(
            [sys.executable, "-m", "phils", "complete", str(source), "--line", "2", "--col", "4", *shared,
             "--model", str(tiny_model), "--set", "engine.device=cuda"],
            capture_output=True, text=True, timeout=300, env=server_env())
        assert done.returncode == 0, done.stderr[-2000:]
        answer = json.loads(done.stdout)
        assert answer is None or "text" in answer


@pytest.mark.parametrize("bits,group,act_order", GPTQ_BRANCHES)
def test_every_gptq_branch_loads_on_gpu_kernels_and_generates(tmp_path, bits, group, act_order):
    pytest.importorskip("gptqmodel", reason="needs gptqmodel (the gptq extra)")
    from phils.tools.testmodel import make_random_gptq

    directory = make_random_gptq(tmp_path / "gptq", shape="small", bits=bits, group_size=group, desc_act=act_order)
    loaded = on_gpu(directory)
    quantized = [m for m in loaded.model.modules() if hasattr(m, "qweight")]
    assert len(quantized) == 4 * 6 and all(m.qweight.is_cuda for m in quantized)
    print(f"{bits}-bit {group}g act-order {act_order}: {loaded.dtype}")
    result = engine_for(loaded).generate(GenerationRequest("d", "def f(x):\n    return", max_new_tokens=6))
    assert result.new_tokens == 6


def test_a_calibrated_gptq_model_computes_the_same_on_gpu_as_on_cpu(tiny_model, tmp_path):
    """The GPU kernels agree with the CPU's on a model gptqmodel really quantized (4-bit, act-order)."""
    gptqmodel = pytest.importorskip("gptqmodel", reason="needs gptqmodel (the gptq extra)")
    import os

    from phils.tools.testmodel import make_test_model
    from transformers import AutoTokenizer

    small = make_test_model(tmp_path / "small", shape="small")
    tokenizer = AutoTokenizer.from_pretrained(small)
    calibration = [dict(tokenizer(text)) for text in (
        "def add(a, b):\n    return a + b\n", "import os\nprint(os.getcwd())\n",
        "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n") * 4]
    out = tmp_path / "small-gptq"
    here = os.getcwd()
    os.chdir(tmp_path)  # gptqmodel writes a logs/ folder into the working directory
    try:
        model = gptqmodel.GPTQModel.load(str(small), gptqmodel.QuantizeConfig(bits=4, group_size=64, desc_act=True),
                                         device="cuda")
        model.quantize(calibration, batch_size=1)
        model.save(str(out))
    finally:
        os.chdir(here)
    del model
    ids = torch.tensor([[5, 17, 99, 3, 250, 1000, 42, 7]])
    cpu = load_model(EngineSettings(model=str(out), device="cpu", cpu_kernels="torch", threads=4))
    gpu = on_gpu(out, "float16")
    with torch.inference_mode():
        expected = cpu.model(ids).logits.float()
        got = gpu.model(ids.cuda()).logits.float().cpu()
    assert (got - expected).abs().max() <= 0.02 * expected.abs().max()
