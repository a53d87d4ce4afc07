"""Build a random Phi model with a tokenizer trained offline: no model hub needed.

Random weights produce nonsense, so these models are for plumbing, cache,
cancellation and speed work, never for judging quality. ``tiny`` keeps
Phi-2's proportions (partial rotary 0.4, MLP 4x hidden, gelu_new) at a size
that loads in a second; ``phi-2`` is Phi-2's exact shape (about 11 GB in
fp32), which decodes exactly as fast as the real model.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

SHAPES = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256),
    # Phi-2's head size (80, rotary 32): ONNX Runtime's attention kernel needs a rotary half that is a multiple of 8.
    "tiny80": dict(hidden_size=160, num_hidden_layers=2, num_attention_heads=2, intermediate_size=640),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, intermediate_size=1024),
    "phi-2": dict(hidden_size=2560, num_hidden_layers=32, num_attention_heads=32, intermediate_size=10240),
}
EOS = "<|endoftext|>"


FIM_TOKENS = ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>"]  # as Qwen2.5-Coder spells them


def train_tokenizer(vocab_size: int = 4096, corpus_bytes: int = 3_000_000, fim: bool = False):
    """A byte-level BPE trained on this machine's Python standard library, in seconds (``fim``: with
    fill-in-the-middle markers)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, *(FIM_TOKENS if fim else [])],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_stdlib_sources(corpus_bytes), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, bos_token=EOS, unk_token=EOS)


def make_test_model(directory: str | Path, shape: str = "tiny", seed: int = 0, vocab_size: int = 4096,
                    dtype: str = "float32", fim: bool = False) -> Path:
    """``dtype`` "float16" saves the weights as Phi-2's own checkpoint does (half the bytes, for GPU benchmarks)."""
    import torch
    from transformers import PhiConfig, PhiForCausalLM

    directory = Path(directory)
    tokenizer = train_tokenizer(vocab_size, fim=fim)
    dims = SHAPES[shape]
    config = PhiConfig(
        vocab_size=51200 if shape == "phi-2" else len(tokenizer),
        max_position_embeddings=2048,
        partial_rotary_factor=0.4,
        hidden_act="gelu_new",
        layer_norm_eps=1e-5,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        **dims,
    )
    torch.manual_seed(seed)
    model = PhiForCausalLM(config).to(getattr(torch, dtype)).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.eos_token_id
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def make_random_gptq(directory: str | Path, shape: str = "phi-2", bits: int = 4, group_size: int = 128,
                     seed: int = 0, vocab_size: int = 4096, desc_act: bool = False) -> Path:
    """A random GPTQ checkpoint (native layout) of a Phi shape, written directly.

    No calibration: the packed weights, zero points and scales are random, with
    the shapes and dtypes a real GPTQ checkpoint has. Decode speed depends on
    those shapes, not the values, so this benchmarks 4-bit (or 8-bit) kernels
    on Phi-2's exact shape in seconds instead of hours of CPU quantization.
    ``desc_act`` (act-order, as in TheBloke's ``*-actorder_True`` branches)
    scatters each group's input channels, as a calibration would.
    """
    import json

    import torch
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(vocab_size)
    tokenizer.save_pretrained(directory)
    dims = SHAPES[shape]
    hidden, inter, layers = dims["hidden_size"], dims["intermediate_size"], dims["num_hidden_layers"]
    vocab = 51200 if shape == "phi-2" else len(tokenizer)
    pack = 32 // bits
    generator = torch.Generator().manual_seed(seed)

    def rand_int32(*size: int) -> torch.Tensor:
        return torch.randint(-2**31, 2**31 - 1, size, dtype=torch.int64, generator=generator).to(torch.int32)

    def quantized(prefix: str, n_in: int, n_out: int) -> dict[str, torch.Tensor]:
        groups = n_in // group_size
        zero = sum((2 ** (bits - 1) - 1) << (bits * i) for i in range(pack))  # symmetric: mid-range, stored minus one
        return {
            f"{prefix}.qweight": rand_int32(n_in // pack, n_out),
            f"{prefix}.qzeros": torch.full((groups, n_out // pack), zero - 2**32 if zero >= 2**31 else zero, dtype=torch.int32),
            f"{prefix}.scales": (torch.rand(groups, n_out, generator=generator) * 0.002 + 0.001).half(),
            f"{prefix}.g_idx": group_of_input(n_in),
            f"{prefix}.bias": (torch.randn(n_out, generator=generator) * 0.01).half(),
        }

    def group_of_input(n_in: int) -> torch.Tensor:
        groups = torch.arange(n_in) // group_size
        if desc_act:  # act-order: the channels of a group are wherever the calibration put them
            groups = groups[torch.randperm(n_in, generator=generator)]
        return groups.to(torch.int32)

    def dense(*size: int) -> torch.Tensor:
        return (torch.randn(*size, generator=generator) * 0.02).half()

    tensors = {"model.embed_tokens.weight": dense(vocab, hidden),
               "model.final_layernorm.weight": torch.ones(hidden).half(),
               "model.final_layernorm.bias": torch.zeros(hidden).half(),
               "lm_head.weight": dense(vocab, hidden), "lm_head.bias": torch.zeros(vocab).half()}
    for layer in range(layers):
        p = f"model.layers.{layer}"
        tensors[f"{p}.input_layernorm.weight"] = torch.ones(hidden).half()
        tensors[f"{p}.input_layernorm.bias"] = torch.zeros(hidden).half()
        for proj in ("q_proj", "k_proj", "v_proj", "dense"):
            tensors.update(quantized(f"{p}.self_attn.{proj}", hidden, hidden))
        # q, k and v see the same input, so a calibration orders their channels alike
        for proj in ("k_proj", "v_proj"):
            tensors[f"{p}.self_attn.{proj}.g_idx"] = tensors[f"{p}.self_attn.q_proj.g_idx"].clone()
        tensors.update(quantized(f"{p}.mlp.fc1", hidden, inter))
        tensors.update(quantized(f"{p}.mlp.fc2", inter, hidden))
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["PhiForCausalLM"], "model_type": "phi", "vocab_size": vocab, **dims,
        "num_key_value_heads": dims["num_attention_heads"], "max_position_embeddings": 2048,
        "partial_rotary_factor": 0.4, "hidden_act": "gelu_new", "layer_norm_eps": 1e-5,
        "tie_word_embeddings": False, "torch_dtype": "float16",
        "bos_token_id": tokenizer.eos_token_id, "eos_token_id": tokenizer.eos_token_id,
        "quantization_config": {"quant_method": "gptq", "bits": bits, "group_size": group_size,
                                "desc_act": desc_act, "sym": True, "checkpoint_format": "gptq"},
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return directory


def _stdlib_sources(limit: int):
    root = Path(sysconfig.get_paths()["stdlib"])
    total = 0
    for path in sorted(root.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        yield text
        total += len(text)
        if total >= limit:
            return
