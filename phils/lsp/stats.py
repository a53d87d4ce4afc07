"""Counters behind ``phils/stats``: per server and per document.

Written by the model worker (and, for typed-through answers, the event loop);
read by the stats request. Plain ints, so a torn read is at worst one off.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stats:
    requests: int = 0
    suggestions: int = 0
    empty: int = 0
    cancelled: int = 0
    typed_through: int = 0  # answered from the last suggestion, no model call
    ahead: int = 0  # answered with the suggestion computed ahead, after the user accepted the one shown
    ahead_computed: int = 0  # answers computed ahead (each used or not, an empty one too)
    prompt_tokens: int = 0
    reused_tokens: int = 0
    prefill_tokens: int = 0
    decode_tokens: int = 0
    cancelled_tokens: int = 0  # prefill + decode work thrown away by cancels
    decode_ms: float = 0.0
    decode_steps: int = 0
    drafted_tokens: int = 0  # drafted from the document and checked in the same pass
    kept_draft_tokens: int = 0  # of those, kept by greedy decoding
    warmups: int = 0
    warmup_tokens: int = 0
    empty_reasons: dict = field(default_factory=dict)  # why answers were empty: eos, stop rule, a filter's name
    budget_cuts: dict = field(default_factory=dict)  # answers the time budget cut: in the "answer" or in "judging"
    near_windows: int = 0  # answered from the near window (the whole prompt not computed yet)
    near_upgrades: int = 0  # suggestions computed ahead from the near window, replaced by the whole prompt's
    second_choices: dict = field(default_factory=dict)  # greedy answers the stop rule emptied: "answered" by the next best, or "empty"
    alternatives: int = 0  # other answers the engine wrote for explicit requests (completion.alternatives)
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=2000))
    first_token_ms: deque = field(default_factory=lambda: deque(maxlen=2000))

    def record(self, result: Any, suggested: bool, total_ms: float, empty_reason: str = "") -> None:
        self.requests += 1
        self.prompt_tokens += result.prompt_tokens
        self.reused_tokens += result.reused_tokens
        self.prefill_tokens += result.prefill_tokens
        self.decode_tokens += result.new_tokens
        self.decode_ms += result.decode_ms
        self.decode_steps += result.decode_steps
        self.drafted_tokens += getattr(result, "drafted_tokens", 0)
        self.kept_draft_tokens += getattr(result, "kept_draft_tokens", 0)
        if cut := getattr(result, "cut", ""):
            self.budget_cuts[cut] = self.budget_cuts.get(cut, 0) + 1
        if outcome := getattr(result, "second_choice", ""):
            self.second_choices[outcome] = self.second_choices.get(outcome, 0) + 1
        self.alternatives += len(getattr(result, "alternatives", ()))
        if getattr(result, "window", "") == "near":
            self.near_windows += 1
        if result.reason == "cancelled":
            self.cancelled += 1
            self.cancelled_tokens += result.prefill_tokens + result.new_tokens
            return
        self.latencies_ms.append(total_ms)
        if result.first_token_ms is not None:
            self.first_token_ms.append(result.first_token_ms)
        if suggested:
            self.suggestions += 1
        else:
            self.empty += 1
            reason = empty_reason or "unknown"
            self.empty_reasons[reason] = self.empty_reasons.get(reason, 0) + 1

    def record_cancelled(self) -> None:
        """A request cancelled before its result came back (its tokens are the engine's to count)."""
        self.requests += 1
        self.cancelled += 1

    def record_typed_through(self) -> None:
        self.requests += 1
        self.suggestions += 1
        self.typed_through += 1
        self.latencies_ms.append(0.0)

    def record_ahead(self, suggested: bool, waited_ms: float) -> None:
        self.requests += 1
        self.ahead += 1
        self.latencies_ms.append(waited_ms)  # for the part of the job still running when the request came
        if suggested:
            self.suggestions += 1
        else:
            self.empty += 1
            self.empty_reasons["computed ahead"] = self.empty_reasons.get("computed ahead", 0) + 1

    def record_warmup(self, computed: int, cancelled: bool) -> None:
        self.warmups += 1
        self.warmup_tokens += computed
        if cancelled:
            self.cancelled_tokens += computed

    def as_dict(self) -> dict[str, Any]:
        counters = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()
                    if not isinstance(v, deque)}
        reusable = self.prompt_tokens
        return {
            **counters,
            "reused_fraction": round(self.reused_tokens / reusable, 4) if reusable else None,
            "decode_ms_per_token": round(self.decode_ms / self.decode_steps, 1) if self.decode_steps else None,
            "latency_ms": percentiles(self.latencies_ms),
            "first_token_ms": percentiles(self.first_token_ms),
        }


def percentiles(values: Any) -> dict[str, float | None]:
    ordered = sorted(values)

    def at(p: float) -> float | None:
        return round(ordered[min(int(p * len(ordered)), len(ordered) - 1)], 1) if ordered else None

    return {"p50": at(0.5), "p95": at(0.95), "p99": at(0.99)}

