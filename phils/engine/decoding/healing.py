"""Token healing: when the prompt ends mid-token, back off and let the model redo it.

A prompt ending in ``    ret`` ends in a token the model rarely saw there
(``ret`` rather than ``return``), so what it predicts next is skewed. The
engine drops the prompt's last token and constrains the first generated
tokens to spell out the dropped text again, each one either extending past
it (``return``) or being a piece of it. The dropped text is then cut from
the suggestion.
"""

from __future__ import annotations

import bisect
from typing import Any


class Vocabulary:
    """Every token's text, searchable by prefix. Built once per model."""

    def __init__(self, tokenizer: Any):
        size = len(tokenizer)
        texts = tokenizer.batch_decode([[i] for i in range(size)], skip_special_tokens=False)
        special = set(getattr(tokenizer, "all_special_ids", []))
        self._sorted = sorted((text, i) for i, text in enumerate(texts) if text and i not in special and "\ufffd" not in text)
        self._keys = [text for text, _ in self._sorted]
        self._by_text: dict[str, list[int]] = {}
        for text, i in self._sorted:
            self._by_text.setdefault(text, []).append(i)

    def allowed(self, pending: str) -> list[int]:
        """Ids of tokens that start with ``pending``, or are a non-empty prefix of it.

        Pending indentation is where the cursor is: a token may not indent further.
        """
        lo = bisect.bisect_left(self._keys, pending)
        hi = bisect.bisect_left(self._keys, pending + "\U0010ffff")
        indentation = pending.endswith((" ", "\t")) and not pending.rsplit("\n", 1)[-1].strip()
        ids = [i for text, i in self._sorted[lo:hi]
               if not (indentation and text[len(pending) : len(pending) + 1] in (" ", "\t"))]
        for end in range(1, len(pending)):
            ids.extend(self._by_text.get(pending[:end], ()))
        return ids


def should_heal(prompt: str) -> bool:
    """Heal unless the prompt ends a line: a last token that is a word, an operator or
    indentation is often one the model would have merged with what comes next."""
    return bool(prompt) and not prompt.endswith("\n")


def consume(pending: str, token_text: str) -> str:
    """What of ``pending`` is still to be spelled out after ``token_text``."""
    return pending[len(token_text) :] if pending.startswith(token_text) else ""
