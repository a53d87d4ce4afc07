"""A point in the decode loop where an answer can go on another way (shared by decoding and judging)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Branch:
    """A point in the decode loop where other candidates can take another token."""

    generated: list[int]  # the tokens written before it
    scores: list[tuple[int, float]]  # per token: the text's length after it, and its log-probability
    pending: str  # healing text still to spell out
    logits: Any  # the next token's logits there
    kv_length: int  # tokens in the KV cache there
