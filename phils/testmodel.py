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
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, intermediate_size=1024),
    "phi-2": dict(hidden_size=2560, num_hidden_layers=32, num_attention_heads=32, intermediate_size=10240),
}
EOS = "<|endoftext|>"


def train_tokenizer(vocab_size: int = 4096, corpus_bytes: int = 3_000_000):
    """A byte-level BPE trained on this machine's Python standard library, in seconds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_stdlib_sources(corpus_bytes), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, bos_token=EOS, unk_token=EOS)


def make_test_model(directory: str | Path, shape: str = "tiny", seed: int = 0, vocab_size: int = 4096) -> Path:
    import torch
    from transformers import PhiConfig, PhiForCausalLM

    directory = Path(directory)
    tokenizer = train_tokenizer(vocab_size)
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
    model = PhiForCausalLM(config).to(torch.float32).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.eos_token_id
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
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
