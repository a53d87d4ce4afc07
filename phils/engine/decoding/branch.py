"""A point in the decode loop where an answer can go on another way (shared by decoding and judging)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...protocol import GenerationResult


@dataclass
class Branch:
    """A point in the decode loop where other candidates can take another token."""

    generated: list[int]  # the tokens written before it
    scores: list[tuple[int, float]]  # per token: the text's length after it, and its log-probability
    pending: str  # healing text still to spell out
    logits: Any  # the next token's logits there
    kv_length: int  # tokens in the KV cache there


def add_counts(result: GenerationResult, other: GenerationResult) -> None:
    """Count in ``result`` the work of ``other``, an answer written from a branch point of it."""
    result.new_tokens += other.new_tokens
    result.decode_steps += other.decode_steps
    result.drafted_tokens += other.drafted_tokens
    result.kept_draft_tokens += other.kept_draft_tokens
