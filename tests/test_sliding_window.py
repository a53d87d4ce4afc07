"""Models with sliding-window layers (Gemma 3's kind) reuse a document's KV cache past their window.

transformers' sliding layer and ONNX Runtime GenAI's sliding cache both drop
what left the window, and neither can then be cut back to the shared prefix:
every keystroke on a document longer than the window prefilled it whole.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest

from phils.config import EngineSettings
from phils.engine import Engine, GenerationRequest
from phils.engine.loading.loader import load_model

WINDOW = 16
PROMPT = "".join(f"def f{i}(a, b):\n    return a + {i} * b\n\n\n" for i in range(12))


@pytest.fixture(scope="module")
def sliding_model(tmp_path_factory) -> Path:
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from phils.tools.testmodel import train_tokenizer

    directory = tmp_path_factory.mktemp("tiny-gemma3")
    tokenizer = train_tokenizer(2048, 400_000)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=WINDOW,
        layer_types=["sliding_attention", "full_attention"], max_position_embeddings=2048,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    Gemma3ForCausalLM(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _typing(settings: EngineSettings) -> tuple[list, str]:
    model = load_model(settings)
    assert len(model.tokenizer(PROMPT).input_ids) > 4 * WINDOW
    engine = Engine(model, context_tokens=2048, cache_bytes=1 << 30)
    engine.generate(GenerationRequest("doc", PROMPT, 8, heal=False))
    typed = engine.generate(GenerationRequest("doc", PROMPT + "x = ", 8, heal=False))
    fresh = Engine(model, context_tokens=2048, cache_bytes=1 << 30).generate(
        GenerationRequest("doc", PROMPT + "x = ", 8, heal=False))
    return [typed, fresh], typed.text


def test_torch_reuses_the_cache_past_the_window(sliding_model):
    (typed, fresh), _ = _typing(EngineSettings(model=str(sliding_model), threads=1, cpu_kernels="torch"))
    assert typed.reused_tokens > 4 * WINDOW and typed.prefill_tokens <= 6
    assert typed.text == fresh.text and typed.new_tokens == fresh.new_tokens == 8


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime_genai") is None, reason="needs phils[int4]")
def test_int4_reuses_the_cache_past_the_window(sliding_model, tmp_path):
    settings = EngineSettings(model=str(sliding_model), threads=1, quantize="int4", cache_dir=str(tmp_path))
    (typed, fresh), _ = _typing(settings)
    assert typed.reused_tokens > 4 * WINDOW and typed.prefill_tokens <= 6
    assert typed.new_tokens == fresh.new_tokens == 8
    short = load_model(dataclasses.replace(settings, context_tokens=256))
    assert short.runtime.window == 256  # the generator is sized by the engine's context, not the model's 2 048
