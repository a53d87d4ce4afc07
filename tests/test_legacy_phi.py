"""Old-layout ("phi-msft") Phi checkpoints load without remote code.

The unit tests split and rename tensors; the GPTQ test quantizes a tiny random
Phi with gptqmodel on the CPU, re-packs it the way TheBloke/phi-2-GPTQ is laid
out (fused quantized Wqkv, old names, phi-msft config), loads that through
phils, and checks the logits equal the natively quantized model's.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from phils.engine.loading import legacy_phi

OLD_CONFIG = {"model_type": "phi-msft", "n_embd": 64, "n_head": 4, "n_layer": 2, "n_inner": 256,
              "n_positions": 2048, "rotary_dim": 6, "vocab_size": 4096, "activation_function": "gelu_new",
              "layer_norm_epsilon": 1e-5, "auto_map": {"AutoConfig": "configuration_phi.PhiConfig"},
              "quantization_config": {"bits": 4, "group_size": 32, "desc_act": True, "sym": True,
                                      "quant_method": "gptq"}}


def test_the_native_config_keeps_the_shape_and_the_quantization():
    config = legacy_phi.native_config(OLD_CONFIG)
    assert config["model_type"] == "phi" and "auto_map" not in config
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (64, 2, 4)
    assert config["intermediate_size"] == 256 and config["partial_rotary_factor"] == 6 / 16
    assert config["quantization_config"]["bits"] == 4
    assert config["quantization_config"]["checkpoint_format"] == "gptq"


def test_a_fused_quantized_wqkv_splits_into_q_k_v_along_the_output():
    hidden, pack, groups = 64, 8, 2
    qweight = torch.arange(hidden // pack * 3 * hidden, dtype=torch.int32).reshape(hidden // pack, 3 * hidden)
    qzeros = torch.arange(groups * 3 * hidden // pack, dtype=torch.int32).reshape(groups, 3 * hidden // pack)
    scales = torch.rand(groups, 3 * hidden, dtype=torch.float16)
    bias = torch.rand(3 * hidden, dtype=torch.float16)
    g_idx = torch.arange(hidden, dtype=torch.int32) // 32
    old = {"transformer.h.0.mixer.Wqkv." + k: v for k, v in
           dict(qweight=qweight, qzeros=qzeros, scales=scales, bias=bias, g_idx=g_idx).items()}
    new = legacy_phi.convert_tensors(old, OLD_CONFIG)
    for i, proj in enumerate(("q_proj", "k_proj", "v_proj")):
        prefix = f"model.layers.0.self_attn.{proj}."
        assert torch.equal(new[prefix + "qweight"], qweight[:, i * hidden:(i + 1) * hidden])
        assert torch.equal(new[prefix + "qzeros"], qzeros[:, i * hidden // pack:(i + 1) * hidden // pack])
        assert torch.equal(new[prefix + "scales"], scales[:, i * hidden:(i + 1) * hidden])
        assert torch.equal(new[prefix + "bias"], bias[i * hidden:(i + 1) * hidden])
        assert torch.equal(new[prefix + "g_idx"], g_idx)


def test_old_names_map_to_native_ones_and_strangers_are_refused():
    old = {"transformer.embd.wte.weight": torch.zeros(1), "transformer.h.3.ln.bias": torch.zeros(1),
           "transformer.h.3.mixer.out_proj.qweight": torch.zeros(1), "transformer.h.3.mlp.fc2.scales": torch.zeros(1),
           "lm_head.ln.weight": torch.zeros(1), "lm_head.linear.bias": torch.zeros(1)}
    assert set(legacy_phi.convert_tensors(old, OLD_CONFIG)) == {
        "model.embed_tokens.weight", "model.layers.3.input_layernorm.bias", "model.layers.3.self_attn.dense.qweight",
        "model.layers.3.mlp.fc2.scales", "model.final_layernorm.weight", "lm_head.bias"}
    with pytest.raises(ValueError, match="unexpected tensor"):
        legacy_phi.convert_tensors({"transformer.h.0.mystery.weight": torch.zeros(1)}, OLD_CONFIG)


# --- the real thing: gptqmodel quantizes, the test re-packs, phils loads ------------------

def to_old_layout(native_dir: Path, old_dir: Path) -> None:
    """Re-pack a natively laid-out GPTQ Phi the way TheBloke's phi-2-GPTQ is laid out."""
    from safetensors.torch import load_file, save_file

    config = json.loads((native_dir / "config.json").read_text())
    tensors = {}
    for file in native_dir.glob("*.safetensors"):
        tensors.update(load_file(str(file)))
    old: dict[str, torch.Tensor] = {}
    layers = config["num_hidden_layers"]
    for name, tensor in tensors.items():
        if ".self_attn.q_proj." in name or ".self_attn.k_proj." in name or ".self_attn.v_proj." in name:
            continue
        name = (name.replace("model.embed_tokens.", "transformer.embd.wte.")
                .replace("model.final_layernorm.", "lm_head.ln.")
                .replace("lm_head.weight", "lm_head.linear.weight").replace("lm_head.bias", "lm_head.linear.bias")
                .replace(".self_attn.dense.", ".mixer.out_proj.").replace(".input_layernorm.", ".ln.")
                .replace("model.layers.", "transformer.h."))
        old[name] = tensor
    for layer in range(layers):
        prefix = f"model.layers.{layer}.self_attn."
        for part in ("qweight", "qzeros", "scales", "bias", "g_idx"):
            pieces = [tensors[f"{prefix}{p}.{part}"] for p in ("q_proj", "k_proj", "v_proj")]
            dim = 0 if part == "bias" else 1
            old[f"transformer.h.{layer}.mixer.Wqkv.{part}"] = pieces[0] if part == "g_idx" else torch.cat(pieces, dim)
    old_dir.mkdir()
    save_file(old, str(old_dir / "model.safetensors"), metadata={"format": "pt"})
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    rotary = config.get("partial_rotary_factor") or config.get("rope_parameters", {}).get("partial_rotary_factor")
    (old_dir / "config.json").write_text(json.dumps({
        "model_type": "phi-msft", "architectures": ["PhiForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_phi.PhiConfig", "AutoModelForCausalLM": "modeling_phi.PhiForCausalLM"},
        "n_embd": config["hidden_size"], "n_head": config["num_attention_heads"], "n_layer": layers,
        "n_inner": config["intermediate_size"], "n_positions": config["max_position_embeddings"],
        "rotary_dim": int(round(rotary * head_dim)), "vocab_size": config["vocab_size"],
        "activation_function": config["hidden_act"], "layer_norm_epsilon": config["layer_norm_eps"],
        "tie_word_embeddings": False, "torch_dtype": "float16",
        "quantization_config": config["quantization_config"],
    }))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (native_dir / name).exists():
            shutil.copy2(native_dir / name, old_dir / name)


@pytest.fixture(scope="module")
def quantized_tiny(tiny_model, tmp_path_factory):
    gptqmodel = pytest.importorskip("gptqmodel", reason="needs gptqmodel (the gptq extra; CI installs it)")
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("tiny-gptq")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    calibration = [dict(tokenizer(text)) for text in (
        "def add(a, b):\n    return a + b\n", "import os\nprint(os.getcwd())\n",
        "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    ) * 4]
    config = gptqmodel.QuantizeConfig(bits=4, group_size=32, desc_act=True, sym=True)
    here = os.getcwd()
    os.chdir(out.parent)  # gptqmodel writes a logs/ folder into the working directory
    try:
        model = gptqmodel.GPTQModel.load(str(tiny_model), config, device="cpu")
        model.quantize(calibration, batch_size=1)
        model.save(str(out))
    finally:
        os.chdir(here)
    return out


def test_an_old_layout_gptq_checkpoint_gives_the_native_models_logits(quantized_tiny, tmp_path):
    from phils.config import EngineSettings
    from phils.engine.loading.loader import load_model

    old = tmp_path / "phi-2-GPTQ-like"
    to_old_layout(quantized_tiny, old)
    settings = dict(cpu_kernels="torch", threads=1, cache_dir=str(tmp_path / "cache"))
    native = load_model(EngineSettings(model=str(quantized_tiny), **settings))
    legacy = load_model(EngineSettings(model=str(old), **settings))  # no trust_remote_code needed
    ids = torch.tensor([[5, 17, 99, 3, 250, 1000, 42, 7]])
    with torch.no_grad():
        expected, got = native.model(ids).logits, legacy.model(ids).logits
    assert torch.equal(got, expected)
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear

    quantized = [m for m in legacy.model.modules() if isinstance(m, BaseQuantLinear)]
    assert len(quantized) == 6 * 2  # q, k, v, dense, fc1, fc2 in both layers: still 4-bit, not dequantized


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime_genai") is None, reason="needs the int4 extra (phils[int4])")
def test_an_old_layout_gptq_checkpoint_runs_on_the_int4_kernels_with_gptqmodels_answers(quantized_tiny, tmp_path):
    """cpu-gptq: the checkpoint's own 4-bit blocks (act-order, groups of 32) on phils' int4 path, not quantized again."""
    from phils.config import EngineSettings
    from phils.engine import Engine, GenerationRequest
    from phils.engine.loading.loader import load_model
    from phils.engine.runtimes import q4_kernel
    from phils.engine.runtimes.int4_build import BUILD_RECORD

    if q4_kernel.unavailable_reason() is not None:
        pytest.skip(f"GPTQ blocks run on phils' kernels: {q4_kernel.unavailable_reason()}")
    old = tmp_path / "phi-2-GPTQ-like"
    to_old_layout(quantized_tiny, old)
    cache = tmp_path / "cache"
    reference = load_model(EngineSettings(model=str(old), threads=1, cache_dir=str(cache)))  # gptqmodel's kernels
    ours = load_model(EngineSettings(model=str(old), threads=1, cache_dir=str(cache), quantize="int4"))
    record = json.loads(next((cache / "onnx-int4").glob(f"*-gptq/{BUILD_RECORD}")).read_text())
    assert record["rows_from_gptq"] == 2 * (3 * 64 + 64 + 256 + 64) and record["rows_quantized"] == 0
    # The GPTQ checkpoint (here its native layout in the cache), not the temporary fp16 copy built from.
    assert Path(record["source"]).is_dir() and (Path(record["source"]) / "config.json").is_file()
    assert not list((cache / "converted").glob("*-dequantized*"))  # the fp16 copy was for the build only

    ids = ours.tokenizer(Path(__file__).read_text()).input_ids[:96]
    expected = reference.runtime.forward(ids, reference.runtime.new_kv(0), keep=len(ids)).detach().float().numpy()
    got = ours.runtime.forward(ids, ours.runtime.new_kv(0), keep=len(ids)).detach().float().numpy()
    # int8 activations are the only difference: within 2 % of each position's largest logit
    assert (np.abs(got - expected).max(-1) <= 0.02 * np.abs(expected).max(-1)).all()
    # Greedy decoding picks gptqmodel's tokens, but where gptqmodel's own two best are closer than that 2 %
    # (a random model's logits are flat: such ties are common here, rare in a trained one).
    prompts = ["def add(a, b):\n    return", "import os\n\nclass Point:\n    def __init__(self, x, y):\n        self.",
               "for i in range(10):\n    print("]
    for prompt in prompts:
        text = Engine(reference, context_tokens=256, cache_bytes=2**24, ignore_stops=True).generate(
            GenerationRequest(key="d", prompt=prompt, max_new_tokens=16)).text
        ids = reference.tokenizer(prompt + text).input_ids
        start = len(reference.tokenizer(prompt).input_ids) - 1
        expected = reference.runtime.forward(ids, reference.runtime.new_kv(0), keep=len(ids)).detach().float().numpy()[start:-1]
        got = ours.runtime.forward(ids, ours.runtime.new_kv(0), keep=len(ids)).float().numpy()[start:-1]
        top2 = np.sort(expected, axis=-1)[:, -2:]
        tie = top2[:, 1] - top2[:, 0] <= 0.02 * np.abs(expected).max(-1)
        differ = got.argmax(-1) != expected.argmax(-1)
        assert not (differ & ~tie).any(), (prompt, np.flatnonzero(differ), np.flatnonzero(tie))
        assert differ.sum() <= 1


def test_a_random_packed_gptq_model_loads_and_generates(tmp_path):
    """The benchmark models (random packed weights, no calibration) run through phils' engine."""
    pytest.importorskip("gptqmodel", reason="needs gptqmodel (the gptq extra; CI installs it)")
    import threading

    from gptqmodel.nn_modules.qlinear import BaseQuantLinear

    from phils.config import EngineSettings
    from phils.engine import Engine, GenerationRequest
    from phils.engine.loading.loader import load_model
    from phils.tools.testmodel import make_random_gptq

    directory = make_random_gptq(tmp_path / "random-gptq", shape="tiny", bits=4, group_size=32)
    loaded = load_model(EngineSettings(model=str(directory), threads=1))
    assert sum(isinstance(m, BaseQuantLinear) for m in loaded.model.modules()) == 6 * 2
    engine = Engine(loaded, context_tokens=256, cache_bytes=2**20, ignore_stops=True)
    result = engine.generate(GenerationRequest(key="d", prompt="def f(x):\n    return", max_new_tokens=6,
                                               cancel=threading.Event()))
    assert result.new_tokens == 6
