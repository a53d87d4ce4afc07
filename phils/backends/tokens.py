"""Counting prompt tokens in the front, without torch: the prompt builder's budget needs it.

phils' engines hand over their tokenizer as tokenizer.json text; for other
engines the user may name a tokenizer.json file or hub id; otherwise a
character estimate that errs on the side of more tokens (a shorter prompt).
"""

from __future__ import annotations

import logging
import math
from typing import Callable

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 3.0  # code in GPT-2-style BPE runs 3-4 characters a token: count high


def estimate(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def from_json(text: str | None) -> Callable[[str], int]:
    """A counter from tokenizer.json text (None: the estimate)."""
    if not text:
        return estimate
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(text)
    return lambda s: len(tokenizer.encode(s, add_special_tokens=True).ids)


def from_setting(name: str, offline: bool = False) -> Callable[[str], int]:
    """A counter from ``engine.tokenizer``: a tokenizer.json path, a directory holding one, or a hub id."""
    if not name:
        return estimate
    from pathlib import Path

    from tokenizers import Tokenizer

    path = Path(name).expanduser()
    try:
        if path.is_dir():
            path = path / "tokenizer.json"
        if path.is_file():
            tokenizer = Tokenizer.from_file(str(path))
        elif offline:
            raise OSError("offline: not fetching it from the hub")
        else:
            tokenizer = Tokenizer.from_pretrained(name)
    except Exception as exc:  # a bad setting costs precision, never the server
        log.warning("engine.tokenizer %s: %s; estimating token counts from characters", name, exc)
        return estimate
    return lambda s: len(tokenizer.encode(s, add_special_tokens=True).ids)
