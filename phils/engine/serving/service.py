"""The engine as a service: one loaded model, its worker, and the queue every window shares.

Used in-process by the local backend and behind HTTP by ``phils engine``.
Requests arrive as plain data (``EngineJob``); the newest completion for a
(window, document) key cancels the older one, completions preempt warm-ups,
and a window that goes away takes its queued work and KV caches with it.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import replace
from functools import partial
from typing import Any, Callable

from ...config import EngineSettings
from ... import tokens
from ...machine import available_memory
from ...stoprule import Shape, stop_index
from ..errors import ModelLoadError
from ...protocol import KEY_SEPARATOR, EngineJob, GenerationResult
from ..decoding.generate import Engine, GenerationRequest
from ..loading.loader import load_model
from .metrics import EngineMetrics
from .worker import BACKGROUND, IDLE, URGENT, ModelWorker

log = logging.getLogger(__name__)

StatusListener = Callable[[dict[str, Any]], None]  # called from any thread


class CancelFlag(threading.Event):
    """A job's cancel flag that remembers how far the decode loop was when it was set.

    The tokens decoded after that point are the cost of a cancellation: the
    loop checks the flag between tokens, so it should never exceed one.
    """

    decoded = 0  # new tokens so far, written by the decode loop
    decoded_at_cancel: int | None = None

    def set(self) -> None:
        if self.decoded_at_cancel is None:
            self.decoded_at_cancel = self.decoded
        super().set()


class EngineService:
    def __init__(self, settings: EngineSettings):
        self.settings = settings
        self.state = "idle"  # idle | loading | ready | error
        self.message = ""
        self.percent: int | None = None
        self.engine: Engine | None = None
        self._counter: Callable[[str], int] | None = None
        self.metrics = EngineMetrics(self)
        self._worker = ModelWorker()
        self._lock = threading.Lock()
        self._listeners: list[StatusListener] = []
        self._newest: dict[str, CancelFlag] = {}  # key → the cancel flag of its newest completion
        self._warmups: set[CancelFlag] = set()
        self._idle: set[CancelFlag] = set()  # the engine's own warm-ups: any new job cancels them
        self._by_window: dict[str, set[CancelFlag]] = {}
        self.last_activity = time.monotonic()

    # --- status ------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"state": self.state, "message": self.message}
        if self.percent is not None:
            status["percent"] = self.percent
        return status

    def subscribe(self, listener: StatusListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: StatusListener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _set_state(self, state: str, message: str, percent: int | None = None) -> None:
        self.state, self.message, self.percent = state, message, percent
        if state != "loading":
            (log.error if state == "error" else log.info)("model %s: %s", state, message)
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(self.status())

    # --- the model's life cycle --------------------------------------------

    def load(self) -> Future:
        """Load the model on the worker; returns a Future that ends when it is ready or failed."""
        self._set_state("loading", f"loading {self.settings.model}", 0)
        return self._worker.submit(self._load)

    def _load(self) -> None:
        self.engine, self._counter = None, None
        gc.collect()
        settings = self.settings
        try:
            loaded = load_model(settings, lambda message, percent: self._set_state("loading", message, percent))
            engine = Engine(loaded, settings.context_tokens,
                            kv_budget(settings.kv_cache, settings.kv_cache_mb, loaded.device),
                            draft_tokens=settings.draft_tokens)
            self._set_state("loading", "indexing the vocabulary for token healing", 95)
            engine.vocabulary  # built now rather than on the first keystroke
        except ModelLoadError as exc:
            self._set_state("error", str(exc))
            return
        except Exception as exc:  # never let a load failure take the engine down
            log.exception("model load failed")
            self._set_state("error", f"cannot load {settings.model}: {type(exc).__name__}: {exc}")
            return
        self.engine = engine
        # A tokenizer of its own for counting: one shared with the worker can fail when
        # two threads use it at once ("Already borrowed").
        described = self.tokenizer_json()
        self._counter = tokens.from_json(described) if described else engine.count_tokens
        self._set_state("ready", f"{settings.model} on {loaded.device} ({loaded.dtype}), loaded in {loaded.seconds:.1f} s")

    # --- work --------------------------------------------------------------

    def submit(self, job: EngineJob, cancel: CancelFlag | None = None, idle: bool = False) -> Future:
        """Queue a job; its Future gives a GenerationResult. Setting ``cancel`` stops it between tokens.
        ``idle``: the engine's own work, run when nothing else waits and cancelled by any job after it."""
        cancel = cancel or CancelFlag()
        self.last_activity = time.monotonic()
        optional = job.warmup or job.background  # work ahead of need: yields to anything that waits for an answer
        with self._lock:
            for warming in self._idle:
                warming.set()  # the engine's own work yields to anything asked
            if idle:
                self._idle.add(cancel)
            elif optional:
                self._warmups.add(cancel)
            else:
                if (older := self._newest.get(job.key)) is not None:
                    older.set()  # a newer request for the document supersedes it
                self._newest[job.key] = cancel
                for warming in self._warmups:
                    warming.set()  # warm-ups give way to anything that waits for an answer
            self._by_window.setdefault(job.window, set()).add(cancel)
        future = self._worker.submit(self._run, job, cancel, time.monotonic(),
                                     priority=IDLE if idle else BACKGROUND if optional else URGENT)
        future.add_done_callback(lambda _: self._finished(job, cancel))
        return future

    def _warm_whole_prompt(self, job: EngineJob) -> None:
        """A near window answered: compute the whole prompt when the engine has nothing else to do, so
        the next request in the document reads it all (progress is kept if a job cuts it short)."""
        self.submit(replace(job, warmup=True, near_prompt="", background=True), idle=True)

    def _finished(self, job: EngineJob, cancel: CancelFlag) -> None:
        with self._lock:
            self._warmups.discard(cancel)
            self._idle.discard(cancel)
            if self._newest.get(job.key) is cancel:
                del self._newest[job.key]
            if (flags := self._by_window.get(job.window)) is not None:
                flags.discard(cancel)
                if not flags:
                    del self._by_window[job.window]
        self.last_activity = time.monotonic()

    def _run(self, job: EngineJob, cancel: CancelFlag, queued_at: float) -> GenerationResult:
        engine = self.engine
        if engine is None:
            raise RuntimeError(f"the model is not loaded ({self.state}: {self.message})")
        if cancel.is_set():
            result = GenerationResult(text="", reason="cancelled")
        elif job.warmup:
            computed, cut_short = engine.prefill(job.key, job.prompt, cancel, job.max_new_tokens)
            result = GenerationResult(text="", reason="cancelled" if cut_short else "warmup", prefill_tokens=computed)
        else:
            result = engine.generate(generation_request(job, cancel))
            if result.window == "near" and not cancel.is_set():
                self._warm_whole_prompt(job)
        self.metrics.record(job, result, (time.monotonic() - queued_at) * 1000)
        if cancel.decoded_at_cancel is not None and not job.warmup:
            self.metrics.after_cancel.inc(max(result.new_tokens - cancel.decoded_at_cancel, 0))
        return result

    def forget(self, window: str, document: str) -> None:
        """A document closed: drop its KV cache (again after any job in flight stored it)."""
        key = EngineJob(document=document, prompt="", max_new_tokens=0, window=window).key
        if (engine := self.engine) is not None:
            engine.forget(key)
            self._worker.submit(engine.forget, key)

    def window_left(self, window: str) -> None:
        """A window went away: cancel its work and free its KV caches."""
        with self._lock:
            flags = self._by_window.pop(window, set())
        for cancel in flags:
            cancel.set()
        if (engine := self.engine) is not None:
            prefix = f"{window}{KEY_SEPARATOR}"
            dropped = engine.cache.drop_where(lambda key: key.startswith(prefix))
            self._worker.submit(engine.cache.drop_where, lambda key: key.startswith(prefix))
            log.info("window %s left: %d cancelled, %d KV caches freed", window[:8], len(flags), dropped)

    def cancel_all(self) -> None:
        with self._lock:
            flags = [flag for group in self._by_window.values() for flag in group]
        for cancel in flags:
            cancel.set()

    # --- facts for the fronts ----------------------------------------------

    @property
    def busy(self) -> bool:
        return self._worker.busy or self._worker.pending > 0

    def count_tokens(self, text: str) -> int:
        """Prompt tokens in ``text``, for fronts sizing a prompt; safe from any thread."""
        counter = self._counter
        if counter is None:
            raise RuntimeError(f"the model is {self.state}")
        return counter(text)

    def tokenizer_json(self) -> str | None:
        """The model's tokenizer as tokenizer.json text (for a counting copy)."""
        engine = self.engine
        backend = getattr(engine.tokenizer, "backend_tokenizer", None) if engine else None
        return backend.to_str() if backend is not None else None

    def model_info(self) -> dict[str, Any]:
        engine = self.engine
        return {
            "context_tokens": engine.context_tokens if engine else self.settings.context_tokens,
            "device": engine.loaded.device if engine else None,
            "dtype": str(engine.loaded.dtype) if engine else None,
            "fim": engine.fim.as_dict() if engine and engine.fim else None,  # markers a prompt may use
        }

    def cache_report(self) -> dict[str, Any]:
        engine = self.engine
        return {
            "bytes": engine.cache.bytes_used if engine else 0,
            "budget_bytes": engine.cache.max_bytes if engine else 0,
            "documents": len(engine.cache) if engine else 0,
            "evictions": engine.cache.evictions if engine else 0,
        }

    def close(self) -> None:
        self.cancel_all()
        self._worker.stop()


def generation_request(job: EngineJob, cancel: CancelFlag) -> GenerationRequest:
    """What the decode loop is asked, from a completion job."""
    return GenerationRequest(
        key=job.key,
        prompt=job.prompt,
        max_new_tokens=job.max_new_tokens,
        stop=partial(_stop, shape=job.shape, strings=job.stop_strings),
        cancel=cancel,
        budget_ms=job.deadline_ms,
        heal=job.heal,
        ignore_stops=job.ignore_stops,
        on_token=partial(setattr, cancel, "decoded"),
        fit_suffix=job.fit_suffix,
        candidates=job.candidates,
        define=job.define,
        samples=job.samples,
        skip_when_followed=job.early_accept,
        near_prompt=job.near_prompt,
        alternatives=job.alternatives,
        shape=job.shape,
        closes_brackets=bool(job.shape and job.shape.closes_brackets),
        comment=job.shape.comment if job.shape else "",
        # Code before the cursor on its line: the line being typed, closed and judged alone first.
        line_first=bool(job.shape and job.shape.line_prefix.strip()),
    )


def _stop(text: str, shape: Shape | None, strings: tuple[str, ...]) -> int | None:
    cuts = [i for i in (text.find(s) for s in strings) if i >= 0]
    if shape is not None and (cut := stop_index(text, shape)) is not None:
        cuts.append(cut)
    return min(cuts) if cuts else None


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
