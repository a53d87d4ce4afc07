"""LoRA adapters on the base model: loaded by phils, merged or not, they give
the same logits as peft's own PeftModel, and different ones from the base."""

from __future__ import annotations

import pytest
import torch

from phils.config import EngineSettings
from phils.engine.errors import ModelLoadError
from phils.engine.loading.loader import load_model

peft = pytest.importorskip("peft", reason="needs peft (the dev and lora extras install it)")


@pytest.fixture(scope="module")
def adapter(tiny_model, tmp_path_factory):
    """A LoRA adapter on every Phi projection, with non-zero weights, and peft's own logits for it."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    ids = torch.tensor([[5, 17, 99, 3, 250, 1000, 42]])
    with torch.no_grad():
        base_logits = base(ids).logits
    config = peft.LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                             target_modules=["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"])
    tuned = peft.get_peft_model(base, config).eval()
    directory = tmp_path_factory.mktemp("lora")
    tuned.save_pretrained(directory)
    with torch.no_grad():
        tuned_logits = tuned(ids).logits
    return directory, ids, base_logits, tuned_logits


@pytest.mark.parametrize("merge", [True, False])
def test_the_adapter_changes_the_model_exactly_as_peft_does(tiny_model, adapter, merge):
    directory, ids, base_logits, tuned_logits = adapter
    loaded = load_model(EngineSettings(model=str(tiny_model), adapter=str(directory), merge_adapter=merge,
                                       cpu_kernels="torch", threads=1))
    with torch.no_grad():
        logits = loaded.model(ids).logits
    assert torch.allclose(logits, tuned_logits, atol=1e-5)
    assert not torch.allclose(logits, base_logits, atol=1e-3)
    assert isinstance(loaded.model, peft.PeftModel) != merge  # merged: a plain model again


def test_a_directory_without_an_adapter_is_a_clear_error(tiny_model, tmp_path):
    with pytest.raises(ModelLoadError, match="not an adapter directory"):
        load_model(EngineSettings(model=str(tiny_model), adapter=str(tmp_path), cpu_kernels="torch"))


def test_pickle_adapter_weights_are_refused_unless_allowed(tiny_model, adapter, tmp_path):
    directory = adapter[0]
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text((directory / "adapter_config.json").read_text())
    (pickled / "adapter_model.bin").write_bytes(b"not really")
    with pytest.raises(ModelLoadError, match="allow_pickle"):
        load_model(EngineSettings(model=str(tiny_model), adapter=str(pickled), cpu_kernels="torch"))
