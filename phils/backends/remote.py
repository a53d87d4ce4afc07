"""Established engines for teams: vLLM (OpenAI ``/v1/completions``) and llama.cpp's llama-server.

One class, two dialects chosen at load time (``engine.backend``): what
differs is the request body, how a streamed event carries text, and how the
server says it is ready. Both always stream, so that phils can apply its
stop rule as text arrives and close the stream the moment the suggestion is
complete, and so that closing it (a newer keystroke, ``$/cancelRequest``)
stops the server's decoding too. Neither can constrain the first tokens, so
token healing is off; vLLM's automatic prefix caching and llama-server's
``cache_prompt`` do the KV reuse.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import aiohttp

from ..config import EngineSettings
from ..protocol import EngineError, EngineJob, GenerationResult
from ..stoprule import stop_index
from .. import tokens
from . import StatusCallback, sse

log = logging.getLogger(__name__)

POLL_S = 2.0  # how often to ask a loading or unreachable server again


@dataclass(frozen=True)
class Dialect:
    name: str
    health_path: str  # 200 when ready, 503 while loading
    completion_path: str
    body: Callable[[EngineJob, str], dict[str, Any]]
    text_of: Callable[[Any], tuple[str, str | None]]  # event → (text delta, finish reason or None)
    warms: bool


def _vllm_body(job: EngineJob, model: str) -> dict[str, Any]:
    # vLLM's defaults are max_tokens 16 and temperature 1: every sampling parameter is explicit.
    return {
        "model": model, "prompt": job.prompt, "max_tokens": job.max_new_tokens, "stream": True,
        "temperature": 0.0, "top_p": 1.0, "top_k": -1, "n": 1, "seed": 0,
        "stop": ["\n"] if job.shape is not None and job.shape.single_line else [],
        "ignore_eos": job.ignore_stops, "skip_special_tokens": True,
        "stream_options": {"include_usage": True},
    }


def _vllm_text(event: Any) -> tuple[str, str | None]:
    choice = (event.get("choices") or [{}])[0] if isinstance(event, dict) else {}
    return str(choice.get("text") or ""), choice.get("finish_reason")


def _llama_body(job: EngineJob, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt": job.prompt, "n_predict": 0 if job.warmup else job.max_new_tokens, "stream": not job.warmup,
        "cache_prompt": True, "temperature": 0.0, "top_k": 1, "samplers": ["top_k"],
        "stop": ["\n"] if job.shape is not None and job.shape.single_line else [],
        "ignore_eos": job.ignore_stops,
        "timings_per_token": True,  # cache figures even when phils closes the stream early
    }
    if job.deadline_ms:
        body["t_max_predict_ms"] = job.deadline_ms
    return body


def _llama_text(event: Any) -> tuple[str, str | None]:
    if not isinstance(event, dict):
        return "", None
    if not event.get("stop"):
        return str(event.get("content") or ""), None
    kind = event.get("stop_type", "")
    return str(event.get("content") or ""), {"limit": "length", "eos": "eos", "word": "stop"}.get(kind, "stop")


DIALECTS = {
    "openai": Dialect("vLLM / OpenAI", "/v1/models", "/v1/completions", _vllm_body, _vllm_text, warms=False),
    "llama-server": Dialect("llama-server", "/health", "/completion", _llama_body, _llama_text, warms=True),
}


class RemoteBackend:
    heals = False  # no way to constrain the first tokens of another engine
    fits = False  # nor to branch its decoding and score the code after the cursor
    fim = None  # nor to know its tokenizer's fill-in-the-middle markers (llama-server's own /infill knows them)

    def __init__(self, settings: EngineSettings, on_status: StatusCallback):
        self.settings = settings
        self.dialect = DIALECTS[settings.backend]
        self.on_status = on_status
        self.warms = self.dialect.warms
        self.url = settings.url.rstrip("/")
        self.description = f"{self.dialect.name} at {self.url}"
        self.count_tokens = tokens.from_setting(settings.tokenizer, settings.offline)
        self.context_tokens = settings.context_tokens
        self.model = settings.model
        self.state = "idle"
        self._message = ""
        self._session: aiohttp.ClientSession | None = None
        self._watch: asyncio.Task | None = None

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.settings.api_key_env, "") if self.settings.api_key_env else ""
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def start(self) -> None:
        """Ask the server until it is ready; a server that is loading or down is retried in the background."""
        if not self.url:
            self._status("error", f"engine.backend = {self.settings.backend} needs engine.url")
            return
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self.settings.timeout_s)
        self._session = aiohttp.ClientSession(headers=self._headers(), timeout=timeout,
                                              connector=aiohttp.TCPConnector(force_close=True))
        self._status("loading", f"connecting to {self.description}")
        if not await self._check():
            self._watch = asyncio.ensure_future(self._until_ready())

    async def _until_ready(self) -> None:
        while not await self._check():
            await asyncio.sleep(POLL_S)

    async def _check(self) -> bool:
        """One health check; True when the server is ready (or refuses us: retrying will not help)."""
        assert self._session is not None
        try:
            async with self._session.get(self.url + self.dialect.health_path,
                                         timeout=aiohttp.ClientTimeout(total=10)) as response:
                if response.status in (401, 403):
                    self._status("error", f"{self.description} refused the API key "
                                          f"(HTTP {response.status}; set engine.api_key_env)")
                    return True
                if response.status == 503:
                    self._status("loading", f"{self.description} is loading its model")
                    return False
                if response.status != 200:
                    self._status("error", f"{self.description} answered HTTP {response.status}")
                    return False
                facts = await response.json(content_type=None)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError) as exc:
            self._status("error", f"cannot reach {self.description}: {exc or type(exc).__name__}")
            return False
        await self._learn(facts)
        self._status("ready", f"{self.model} on {self.description}")
        return True

    async def _learn(self, facts: Any) -> None:
        """The served model's name and window, where the server says them."""
        if self.settings.backend == "openai" and isinstance(facts, dict):
            served = [m for m in facts.get("data", []) if isinstance(m, dict)]
            names = [m.get("id") for m in served]
            if served and self.model not in names:
                log.info("%s serves %s, not %s: using %s", self.description, names, self.model, names[0])
                self.model = names[0]
            for entry in served:
                if entry.get("id") == self.model and isinstance(entry.get("max_model_len"), int):
                    self.context_tokens = min(self.settings.context_tokens, entry["max_model_len"])
        elif self._session is not None:  # llama-server: n_ctx from /props
            try:
                async with self._session.get(self.url + "/props", timeout=aiohttp.ClientTimeout(total=10)) as r:
                    props = await r.json(content_type=None) if r.status == 200 else {}
                n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx")
                if isinstance(n_ctx, int) and n_ctx > 0:
                    self.context_tokens = min(self.settings.context_tokens, n_ctx)
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError):
                pass

    def _status(self, state: str, message: str) -> None:
        if (state, message) != (self.state, self._message):
            self.state, self._message = state, message
            self.on_status(state, message, None)

    async def generate(self, job: EngineJob) -> GenerationResult:
        if self._session is None or self.state != "ready":
            raise EngineError(f"{self.description} is not ready", "loading")
        started = time.monotonic()
        deadline = started + job.deadline_ms / 1000 if job.deadline_ms else None
        result = GenerationResult(text="", reason="length")
        text = ""
        try:
            async with self._session.post(self.url + self.dialect.completion_path,
                                          json=self.dialect.body(job, self.model)) as response:
                if response.status != 200:
                    raise _error_of(self.description, response.status, await response.text())
                if job.warmup:
                    result.reason = "warmup"
                    return result
                async for event in sse.events(response):
                    if event is sse.DONE:
                        break
                    if isinstance(event, dict) and "error" in event:
                        raise EngineError(f"{self.description}: {event['error']}")
                    delta, finish = self.dialect.text_of(event)
                    if delta:
                        if result.first_token_ms is None:
                            result.first_token_ms = (time.monotonic() - started) * 1000
                        result.new_tokens += 1  # an event per token, as both servers stream
                        text += delta
                    _learn_usage(result, event)
                    cut = None if job.ignore_stops or job.shape is None else stop_index(text, job.shape)
                    if cut is not None:  # complete: leaving the block closes the stream, which stops the server
                        text, result.reason = text[:cut], "stop"
                        break
                    if finish:
                        result.reason = finish
                        break
                    if deadline is not None and time.monotonic() >= deadline:
                        result.reason = "deadline"
                        break
        except asyncio.TimeoutError:
            raise EngineError(f"{self.description} did not answer within {self.settings.timeout_s} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineError(f"lost {self.description}: {exc}") from None
        result.text = text
        result.decode_ms = (time.monotonic() - started) * 1000
        return result

    async def forget(self, document: str) -> None:
        pass  # the server's prefix cache manages itself

    def forget_all(self) -> None:
        pass

    async def report(self) -> dict[str, Any]:
        return {"engine": {"state": self.state, "url": self.url, "kind": self.dialect.name}}

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self._session is not None:
            await self._session.close()


def _learn_usage(result: GenerationResult, event: Any) -> None:
    """Prompt and cache figures, where the server reports them (vLLM's usage, llama-server's timings)."""
    if not isinstance(event, dict):
        return
    if isinstance(usage := event.get("usage"), dict) and isinstance(usage.get("prompt_tokens"), int):
        result.prompt_tokens = usage["prompt_tokens"]
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        result.reused_tokens = cached if isinstance(cached, int) else result.reused_tokens
    if isinstance(timings := event.get("timings"), dict):
        cached, evaluated = timings.get("cache_n"), timings.get("prompt_n")
        if isinstance(cached, int) and isinstance(evaluated, int):
            result.reused_tokens, result.prefill_tokens = cached, evaluated
            result.prompt_tokens = cached + evaluated
        if isinstance(timings.get("predicted_n"), int):
            result.new_tokens = timings["predicted_n"]


def _error_of(description: str, status: int, text: str) -> EngineError:
    if status == 503:
        return EngineError(f"{description} is loading its model", "loading")
    if status in (401, 403):
        return EngineError(f"{description} refused the API key (HTTP {status}; set engine.api_key_env)")
    return EngineError(f"{description} answered HTTP {status}: {text[:300]}")
