"""Fill-in-the-middle markers, where the model was trained with them (found once, at load).

A FIM-trained code model reads the code on both sides of the cursor:
``PREFIX code-above SUFFIX code-below MIDDLE`` and writes the middle, ending
it with one of its end tokens. Phi-2 has no such tokens (its prompt stays in
"code format"); Qwen2.5-Coder, StarCoder/StarCoder2 and DeepSeek-Coder do.
CodeLlama's markers carry a leading space inside the token (``▁<PRE>``), so
they cannot be written as text: not offered.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# (prefix, suffix, middle, tokens that end the middle), per family of tokenizers.
FAMILIES = (
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",  # Qwen2.5-Coder
     ("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>", "<|fim_prefix|>", "<|im_end|>")),
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>",  # StarCoder, StarCoder2, SantaCoder
     ("<|endoftext|>", "<fim_pad>", "<file_sep>", "<fim_prefix>")),
    ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>",  # DeepSeek-Coder
     ("<｜end▁of▁sentence｜>", "<|EOT|>", "<｜fim▁begin｜>")),
)


@dataclass(frozen=True)
class FimMarkers:
    prefix: str
    suffix: str
    middle: str
    stop_ids: tuple[int, ...]  # the tokens that end the middle (the decode loop stops at them)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "stop_ids"}


def find(tokenizer: Any) -> FimMarkers | None:
    """The tokenizer's FIM markers when each is one token that its text encodes to, else None."""
    try:
        vocabulary = tokenizer.get_vocab()
    except Exception:  # a tokenizer without a vocabulary to read: no FIM
        return None
    for prefix, suffix, middle, stops in FAMILIES:
        if not all(marker in vocabulary for marker in (prefix, suffix, middle)):
            continue
        if any(tokenizer(marker, add_special_tokens=False)["input_ids"] != [vocabulary[marker]]
               for marker in (prefix, suffix, middle)):
            continue  # written as text it would not be the marker
        return FimMarkers(prefix, suffix, middle, tuple(vocabulary[s] for s in stops if s in vocabulary))
    return None
