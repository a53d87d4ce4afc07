"""The completion pipeline: cursor context → prompt → engine → filters.

This is the one module that knows all the others. It also owns the model's
life cycle (load in the background, report status, reload on new settings)
and the rule that a newer request for a document cancels the older one.
It knows nothing of LSP types.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Callable

from . import postprocess, prompt
from .config import Settings
from .documents import CursorContext, cursor_context
from .engine import Engine, GenerationRequest, ModelLoadError, ModelWorker, load_model
from .machine import available_memory, process_figures
from .stats import Stats
from .typed_through import Shown, rest_of

log = logging.getLogger(__name__)

StatusCallback = Callable[[str, str], None]  # (state, message), called from any thread
ProgressCallback = Callable[[str, int], None]  # (message, percent)


@dataclass(frozen=True)
class Suggestion:
    text: str
    line: int  # where it is inserted (the cursor), in the client's units
    character: int
    reason: str = ""  # why generation ended
    prompt_tokens: int = 0
    reused_tokens: int = 0
    new_tokens: int = 0
    total_ms: float = 0.0


class CompletionService:
    def __init__(self, settings: Settings, on_status: StatusCallback = lambda state, message: None):
        self.settings = settings
        self.on_status = on_status
        self.state = "idle"  # idle | loading | ready | error
        self.message = ""
        self._engine: Engine | None = None
        self._worker = ModelWorker()
        self._in_flight: dict[str, threading.Event] = {}
        self._warming: dict[str, threading.Event] = {}
        self._warm_timers: dict[str, asyncio.TimerHandle] = {}
        self._shown: dict[str, Shown] = {}
        self._tail_starts: dict[str, int] = {}  # per document: where its prompt's tail starts
        self._faulted = False  # the last completion raised: the editor shows an error until one works
        self.stats = Stats()
        self.doc_stats: dict[str, Stats] = defaultdict(Stats)

    # --- model life cycle ---------------------------------------------------

    def load(self, progress: ProgressCallback = lambda message, percent: None):
        """Load (or reload) the model on the worker; returns a concurrent Future."""
        self.cancel_all()
        self._set_state("loading", f"loading {self.settings.engine.model}")
        return self._worker.submit(self._load, self.settings, progress)

    def _load(self, settings: Settings, progress: ProgressCallback) -> None:
        self._engine = None
        gc.collect()
        try:
            loaded = load_model(settings.engine, progress)
            self._engine = Engine(
                loaded,
                context_tokens=settings.engine.context_tokens,
                cache_bytes=kv_budget(settings.engine.kv_cache, settings.engine.kv_cache_mb, loaded.device),
                ignore_stops=settings.engine.ignore_stops,
            )
            progress("indexing the vocabulary for token healing", 95)
            self._engine.vocabulary  # built now rather than on the first keystroke
        except ModelLoadError as exc:
            self._set_state("error", str(exc))
            return
        except Exception as exc:  # never let a load failure take the server down
            log.exception("model load failed")
            self._set_state("error", f"cannot load {settings.engine.model}: {type(exc).__name__}: {exc}")
            return
        self._set_state("ready", f"{settings.engine.model} on {loaded.device} ({loaded.dtype}), loaded in {loaded.seconds:.1f} s")

    def update_settings(self, settings: Settings) -> bool:
        """Apply new settings; True when the model must be reloaded for them."""
        reload = settings.engine != self.settings.engine
        self.settings = settings
        return reload

    def _set_state(self, state: str, message: str) -> None:
        self.state, self.message = state, message
        (log.error if state == "error" else log.info)("model %s: %s", state, message)
        self.on_status(state, message)

    # --- completions -------------------------------------------------------

    async def complete(self, doc: Any, line: int, character: int) -> Suggestion | None:
        """The suggestion at (line, character) of a pygls document, or None."""
        engine = self._engine
        if not self.settings.completion.enabled or self.state != "ready" or engine is None:
            return None
        ctx = cursor_context(doc, line, character)
        if ctx is None:
            return None
        if (rest := rest_of(self._shown.get(ctx.uri), ctx)) is not None:
            for stats in (self.stats, self.doc_stats[ctx.uri]):
                stats.record_typed_through()
            return Suggestion(text=rest, line=line, character=character, reason="typed-through")
        self._preempt_warmups()
        cancel = threading.Event()
        if (older := self._in_flight.get(ctx.uri)) is not None:
            older.set()  # a newer request supersedes it
        self._in_flight[ctx.uri] = cancel
        future = self._worker.submit(self._run_if_current, engine, ctx, self.settings, cancel)
        try:
            suggestion = await asyncio.wrap_future(future)
        except asyncio.CancelledError:  # $/cancelRequest: stop the decode loop too
            cancel.set()
            raise
        except Exception as exc:  # a fault in one request must not end the server
            log.exception("completion failed")
            self._faulted = True
            self.on_status("error", f"completion failed: {type(exc).__name__}: {exc}"[:300])
            return None
        finally:
            if self._in_flight.get(ctx.uri) is cancel:
                del self._in_flight[ctx.uri]
        if self._faulted and self.state == "ready":  # the model works again: clear the editor's error
            self._faulted = False
            self.on_status("ready", self.message)
        if suggestion is not None:
            self._shown[ctx.uri] = Shown(ctx.prefix, ctx.suffix, suggestion.text)
        return suggestion

    def _run_if_current(self, engine: Engine, ctx: CursorContext, settings: Settings, cancel: threading.Event):
        if engine is not self._engine:  # a reload happened while this request waited
            return None
        return run_pipeline(engine, ctx, settings, cancel, (self.stats, self.doc_stats[ctx.uri]), self._tail_starts)

    # --- warm-up: prefill while the user types -----------------------------

    def schedule_warmup(self, doc: Any, line: int, character: int) -> None:
        """After an edit, prefill the prompt at (line, character) once typing pauses.

        Call on the event loop. The warm-up runs only when the model is idle, and
        any completion request preempts it between prefill chunks.
        """
        delay = self.settings.completion.warmup_ms
        if delay <= 0 or not self.settings.engine.kv_cache or self.state != "ready":
            return
        if (timer := self._warm_timers.pop(doc.uri, None)) is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._warm_timers[doc.uri] = loop.call_later(delay / 1000, self._start_warmup, doc, line, character)

    def _start_warmup(self, doc: Any, line: int, character: int) -> None:
        self._warm_timers.pop(doc.uri, None)
        engine = self._engine
        if engine is None or self._worker.busy or self._worker.pending or self._in_flight:
            return
        ctx = cursor_context(doc, line, character)  # a snapshot: the loop owns the text
        if ctx is None:
            return
        cancel = threading.Event()
        self._warming[ctx.uri] = cancel
        self._worker.submit(self._warm, engine, ctx, self.settings, cancel)

    def _warm(self, engine: Engine, ctx: CursorContext, settings: Settings, cancel: threading.Event) -> None:
        try:
            if engine is not self._engine or cancel.is_set():
                return
            built = build_prompt(engine, ctx, settings, self._tail_starts)
            computed, cut_short = engine.prefill(ctx.uri, built.text, cancel, settings.engine.max_new_tokens)
            for stats in (self.stats, self.doc_stats[ctx.uri]):
                stats.record_warmup(computed, cut_short)
        except Exception:  # a warm-up is optional work: note it, and the request will tell the editor
            log.warning("warm-up failed", exc_info=True)
        finally:
            if self._warming.get(ctx.uri) is cancel:
                del self._warming[ctx.uri]

    def _preempt_warmups(self) -> None:
        for cancel in list(self._warming.values()):
            cancel.set()

    def forget(self, uri: str) -> None:
        """The document closed: drop its in-flight work and cached state."""
        for table in (self._in_flight, self._warming):
            if (cancel := table.pop(uri, None)) is not None:
                cancel.set()
        if (timer := self._warm_timers.pop(uri, None)) is not None:
            timer.cancel()
        self._shown.pop(uri, None)
        self._tail_starts.pop(uri, None)
        self.doc_stats.pop(uri, None)
        if (engine := self._engine) is not None:
            engine.forget(uri)
            self._worker.submit(engine.forget, uri)  # again after work in flight stored it

    def cancel_all(self) -> None:
        for cancel in [*self._in_flight.values(), *self._warming.values()]:
            cancel.set()

    def stats_report(self) -> dict[str, Any]:
        engine = self._engine
        return {
            "state": self.state,
            "busy": self._worker.busy,
            "process": process_figures(),
            "queued": self._worker.pending,
            **self.stats.as_dict(),
            "cache": {
                "bytes": engine.cache.bytes_used if engine else 0,
                "budget_bytes": engine.cache.max_bytes if engine else 0,
                "documents": len(engine.cache) if engine else 0,
                "evictions": engine.cache.evictions if engine else 0,
            },
            # A list, not a map keyed by URI: clients that turn objects into records lose such keys.
            "documents": [{"uri": uri, **stats.as_dict()} for uri, stats in list(self.doc_stats.items())],
        }

    def close(self) -> None:
        self.cancel_all()
        self._worker.stop()


def build_prompt(engine: Engine, ctx: CursorContext, settings: Settings, tail_starts: dict[str, int]) -> prompt.Prompt:
    """The document's prompt, its tail starting where the last one did if it still fits."""
    budget = engine.context_tokens - settings.engine.max_new_tokens
    built = prompt.build(ctx, engine.count_tokens, budget, keep_start=tail_starts.get(ctx.uri))
    if built.tail_start is not None:
        tail_starts[ctx.uri] = built.tail_start
    return built


def run_pipeline(
    engine: Engine,
    ctx: CursorContext,
    settings: Settings,
    cancel: threading.Event,
    stats: tuple[Stats, ...] = (),
    tail_starts: dict[str, int] | None = None,
) -> Suggestion | None:
    """One completion, start to end. Runs on the model worker."""
    if cancel.is_set():
        return None
    started = time.monotonic()
    built = build_prompt(engine, ctx, settings, {} if tail_starts is None else tail_starts)
    shape = postprocess.shape_of(ctx, settings.completion.multiline, settings.completion.max_lines)
    # The model continues the prompt, which ends before any held-back indentation
    # and after any indentation an empty body needs (which begins the suggestion).
    model_shape = replace(shape, line_prefix=built.forced) if built.held_back or built.forced else shape
    timeout = settings.completion.timeout_ms
    result = engine.generate(
        GenerationRequest(
            key=ctx.uri,
            prompt=built.text,
            max_new_tokens=settings.engine.max_new_tokens,
            stop=partial(postprocess.stop_index, shape=model_shape),
            cancel=cancel,
            deadline=started + timeout / 1000 if timeout else None,
        )
    )
    text = built.forced + prompt.heal(result.text, built.held_back)
    if result.reason in ("length", "deadline") and not shape.single_line:
        text = postprocess.drop_unfinished_line(text)
    text = postprocess.apply(text, ctx, shape)
    total_ms = (time.monotonic() - started) * 1000
    suggestion = None
    if text and result.reason != "cancelled":
        suggestion = Suggestion(
            text=text,
            line=ctx.line,
            character=ctx.character,
            reason=result.reason,
            prompt_tokens=result.prompt_tokens,
            reused_tokens=result.reused_tokens,
            new_tokens=result.new_tokens,
            total_ms=total_ms,
        )
    for counters in stats:
        counters.record(result, suggestion is not None, total_ms)
    log.info(
        "completion %s:%d:%d prompt=%d reused=%d prefill=%d new=%d end=%s %.0f ms",
        os.path.basename(ctx.uri), ctx.line, ctx.character, result.prompt_tokens, result.reused_tokens,
        result.prefill_tokens, result.new_tokens, result.reason, total_ms,
    )
    if settings.log.buffer_text:
        log.info("prompt tail %r → suggestion %r", built.text[-200:], text)
    return suggestion


def kv_budget(enabled: bool, configured_mb: int, device: str) -> int:
    """Bytes the KV prefix cache may hold: as configured, else a share of the memory available now."""
    if not enabled:
        return 0
    if configured_mb:
        return configured_mb * 2**20
    if device == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return free // 2
    return max(available_memory() // 4, MIN_KV_BUDGET)


MIN_KV_BUDGET = 256 * 2**20

