"""int8 on the CPU: every Linear layer quantized, outputs close to fp32's,
and the model serves completions."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import pytest
import torch

from phils.config import EngineSettings
from phils.engine import Engine, GenerationRequest
from phils.engine.runtimes import mapping
from phils.engine.loading.loader import load_model


def test_int8_quantizes_every_linear_layer_and_stays_close_to_fp32(tiny_model):
    fp32 = load_model(EngineSettings(model=str(tiny_model), cpu_kernels="torch", threads=1))
    int8 = load_model(EngineSettings(model=str(tiny_model), quantize="int8", threads=1))
    linears = sum(isinstance(m, torch.nn.Linear) for m in fp32.model.modules())
    quantized = [m for m in int8.model.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    # All but the output head: int8 logits cost the most quality (HumanEval, Gemma 3 270M,
    # first 40: fp32 4, int8 with an fp32 head 2, all int8 0 passed).
    assert linears > 1 and len(quantized) == linears - 1
    assert [m for m in int8.model.modules() if isinstance(m, torch.nn.Linear)] == [int8.model.get_output_embeddings()]
    assert "int8" in int8.dtype
    ids = torch.tensor([list(range(10, 200, 7))])
    with torch.no_grad():
        a, b = fp32.model(ids).logits[0], int8.model(ids).logits[0]
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    assert cosine.min() > 0.99, cosine
    agreement = (a.argmax(-1) == b.argmax(-1)).float().mean()
    assert agreement >= 0.8, agreement


def test_an_int8_model_generates(tiny_model):
    loaded = load_model(EngineSettings(model=str(tiny_model), quantize="int8", threads=1))
    engine = Engine(loaded, context_tokens=256, cache_bytes=2**20, ignore_stops=True)
    result = engine.generate(GenerationRequest(key="doc", prompt="def add(a, b):\n    return",
                                               max_new_tokens=8, stop=lambda text: None, cancel=threading.Event()))
    assert result.new_tokens == 8 and result.text


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the process's mappings from /proc (Linux)")
@pytest.mark.parametrize("kernels, quantize", [("onednn", "none"), ("onednn", "int8")])
def test_a_converted_model_lets_go_of_the_mapped_checkpoint(tiny_model, kernels, quantize):
    # Phi-2 fp32 with oneDNN held the 10 GB file mapped beside its 10 GB of oneDNN copies.
    loaded = load_model(EngineSettings(model=str(tiny_model), cpu_kernels=kernels, quantize=quantize, threads=1))
    gc.collect()
    # Other tests' models may keep the same file mapped: look at where this model's tensors live.
    reference = load_model(EngineSettings(model=str(tiny_model), cpu_kernels="torch", threads=1))
    assert _in_checkpoint(reference.model)  # the test can tell: unconverted, they point into it
    assert not _in_checkpoint(loaded.model)
    ids = torch.tensor([[10, 20, 30]])
    with torch.no_grad():
        assert torch.isfinite(loaded.model(ids).logits).all()


def _in_checkpoint(model) -> list[str]:
    """The names of ``model``'s tensors that point into a memory-mapped checkpoint file."""
    ranges = mapping.checkpoint_ranges()
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return [name for name, t in tensors if t.layout == torch.strided and any(a <= t.data_ptr() < b for a, b in ranges)]
