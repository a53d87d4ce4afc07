"""Drafts from the document itself, checked in one forward pass (prompt lookup decoding).

Code repeats itself: what comes next often continues a run of tokens that
occurs earlier in the prompt or in the code below the cursor (a name, a
call's arguments, a branch like the one above). When the last few tokens
written occur earlier, the tokens that followed them there are a draft; one
forward pass over the next token and the draft gives the logits at every
draft position, and the decode loop keeps the draft for as long as it agrees
with what greedy decoding chooses. The answer is greedy decoding's; the time
is one pass for several tokens whenever a draft holds.

A pass over k + 1 tokens costs more than one over a single token, by a
factor that depends on the runtime (measured on Phi-2's shape, k = 8: fp32
1.53x, int8 1.78x, ONNX Runtime 4-bit 2.43x; SmolLM2-135M on torch, k = 1:
1.5x), so the draft length is chosen from that cost, measured when the model
loads, and the share of drafted tokens code keeps.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

MIN_NGRAM = 2  # a single repeated token predicts too little to pay for a longer pass
MAX_NGRAM = 4
KEPT_RATE = 0.75  # drafted tokens kept: 0.9 measured on code (SmolLM2-135M and Gemma 3 270M int4), less a margin


class DraftSource:
    """The tokens a draft may be copied from, indexed by token for quick n-gram lookups."""

    def __init__(self, context: list[int], after: list[int] = ()):
        self.tokens: list[int] = []
        self._positions: dict[int, list[int]] = defaultdict(list)
        for token in list(after) + [-1] + list(context):  # the code below the cursor first: older matches
            self.append(token)

    def append(self, token: int) -> None:
        self._positions[token].append(len(self.tokens))
        self.tokens.append(token)

    def draft(self, limit: int) -> list[int]:
        """Up to ``limit`` tokens that followed the latest earlier occurrence of the longest matching tail."""
        tokens = self.tokens
        if limit <= 0:
            return []
        for n in range(MAX_NGRAM, MIN_NGRAM - 1, -1):
            if len(tokens) <= n:
                continue
            tail = tokens[-n:]
            for start in reversed(self._positions.get(tail[0], ())):
                if start + n >= len(tokens):
                    continue  # the tail itself
                if tokens[start : start + n] == tail:
                    follow = tokens[start + n : start + n + limit]
                    if -1 in follow:
                        follow = follow[: follow.index(-1)]
                    if follow:
                        return follow
        return []


class DraftLength:
    """The draft length, from the runtime's pass costs measured once at load: the same for every request.

    Fixed rather than adapted while decoding: with int4, a pass's width changes
    how its int8 activations round, so a length that followed the history would
    make one prompt's answer depend on what was asked before it.
    """

    def __init__(self, limit: int, extra_cost: float = 0.15, kept_rate: float = KEPT_RATE):
        self.limit = limit
        self.kept_rate = kept_rate  # the chance a drafted token is kept, given the one before it was
        self.extra = extra_cost  # each further token's cost, as a fraction of a one-token pass

    @classmethod
    def measured(cls, runtime: Any, limit: int) -> "DraftLength":
        """Time one-token and five-token passes on a short context (best of three each)."""
        kv = runtime.new_kv(0)
        probe = list(range(10, 48))
        runtime.forward(probe[:32], kv)
        single, wide = [], []
        for _ in range(3):
            started = time.perf_counter()
            runtime.forward(probe[32:33], kv)
            single.append(time.perf_counter() - started)
            kv.crop(-1)
            started = time.perf_counter()
            runtime.forward(probe[32:37], kv, 5)
            wide.append(time.perf_counter() - started)
            kv.crop(-5)
        extra = max((min(wide) / max(min(single), 1e-9) - 1) / 4, 0.0)
        return cls(limit, extra)

    def choose(self) -> int:
        """The draft length with the most tokens per unit of time (0: drafts do not pay here)."""
        best, best_rate = 0, 1.0
        expected, keep = 1.0, 1.0
        for k in range(1, self.limit + 1):
            keep *= self.kept_rate
            expected += keep
            rate = expected / (1 + self.extra * k)
            if rate > best_rate:
                best, best_rate = k, rate
        return best
