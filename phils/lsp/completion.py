"""The completion pipeline: cursor context → prompt → engine → filters.

This is the one module that knows all the others. It also owns the engine
client's life cycle (start, report status, replace it on new settings), the
rule that a newer request for a document cancels the older one, and the
warm-ups sent while the user types. It knows nothing of LSP types, and
nothing of which engine answers: that is chosen once, in ``backends``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Callable

from .. import backends
from ..config import Settings
from ..machine import process_figures
from ..protocol import EngineError, EngineJob
from . import postprocess, project, prompt
from .documents import CursorContext, cursor_context, with_item_accepted, with_surroundings
from .stats import Stats
from .typed_through import Shown, accepted, ahead_of, found_ahead, line_after, rest_of, worth_waiting

log = logging.getLogger(__name__)

StatusCallback = Callable[[str, str, Any], None]  # (state, message, percent), called from any thread
# Prompts are built on one thread of their own, started with the service (a fixed thread count).
PROMPT_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="phils-prompt")


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
    window: str = ""  # "near": computed from the near window (the whole prompt was not computed yet)
    alternatives: tuple[str, ...] = ()  # other suggestions, best first (an explicit request's, to cycle through)
    eol: str = "\n"  # the document's line break (the texts above break lines with "\n")

    def in_document(self, text: str) -> str:
        """``text`` (the suggestion or an alternative) with the document's line breaks, as the editor inserts it."""
        return text if self.eol == "\n" else text.replace("\n", self.eol)


class CompletionService:
    def __init__(self, settings: Settings, on_status: StatusCallback = lambda state, message, percent=None: None):
        self.settings = settings
        self.on_status = on_status
        self.state = "idle"  # idle | loading | ready | error
        self.message = ""
        self.backend: Any = None
        self._in_flight: dict[str, asyncio.Task] = {}
        self._warming: dict[str, asyncio.Task] = {}
        self._warm_timers: dict[str, asyncio.TimerHandle] = {}
        self._shown: dict[str, Shown] = {}
        # Per document: suggestions computed ahead, where accepting the shown one puts the cursor, then
        # the line after it where nothing follows there (Enter).
        self._ahead: dict[str, list[Shown]] = {}
        self._ahead_running: dict[str, tuple[str, str, asyncio.Task]] = {}  # its computation: (prefix, suffix, task)
        self._upgrading: dict[str, asyncio.Task] = {}  # per document: a near-window suggestion computed again whole
        self._tail_starts: dict[str, int | None] = {}  # per document: where its prompt's tail starts
        self._faulted = False  # the last completion failed: the editor shows an error until one works
        self._opened: Any = None  # the document opened last: pre-filled once the model is ready, if not before
        self._rested: tuple[Any, int, int] | None = None  # where the cursor rests (phils/didMoveCursor), likewise
        self.project: project.ProjectIndex | None = None  # the workspace's modules, set at initialize
        # (uri, comment marker) -> the text around a document and the URI of what it is part of (a notebook's
        # other cells, the notebook), or None; set by the server
        self.surroundings: Callable[[str, str], tuple[str, str, str] | None] = lambda uri, comment: None
        self.stats = Stats()
        self.doc_stats: dict[str, Stats] = defaultdict(Stats)

    # --- the engine's life cycle ---------------------------------------------

    async def start(self) -> None:
        """Start (or restart, on new engine settings) the engine client; returns when ready or failed."""
        self.cancel_all()
        if self.backend is not None:
            old, self.backend = self.backend, None
            await old.close()
        self._set_state("loading", f"loading {self.settings.engine.model}")
        await asyncio.get_running_loop().run_in_executor(PROMPT_THREAD, lambda: None)  # its thread, now
        backend = backends.make_backend(self.settings.engine, self._backend_status)
        self.backend = backend
        try:
            await backend.start()
        except Exception as exc:  # never let a start failure take the server down
            log.exception("engine start failed")
            self._set_state("error", f"cannot start the engine: {type(exc).__name__}: {exc}")
            return
        if self._rested is not None:  # the cursor came to rest while the model loaded: compute there now
            self.cursor_rests(*self._rested)
        elif self._opened is not None:  # opened while the model loaded: pre-fill it now
            self.schedule_open_warmup(self._opened)

    def _backend_status(self, state: str, message: str, percent: Any = None) -> None:
        self._set_state(state, message, percent)

    def update_settings(self, settings: Settings) -> bool:
        """Apply new settings; True when the engine client must be replaced for them."""
        restart = settings.engine != self.settings.engine
        self.settings = settings
        return restart

    def _set_state(self, state: str, message: str, percent: int | None = None) -> None:
        changed = (state, message) != (self.state, self.message)
        self.state, self.message = state, message
        if changed and state != "loading":
            (log.error if state == "error" else log.info)("engine %s: %s", state, message)
        self.on_status(state, message, percent)

    # --- completions -------------------------------------------------------

    def context_at(self, doc: Any, line: int, character: int) -> CursorContext | None:
        """The cursor's context in a pygls document, with the text around it (a notebook's other cells)."""
        ctx = cursor_context(doc, line, character)
        if ctx is not None and (around := self.surroundings(ctx.uri, postprocess.line_comment(ctx))) is not None:
            ctx = with_surroundings(ctx, *around)
        return ctx

    async def complete(self, doc: Any, line: int, character: int, item: tuple[int, int, str] | None = None,
                       invoked: bool = False) -> Suggestion | None:
        """The suggestion at (line, character) of a pygls document, or None. ``item``: the editor's
        completion widget shows an item selected, (start, end, text) on the cursor's line; the suggestion
        is what follows once it is accepted, at the place that puts the cursor. ``invoked``: the user asked
        explicitly; computed now, with ``completion.alternatives`` other suggestions."""
        backend = self.backend
        if not self.settings.completion.enabled or self.state != "ready" or backend is None:
            return None
        ctx = self.context_at(doc, line, character)
        if ctx is not None and item is not None:
            ctx = with_item_accepted(ctx, *item)
        if ctx is None:
            return None
        asked = time.monotonic()
        alternatives = self.settings.completion.alternatives if invoked else 0
        if not alternatives:  # (work done ahead has none: an explicit request computes them)
            answered, suggestion = await self._from_work_ahead(backend, ctx, asked)
            if answered:
                return suggestion
        self._preempt_warmups()
        if (older := self._in_flight.get(ctx.uri)) is not None:
            older.cancel()  # a newer request supersedes it, and closing its stream stops the engine
        run = asyncio.ensure_future(
            run_pipeline(backend, ctx, self.settings, (self.stats, self.doc_stats[ctx.uri]), self._tail_starts,
                         self.project, alternatives=alternatives)
        )
        self._in_flight[ctx.uri] = run
        try:
            suggestion = await run  # $/cancelRequest cancels this task, and with it ``run``
        except asyncio.CancelledError:
            if run.cancelled() and not _cancelling():  # superseded: the editor gets an empty answer
                return None
            raise
        except EngineError as exc:
            if exc.status == "error":
                self._fault(str(exc))
            return None
        except Exception as exc:  # a fault in one request must not end the server
            log.exception("completion failed")
            self._fault(f"completion failed: {type(exc).__name__}: {exc}")
            return None
        finally:
            if self._in_flight.get(ctx.uri) is run:
                del self._in_flight[ctx.uri]
        if self._faulted and self.state == "ready":  # the engine works again: clear the editor's error
            self._faulted = False
            self.on_status("ready", self.message, None)
        if suggestion is not None:
            self._shown[ctx.uri] = Shown(ctx.prefix, ctx.suffix, suggestion.text)
            self._compute_ahead(backend, ctx, suggestion.text)
        return suggestion

    async def _from_work_ahead(self, backend: Any, ctx: CursorContext, asked: float) -> tuple[bool, Suggestion | None]:
        """(answered, the suggestion) from work done before the request: computed ahead for this place (waited
        for if it is being computed), or the rest of the suggestion shown that the user is typing through."""
        if (running := self._ahead_running.get(ctx.uri)) and worth_waiting(running[0], running[1], ctx):
            with contextlib.suppress(Exception, asyncio.CancelledError):  # it was computing just this: wait
                await asyncio.shield(running[2])
        if (found := found_ahead(self._ahead.get(ctx.uri, []), ctx)) is not None:
            shown, ahead = found
            self._ahead[ctx.uri].remove(shown)  # used once; the next line's, computed after it, stays
            for stats in (self.stats, self.doc_stats[ctx.uri]):
                stats.record_ahead(bool(ahead), (time.monotonic() - asked) * 1000)
            if not ahead:
                return True, None  # computed ahead too: nothing to suggest here
            self._shown[ctx.uri] = shown
            self._compute_ahead(backend, ctx, ahead)
            return True, Suggestion(text=ahead, line=ctx.line, character=ctx.character, reason="ahead", eol=ctx.eol)
        if (rest := rest_of(self._shown.get(ctx.uri), ctx)) is not None:
            for stats in (self.stats, self.doc_stats[ctx.uri]):
                stats.record_typed_through()
            return True, Suggestion(text=rest, line=ctx.line, character=ctx.character, reason="typed-through",
                                    eol=ctx.eol)
        return False, None

    # --- ahead: the suggestion after accepting the one shown ------------------

    def _compute_ahead(self, backend: Any, ctx: CursorContext, text: str) -> None:
        """While ``text`` is shown at ``ctx``, compute what to suggest once it is accepted (engine work no
        request waits for: the engine runs it after anything else, and any request here cancels it)."""
        if not self.settings.completion.ahead or not getattr(backend, "warms", False):
            return
        if "\n" in text and fim_at(backend, self.settings, ctx):
            # Accepting lines changes the code above the cursor, where a FIM prompt's code below begins:
            # that prompt would share only the lines above with this one, and computing it would cut the
            # document's cache back there, costing the user who types on instead its whole prefill.
            return
        self._start_ahead(backend, accepted(ctx, text))

    def _start_ahead(self, backend: Any, ctx: CursorContext, then: bool = False) -> None:
        """Compute the suggestion at ``ctx`` in the background, for a request there to find done
        (``then``: the line after one computed ahead, kept beside it, and followed by no further one)."""
        if not then:
            self._ahead.pop(ctx.uri, None)
        if (older := self._ahead_running.get(ctx.uri)) is not None and older[2] is not asyncio.current_task():
            older[2].cancel()  # (the one that computed what this one follows is done, not cancelled)
        if (upgrade := self._upgrading.pop(ctx.uri, None)) is not None:
            upgrade.cancel()  # for a suggestion that is gone
        task = asyncio.ensure_future(self._ahead_of(backend, ctx, then))
        self._ahead_running[ctx.uri] = (ctx.prefix, ctx.suffix, task)
        task.add_done_callback(lambda t: self._ahead_running.pop(ctx.uri, None)
                               if self._ahead_running.get(ctx.uri, (0, 0, None))[2] is t else None)

    def cursor_rests(self, doc: Any, line: int, character: int) -> None:
        """phils' editor clients say where the cursor rests (phils/didMoveCursor): once it has rested
        ``warmup_ms``, compute the suggestion there (``completion.ahead``; else pre-fill its prompt), so
        the first request at a place the user clicked or moved to finds it done. Call on the event loop."""
        self._rested = (doc, line, character)
        if not self.settings.completion.ahead:
            self.schedule_warmup(doc, line, character)
        elif self.settings.completion.enabled:
            self._after_pause(doc, self._speculate, line, character)

    def _speculate(self, doc: Any, line: int, character: int) -> None:
        backend = self.backend
        ctx = self.context_at(doc, line, character)
        if backend is None or self._in_flight or ctx is None:
            return
        running = self._ahead_running.get(ctx.uri)
        if self._computed_ahead(ctx) is not None or (running and running[:2] == (ctx.prefix, ctx.suffix)):
            return  # computed, or being computed, already
        self._cancel_warmups()  # this prompt is the one that matters now
        self._start_ahead(backend, ctx)

    async def _ahead_of(self, backend: Any, ctx: CursorContext, then: bool = False) -> None:
        try:
            suggestion = await run_pipeline(backend, ctx, self.settings, (), self._tail_starts, self.project,
                                            background=True)
        except (asyncio.CancelledError, EngineError):
            return
        except Exception:  # optional work: note it; the request after an accept will compute it again
            log.warning("computing the next suggestion failed", exc_info=True)
            return
        self._ahead.setdefault(ctx.uri, []).append(Shown(ctx.prefix, ctx.suffix, suggestion.text if suggestion else ""))
        for stats in (self.stats, self.doc_stats[ctx.uri]):
            stats.ahead_computed += 1
        if suggestion is not None and suggestion.window == "near":
            self._start_upgrade(backend, ctx)
        elif not then and not (suggestion and suggestion.text.strip()) and (after := line_after(ctx)) is not None:
            # Nothing to add on this line: the user's next key is likely Enter. The new line, indented as
            # the editor will indent it (at column 0 the model took a blank line for nothing missing more
            # often: infill lines 56 vs 57 in FIM, 43 vs 45 in code format, Qwen2.5-Coder 1.5B).
            self._start_ahead(backend, after, then=True)

    def _computed_ahead(self, ctx: CursorContext) -> int | None:
        """Which of the document's suggestions computed ahead was computed for ``ctx``, if one was."""
        return next((n for n, shown in enumerate(self._ahead.get(ctx.uri, [])) if ahead_of(shown, ctx) is not None), None)

    def _start_upgrade(self, backend: Any, ctx: CursorContext) -> None:
        """The suggestion computed ahead at ``ctx`` came from the near window: compute it again from the
        whole prompt in the background (which computes that prompt too), to take its place if nothing has
        moved by then. A request meanwhile takes the near one at once, and cancels this."""
        if (older := self._upgrading.pop(ctx.uri, None)) is not None:
            older.cancel()
        task = asyncio.ensure_future(self._upgrade(backend, ctx))
        self._upgrading[ctx.uri] = task
        task.add_done_callback(lambda t: self._upgrading.pop(ctx.uri, None) if self._upgrading.get(ctx.uri) is t else None)

    async def _upgrade(self, backend: Any, ctx: CursorContext) -> None:
        try:
            suggestion = await run_pipeline(backend, ctx, self.settings, (), self._tail_starts, self.project,
                                            background=True, near=False)
        except (asyncio.CancelledError, EngineError):
            return
        except Exception:  # optional work: the near window's suggestion stays
            log.warning("computing the suggestion from the whole prompt failed", exc_info=True)
            return
        if (n := self._computed_ahead(ctx)) is not None:  # still there, not taken: replace it
            self._ahead[ctx.uri][n] = Shown(ctx.prefix, ctx.suffix, suggestion.text if suggestion else "")
            for stats in (self.stats, self.doc_stats[ctx.uri]):
                stats.near_upgrades += 1

    def _fault(self, message: str) -> None:
        self._faulted = True
        self.on_status("error", message[:300], None)

    # --- warm-up: prefill while the user types -----------------------------

    def schedule_warmup(self, doc: Any, line: int, character: int) -> None:
        """After an edit, prefill the prompt at (line, character) once typing pauses.

        Call on the event loop. A warm-up is sent only when this window waits
        for nothing, and any completion request preempts it.
        """
        self._after_pause(doc, self._start_warmup, line, character)

    def _after_pause(self, doc: Any, action: Callable[[Any, int, int], None], line: int, character: int) -> None:
        """Run ``action(doc, line, character)`` once ``warmup_ms`` pass with nothing newer for this document,
        where the engine does work ahead at all."""
        delay = self.settings.completion.warmup_ms
        backend = self.backend
        if (delay <= 0 or not self.settings.engine.kv_cache or self.state != "ready" or not backend
                or not getattr(backend, "warms", False)):
            return
        if (timer := self._warm_timers.pop(doc.uri, None)) is not None:
            timer.cancel()

        def fire() -> None:
            self._warm_timers.pop(doc.uri, None)
            action(doc, line, character)

        self._warm_timers[doc.uri] = asyncio.get_running_loop().call_later(delay / 1000, fire)

    def _cancel_warmups(self) -> None:
        for running in list(self._warming.values()):
            running.cancel()

    def schedule_open_warmup(self, doc: Any) -> None:
        """A document was opened: pre-fill its start in idle time, so that the first request in it
        computes only the tokens between the warmed window and the cursor, not the whole file."""
        self._opened = doc
        if len(doc.source) <= OPEN_WARMUP_MAX_CHARS:
            self.schedule_warmup(doc, -1, -1)

    def _start_warmup(self, doc: Any, line: int, character: int) -> None:
        backend = self.backend
        if backend is None or self._in_flight:
            return
        self._cancel_warmups()  # the newest position supersedes (what it computed stays cached)
        opening = line < 0
        if opening:  # just opened: as far into the file as one prompt reaches
            line, character = opening_position(doc.lines, backend.context_tokens - self.settings.engine.max_new_tokens)
        ctx = self.context_at(doc, line, character)  # a snapshot: the loop owns the text
        if ctx is None:
            return
        task = asyncio.ensure_future(self._warm(backend, ctx, opening))
        self._warming[ctx.uri] = task
        task.add_done_callback(lambda t: self._warming.pop(ctx.uri, None) if self._warming.get(ctx.uri) is t else None)

    async def _warm(self, backend: Any, ctx: CursorContext, opening: bool = False) -> None:
        try:
            loop = asyncio.get_running_loop()
            built = await loop.run_in_executor(PROMPT_THREAD, build_prompt, backend, ctx, self.settings,
                                               self._tail_starts, self.project, opening)
            job = EngineJob(document=ctx.uri, prompt=model_prompt(built, backend.heals)[0], max_new_tokens=self.settings.engine.max_new_tokens,
                            warmup=True)
            result = await backend.generate(job)
            for stats in (self.stats, self.doc_stats[ctx.uri]):
                stats.record_warmup(result.prefill_tokens, result.reason == "cancelled")
        except asyncio.CancelledError:
            pass
        except Exception:  # a warm-up is optional work: note it, and the request will tell the editor
            log.warning("warm-up failed", exc_info=True)

    def _preempt_warmups(self) -> None:
        for task in [*self._warming.values(), *self._ahead_tasks()]:
            task.cancel()

    def _ahead_tasks(self) -> list[asyncio.Task]:
        return [task for _, _, task in self._ahead_running.values()] + list(self._upgrading.values())

    def forget(self, uri: str) -> None:
        """The document closed: drop its in-flight work and cached state."""
        for table in (self._in_flight, self._warming, self._upgrading):
            if (task := table.pop(uri, None)) is not None:
                task.cancel()
        if (timer := self._warm_timers.pop(uri, None)) is not None:
            timer.cancel()
        self._shown.pop(uri, None)
        self._ahead.pop(uri, None)
        if self._opened is not None and self._opened.uri == uri:
            self._opened = None
        if self._rested is not None and self._rested[0].uri == uri:
            self._rested = None
        if (running := self._ahead_running.pop(uri, None)) is not None:
            running[2].cancel()
        for key in (uri, uri + MIDDLE_START, uri + NEAR_WINDOW, uri + NEAR_WINDOW + MIDDLE_START):
            self._tail_starts.pop(key, None)
            self._tail_starts.pop(key + SNIPPET_START, None)
        self.doc_stats.pop(uri, None)
        if self.backend is not None:
            asyncio.ensure_future(self.backend.forget(uri))

    def client_gone(self) -> None:
        """A TCP client left: its work and documents' state go, the engine stays.

        The backend frees the window's caches at once, so no per-document forget is sent.
        """
        self.cancel_all()
        for table in (self._in_flight, self._warming, self._shown, self._ahead, self._tail_starts, self.doc_stats):
            table.clear()
        self._opened = self._rested = None
        if self.backend is not None:
            self.backend.forget_all()

    def cancel_all(self) -> None:
        for task in [*self._in_flight.values(), *self._warming.values(), *self._ahead_tasks()]:
            task.cancel()
        self._ahead_running.clear()
        self._upgrading.clear()
        for timer in self._warm_timers.values():
            timer.cancel()
        self._warm_timers.clear()

    async def stats_report(self) -> dict[str, Any]:
        engine = await self.backend.report() if self.backend is not None else {}
        return {
            "state": self.state,
            "backend": self.settings.engine.backend,
            "busy": bool(engine.get("busy")) or bool(self._in_flight),
            "process": process_figures(),
            "queued": len(self._in_flight),
            "budget_ms": self.settings.completion.timeout_ms,
            **self.stats.as_dict(),
            "cache": {"bytes": 0, "budget_bytes": 0, "documents": 0, "evictions": 0, **engine.get("cache", {})},
            "engine": engine.get("engine", {}),
            # A list, not a map keyed by URI: clients that turn objects into records lose such keys.
            "documents": [{"uri": uri, **stats.as_dict()} for uri, stats in list(self.doc_stats.items())],
        }

    async def close(self) -> None:
        self.cancel_all()
        if self.backend is not None:
            await self.backend.close()


def _cancelling() -> bool:
    task = asyncio.current_task()
    return bool(task is not None and task.cancelling())


# Other modules' signatures may take up to this share of the prompt.
PROJECT_SHARE = 0.25
# A just-opened document is pre-filled up to where a prompt reaches, estimated at this many characters
# a token (code runs 3.3-4 with GPT-2's and Qwen's tokenizers: under-estimating keeps the prompt's start
# where a request's prompt will start) and leaving room for other modules' signatures.
OPEN_CHARS_PER_TOKEN = 3.0
OPEN_WARMUP_MAX_CHARS = 4_000_000  # past this the document is not pre-filled on open (a log, a data file)


def just_begun(ctx: CursorContext) -> bool:
    """The document is a file just begun: a line or two, which say little of its language."""
    if len(ctx.prefix) + len(ctx.suffix) > NEW_FILE_CHARS:
        return False
    return sum(1 for line in (ctx.prefix + ctx.suffix).split("\n") if line.strip()) < NEW_FILE_LINES


def opening_position(lines: list[str], budget_tokens: int) -> tuple[int, int]:
    """Where to pre-fill a just-opened document: the end of the line where one prompt's worth of text ends."""
    room = int(budget_tokens * (1 - PROJECT_SHARE) * OPEN_CHARS_PER_TOKEN)
    used = 0
    for number, text in enumerate(lines):
        used += len(text)
        if used >= room:
            return number, len(text.rstrip("\r\n").encode("utf-16-le")) // 2
    if not lines:
        return 0, 0
    return len(lines) - 1, len(lines[-1].rstrip("\r\n").encode("utf-16-le")) // 2


# A document this short (characters, and fewer lines of text) is a file just begun: its prompt starts with
# the file's name. On 8 one-line files (Qwen2.5-Coder 1.5B int4) the name made 5 answers better and none
# worse (`package ` in main.go: `main`, was `com.example.demo;`); at 400 characters it reached 13 of
# HumanEval's first 40 prompts (named `HumanEval_19.py`) and cost 2, so it stays below the shortest (115).
NEW_FILE_CHARS, NEW_FILE_LINES = 100, 3
MIDDLE_START = "\x1fmiddle"  # with the document's URI: the key of its FIM prompt's middle start in tail_starts
FEWEST_CHARS_PER_TOKEN = 2  # code has more: a prompt of fewer characters than this many per token is short
SNIPPET_START = "\x1fsnippet"  # with a tail start's key: the first line of the left-out code its prompt put back
NEAR_WINDOW = "\x1fnear"  # with the document's URI: the key of its near window's tail start in tail_starts


def fim_markers(backend: Any, settings: Settings) -> dict[str, str] | None:
    """The model's fill-in-the-middle markers where its prompts may be written with them (``completion.fim``)."""
    return getattr(backend, "fim", None) if settings.completion.fim == "auto" else None


def fim_at(backend: Any, settings: Settings, ctx: CursorContext) -> dict[str, str] | None:
    """The model's fill-in-the-middle markers where the prompt at ``ctx`` is written with them.

    Only with code below to read: at the end of a function with nothing after it, HumanEval through
    phils (Qwen2.5-Coder 1.5B int4, first 40) passed 23 with an empty FIM suffix and 27 in code format.
    """
    return fim_markers(backend, settings) if ctx.suffix.strip() else None


def build_prompt(backend: Any, ctx: CursorContext, settings: Settings, tail_starts: dict[str, int | None],
                 index: project.ProjectIndex | None = None, opening: bool = False, near: bool = False) -> prompt.Prompt:
    """The document's prompt, its tail starting where the last one did if it still fits.

    ``opening``: the pre-fill of a document just opened, which no request reads yet; with a FIM
    model, the start all its prompts share (``prompt.fim_opening``). ``near``: the near window
    (``completion.near_window_tokens``), without other modules' context, its tail remembered apart.
    """
    budget = backend.context_tokens - settings.engine.max_new_tokens
    if near:
        budget = min(budget, settings.completion.near_window_tokens)
    key = ctx.uri + NEAR_WINDOW if near else ctx.uri
    context = ""
    if index is not None and settings.completion.project_context and not near:
        try:
            context = index.context(project.path_of(ctx.uri), ctx.prefix + ctx.suffix, ctx.line,
                                    backend.count_tokens, int(budget * PROJECT_SHARE))
        except Exception:  # optional context: a fault in it must not cost the completion
            log.warning("project context failed", exc_info=True)
        if settings.log.buffer_text and context:
            log.info("project context: %s", ", ".join(index.chosen(project.path_of(ctx.uri))))
    if just_begun(ctx):
        # A file just begun says little of its language (`package ` got Java's `com.example.demo;` in a Go
        # file): its name comes first, as Copilot's prompts begin. (A longer file is its own evidence; the
        # prompt that then loses the line is short, computed again at little cost.)
        context = postprocess.file_name_comment(ctx) + context
    if opening and (markers := fim_markers(backend, settings)):
        return prompt.fim_opening(ctx, backend.count_tokens, budget, markers, context)
    markers = fim_at(backend, settings, ctx)
    if markers:
        built = prompt.build_fim(ctx, backend.count_tokens, budget, markers, tail_starts.get(key), context,
                                 settings.completion.fim_suffix_tokens, tail_starts.get(key + MIDDLE_START),
                                 tail_starts.get(key + SNIPPET_START))
        tail_starts[key + MIDDLE_START] = built.middle_start
    else:
        built = prompt.build(ctx, backend.count_tokens, budget, keep_start=tail_starts.get(key), context=context,
                             keep_snippet=tail_starts.get(key + SNIPPET_START))
    if built.tail_start is not None:
        tail_starts[key] = built.tail_start
        tail_starts[key + SNIPPET_START] = built.snippet_start
    return built


def near_window(backend: Any, ctx: CursorContext, settings: Settings, tail_starts: dict[str, int | None],
                built: prompt.Prompt) -> prompt.Prompt | None:
    """The near window's prompt for the request whose whole prompt is ``built``, where one is worth
    sending: the engine caches KV (it chooses between them by what it holds) and the whole prompt is
    longer than the near window would be."""
    near_tokens = settings.completion.near_window_tokens
    if (not near_tokens or not settings.engine.kv_cache or not getattr(backend, "warms", False)
            or len(built.text) <= near_tokens * FEWEST_CHARS_PER_TOKEN):
        return None  # too short for the near window to leave anything out
    near = build_prompt(backend, ctx, settings, tail_starts, near=True)
    return near if near.text != built.text else None


def model_prompt(built: prompt.Prompt, heals: bool, line_prefix: str = "") -> tuple[str, str, str]:
    """What the model reads: (prompt, the text its first line follows, what to strip from its output).

    The cursor's indentation (typed, or what an empty body needs) ends the prompt
    where the engine can heal: it backs off that token and regenerates it, so the
    model knows where the cursor is and does not add a stray space. An engine
    that cannot heal gets the prompt up to the line break, writes the
    indentation itself, and it is cut from the suggestion. After code on the
    cursor's line (``line_prefix``), the model's text follows that code.
    """
    if line_prefix.strip() or built.fim:  # no indentation is held back or forced there (FIM: the line ends it)
        return built.text, line_prefix, ""
    indentation = built.held_back + built.forced  # at most one of them
    if heals:
        return built.text + built.held_back, indentation, ""
    return built.text[: len(built.text) - len(built.forced)], "", indentation


def _fits(backend: Any, settings: Settings) -> bool:
    return (settings.completion.fit_suffix and getattr(backend, "fits", False)
            and not settings.engine.ignore_stops)


async def run_pipeline(
    backend: Any,
    ctx: CursorContext,
    settings: Settings,
    stats: tuple[Stats, ...] = (),
    tail_starts: dict[str, int | None] | None = None,
    index: project.ProjectIndex | None = None,
    background: bool = False,
    near: bool = True,
    alternatives: int = 0,
) -> Suggestion | None:
    """One completion, start to end: context → prompt → engine → filters (``background``: computed ahead;
    ``near``: the engine may answer from the near window; ``alternatives``: up to this many other suggestions)."""
    try:
        return await _pipeline(backend, ctx, settings, stats, {} if tail_starts is None else tail_starts, index,
                               background, near, alternatives)
    except asyncio.CancelledError:  # superseded or $/cancelRequest, at any stage
        for counters in stats:
            counters.record_cancelled()
        raise


async def _pipeline(
    backend: Any, ctx: CursorContext, settings: Settings, stats: tuple[Stats, ...], tail_starts: dict[str, int | None],
    index: project.ProjectIndex | None, background: bool = False, allow_near: bool = True, alternatives: int = 0,
) -> Suggestion | None:
    started = time.monotonic()
    # Off the event loop (counting tokens may ask the engine), on the one prompt thread.
    loop = asyncio.get_running_loop()
    built = await loop.run_in_executor(PROMPT_THREAD, build_prompt, backend, ctx, settings, tail_starts, index)
    near = (await loop.run_in_executor(PROMPT_THREAD, near_window, backend, ctx, settings, tail_starts, built)
            if allow_near else None)
    shape = postprocess.shape_of(ctx, settings.completion.multiline, settings.completion.max_lines,
                                 settings.completion.mid_block)
    text, follows, strip = model_prompt(built, backend.heals, ctx.line_prefix)
    if built.fim:  # the model reads the code below and ends the middle itself: no judging, up to a few lines
        fit_shape, judged = postprocess.fitted(ctx, shape)[0], ""
    else:
        fit_shape, judged = postprocess.fitted(ctx, shape) if _fits(backend, settings) else (shape, "")
    define = postprocess.names_to_define(ctx, fit_shape) if judged and settings.completion.define_names else ()
    model_shape = replace(fit_shape, line_prefix=follows) if follows != fit_shape.line_prefix else fit_shape
    timeout = settings.completion.timeout_ms
    job = EngineJob(
        document=ctx.uri,
        prompt=text,
        max_new_tokens=settings.engine.max_new_tokens,
        shape=model_shape,
        heal=backend.heals,
        ignore_stops=settings.engine.ignore_stops,
        deadline_ms=timeout,
        fit_suffix=judged,
        candidates=settings.completion.candidates,
        define=define,
        samples=settings.completion.samples if judged else 0,
        early_accept=settings.completion.early_accept and not alternatives,  # (the others are the alternatives)
        alternatives=alternatives,
        background=background,
        near_prompt=model_prompt(near, backend.heals, ctx.line_prefix)[0] if near else "",
    )
    result = await backend.generate(job)
    if result.candidates or not judged:  # the engine judged the lengths (or nothing was to be judged): keep its shape
        shape = fit_shape
    text = built.forced + prompt.heal(result.text, strip)
    if result.reason in ("length", "deadline"):
        text = postprocess.closed_end(text if shape.single_line else postprocess.drop_unfinished_line(text),
                                      shape.comment, ctx.line_prefix)
    text, emptied_by = postprocess.apply_explained(text, ctx, shape, settings.completion.python_syntax)
    others: list[str] = []
    for answer in result.alternatives:  # through the same filters; each unlike the others
        other = postprocess.apply_explained(built.forced + prompt.heal(answer, strip), ctx, shape,
                                            settings.completion.python_syntax)[0]
        if other and other != text and other not in others:
            others.append(other)
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
            window=result.window,
            alternatives=tuple(others),
            eol=ctx.eol,
        )
    empty_reason = "" if suggestion is not None or result.reason == "cancelled" else (
        emptied_by or ("eos" if result.reason == "eos" else "stop rule" if result.reason == "stop" else result.reason))
    for counters in stats:
        counters.record(result, suggestion is not None, total_ms, empty_reason)
    log.info(
        "completion %s:%d:%d prompt=%d reused=%d prefill=%d new=%d end=%s%s %.0f ms",
        os.path.basename(ctx.uri), ctx.line, ctx.character, result.prompt_tokens, result.reused_tokens,
        result.prefill_tokens, result.new_tokens, result.reason, f" empty: {empty_reason}" if empty_reason else "",
        total_ms,
    )
    if settings.log.buffer_text:
        log.info("prompt tail %r → model %r → suggestion %r", built.text[-200:], result.text, text)
    return suggestion
