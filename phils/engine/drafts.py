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
1.53x, int8 1.78x, ONNX Runtime 4-bit 2.43x), so the draft length is chosen
at each step from the measured cost of passes and the measured rate at which
drafted tokens were kept.
"""

from __future__ import annotations

from collections import defaultdict

MIN_NGRAM = 2  # a single repeated token predicts too little to pay for a longer pass
MAX_NGRAM = 4
PROBE_EVERY = 16  # drafts found but not worth a pass by the estimates: every so many, check one token anyway


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
    """Chooses each draft's length from the measured cost of passes and the rate drafts were kept."""

    def __init__(self, limit: int, extra_cost: float = 0.15):
        self.limit = limit
        self.kept_rate = 0.5  # the chance a drafted token is kept, given the one before it was
        self.single_ms: float | None = None  # a pass over one token
        self.extra = extra_cost  # each further token's cost, as a fraction of a single pass
        self._chosen = 0

    def choose(self) -> int:
        """The draft length with the most tokens per unit of time; now and then one token to keep measuring."""
        self._chosen += 1
        best, best_rate = (1, 0.0) if self._chosen % PROBE_EVERY == 0 else (0, 1.0)
        expected, keep = 1.0, 1.0
        for k in range(1, self.limit + 1):
            keep *= self.kept_rate
            expected += keep
            rate = expected / (1 + self.extra * k)
            if rate > best_rate:
                best, best_rate = k, rate
        return best

    def passed(self, tokens: int, ms: float) -> None:
        """A forward pass over ``tokens`` tokens took ``ms``."""
        if tokens == 1:
            self.single_ms = ms if self.single_ms is None else 0.8 * self.single_ms + 0.2 * ms
        elif self.single_ms:
            extra = max((ms / self.single_ms - 1) / (tokens - 1), 0.0)
            self.extra = 0.8 * self.extra + 0.2 * extra

    def outcome(self, kept: bool) -> None:
        """A drafted token was checked: kept, or not (the rest of its draft goes with it)."""
        self.kept_rate = min(max(0.9 * self.kept_rate + 0.1 * float(kept), 0.05), 0.95)
