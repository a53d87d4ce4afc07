"""Phi checkpoints in the old remote-code layout ("phi-msft"), read without remote code.

TheBloke/phi-2-GPTQ (all six branches) was quantized in December 2023 from
that layout: ``transformer.embd.wte``, ``transformer.h.N.ln``, a fused
``mixer.Wqkv`` (q, k and v in one quantized matrix), ``mixer.out_proj``,
``mlp.fc1/fc2``, ``lm_head.ln`` and ``lm_head.linear``. transformers' native
PhiForCausalLM has separate ``q/k/v_proj``, ``dense``, ``input_layernorm``,
``final_layernorm`` and ``lm_head``. This module rewrites such a checkpoint
once into the native layout (names mapped, the fused Wqkv split along its
output dimension, its packed tensors included), which then loads natively.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

LEGACY_TYPES = ("phi-msft", "phi")  # "phi" with n_embd/n_layer keys: the mid-2023 remote-code configs
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                    "special_tokens_map.json", "added_tokens.json", "generation_config.json")


def is_legacy(config: dict[str, Any]) -> bool:
    return config.get("model_type") in LEGACY_TYPES and "n_embd" in config and "n_layer" in config


def native_config(old: dict[str, Any]) -> dict[str, Any]:
    """A native PhiConfig dict for an old-layout config (quantization settings kept)."""
    hidden, heads = old["n_embd"], old["n_head"]
    config = {
        "architectures": ["PhiForCausalLM"],
        "model_type": "phi",
        "vocab_size": old["vocab_size"],
        "hidden_size": hidden,
        "intermediate_size": old.get("n_inner") or 4 * hidden,
        "num_hidden_layers": old["n_layer"],
        "num_attention_heads": heads,
        "num_key_value_heads": old.get("n_head_kv") or heads,
        "max_position_embeddings": old.get("n_positions", 2048),
        "partial_rotary_factor": old.get("rotary_dim", hidden // heads) / (hidden // heads),
        "rope_theta": 10000.0,
        "hidden_act": old.get("activation_function", "gelu_new"),
        "layer_norm_eps": old.get("layer_norm_epsilon", 1e-5),
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attention_dropout": 0.0,
        "tie_word_embeddings": old.get("tie_word_embeddings", False),
        "torch_dtype": old.get("torch_dtype", "float16"),
    }
    for key in ("bos_token_id", "eos_token_id"):  # Phi-2's are both 50256 (<|endoftext|>)
        config[key] = old.get(key, 50256 if old["vocab_size"] > 50256 else None)
    if "quantization_config" in old:
        quant = dict(old["quantization_config"])
        quant.setdefault("checkpoint_format", "gptq")  # auto-gptq's v1 zero points
        config["quantization_config"] = quant
    return config


_RENAMES = [
    (re.compile(r"^transformer\.embd\.wte\.(.+)$"), r"model.embed_tokens.\1"),
    (re.compile(r"^transformer\.h\.(\d+)\.ln\.(.+)$"), r"model.layers.\1.input_layernorm.\2"),
    (re.compile(r"^transformer\.h\.(\d+)\.mixer\.out_proj\.(.+)$"), r"model.layers.\1.self_attn.dense.\2"),
    (re.compile(r"^transformer\.h\.(\d+)\.mlp\.(fc[12])\.(.+)$"), r"model.layers.\1.mlp.\2.\3"),
    (re.compile(r"^lm_head\.ln\.(.+)$"), r"model.final_layernorm.\1"),
    (re.compile(r"^lm_head\.linear\.(.+)$"), r"lm_head.\1"),
]
_WQKV = re.compile(r"^transformer\.h\.(\d+)\.mixer\.Wqkv\.(.+)$")


def _pack_factor(bits: int) -> int:
    return 32 // bits


def split_qkv(name: str, tensor: Any, hidden: int, kv_hidden: int, bits: int | None) -> list[Any]:
    """The q, k and v parts of one Wqkv tensor, split along the output dimension.

    GPTQ tensors: ``qweight`` [in/pack, out] and ``scales`` [groups, out] split by
    columns; ``qzeros`` [groups, out/pack] by packed columns (pack = 32/bits
    values in each int32); ``g_idx`` (per input channel) is shared; plain
    ``weight`` [out, in] and ``bias`` [out] split by rows.
    """
    sizes = [hidden, kv_hidden, kv_hidden]
    if name == "g_idx":
        return [tensor.clone() for _ in sizes]
    if name in ("qweight", "scales"):
        return list(tensor.split(sizes, dim=1))
    if name == "qzeros":
        pack = _pack_factor(bits or 4)
        if any(size % pack for size in sizes):
            raise ValueError(f"cannot split packed zero points: {sizes} not multiples of {pack}")
        return list(tensor.split([size // pack for size in sizes], dim=1))
    if name in ("weight", "bias"):
        return list(tensor.split(sizes, dim=0))
    raise ValueError(f"unexpected Wqkv tensor {name!r}")


def convert_tensors(tensors: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Old-layout tensors → native names, with each Wqkv split into q/k/v_proj."""
    hidden = config["n_embd"]
    kv_hidden = (config.get("n_head_kv") or config["n_head"]) * (hidden // config["n_head"])
    bits = (config.get("quantization_config") or {}).get("bits")
    out: dict[str, Any] = {}
    for name, tensor in tensors.items():
        if match := _WQKV.match(name):
            layer, part = match.groups()
            for proj, piece in zip(("q_proj", "k_proj", "v_proj"), split_qkv(part, tensor, hidden, kv_hidden, bits)):
                out[f"model.layers.{layer}.self_attn.{proj}.{part}"] = piece.contiguous()
            continue
        for pattern, replacement in _RENAMES:
            if pattern.match(name):
                out[pattern.sub(replacement, name)] = tensor
                break
        else:
            if not name.endswith("inv_freq"):  # rotary caches are recomputed
                raise ValueError(f"unexpected tensor {name!r} in an old-layout Phi checkpoint")
    return out


def convert_checkpoint(source: Path, target: Path) -> None:
    """Write the native-layout copy of an old-layout checkpoint directory."""
    from safetensors.torch import load_file, save_file

    old_config = json.loads((source / "config.json").read_text())
    files = sorted(source.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{source} has no .safetensors weights")
    tensors: dict[str, Any] = {}
    for file in files:
        tensors.update(load_file(str(file)))
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file(convert_tensors(tensors, old_config), str(partial / "model.safetensors"), metadata={"format": "pt"})
    (partial / "config.json").write_text(json.dumps(native_config(old_config), indent=2))
    for name in _TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, partial / name)
    shutil.rmtree(target, ignore_errors=True)
    partial.replace(target)
