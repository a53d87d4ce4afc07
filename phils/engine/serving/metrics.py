"""The engine's counters, exported as Prometheus text on ``GET /metrics``."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, float("inf"))


class EngineMetrics:
    def __init__(self, service: Any):
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("phils_requests", "Jobs the engine ran, by kind and how they ended",
                                ["kind", "outcome"], registry=registry)
        self.tokens = Counter("phils_tokens", "Tokens by kind: prompt, reused (from the KV cache), prefill, decode",
                              ["kind"], registry=registry)
        self.latency = Histogram("phils_request_seconds", "From queued to answered, completions only",
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.first_token = Histogram("phils_first_token_seconds", "From started to the first new token",
                                     buckets=LATENCY_BUCKETS, registry=registry)
        self.after_cancel = Counter("phils_tokens_after_cancel",
                                    "Tokens decoded after a request was cancelled (at most one each)",
                                    registry=registry)
        self.budget_cuts = Counter("phils_budget_cuts",
                                   "Completions the time budget (phils.deadline_ms) cut, by what it cut: the greedy "
                                   "answer itself, or the judging of other candidates", ["stage"], registry=registry)
        self.second_choices = Counter("phils_second_choices",
                                      "Greedy answers the stop rule left empty, by whether the model's next best "
                                      "answer at their least certain tokens was shown", ["outcome"], registry=registry)
        self.near_windows = Counter("phils_near_windows",
                                    "Completions answered from the near window, the whole prompt not computed yet",
                                    registry=registry)
        self.budget = Gauge("phils_budget_seconds", "The time budget of the last completion (0: none)",
                            registry=registry)
        self.windows = Gauge("phils_windows_attached", "Editor windows attached to this engine", registry=registry)
        Gauge("phils_kv_cache_bytes", "Bytes held by the per-document KV caches",
              registry=registry).set_function(lambda: service.cache_report()["bytes"])
        Gauge("phils_kv_cache_budget_bytes", "The KV caches' byte budget",
              registry=registry).set_function(lambda: service.cache_report()["budget_bytes"])
        Gauge("phils_model_ready", "1 when the model is loaded and serving",
              registry=registry).set_function(lambda: 1.0 if service.state == "ready" else 0.0)

    def record(self, job: Any, result: Any, total_ms: float) -> None:
        kind = "warmup" if job.warmup else "completion"
        self.requests.labels(kind, result.reason).inc()
        for name, value in (("prompt", result.prompt_tokens), ("reused", result.reused_tokens),
                            ("prefill", result.prefill_tokens), ("decode", result.new_tokens)):
            if value:
                self.tokens.labels(name).inc(value)
        if result.cut:
            self.budget_cuts.labels(result.cut).inc()
        if result.second_choice:
            self.second_choices.labels(result.second_choice).inc()
        if result.window == "near":
            self.near_windows.inc()
        if kind == "completion":
            self.budget.set(job.deadline_ms / 1000)
        if kind == "completion" and result.reason != "cancelled":
            self.latency.observe(total_ms / 1000)
            if result.first_token_ms is not None:
                self.first_token.observe(result.first_token_ms / 1000)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
