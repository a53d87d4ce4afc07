"""phils' own engine over HTTP: the shared one on this user's Unix socket, or one at ``engine.url``.

The window attaches with a status stream (``/phils/v1/attach``): its events
drive the editor's status bar (loading percent, ready, error), and its end
tells the engine the window left, or tells the window the engine died, in
which case an auto-started engine is started again. Each completion is one
streamed ``/v1/completions`` request on a connection of its own: closing it
(a newer keystroke, ``$/cancelRequest``) stops the decode loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from ..config import EngineSettings
from ..protocol import EngineError, EngineJob, GenerationResult
from ..runtime import RuntimeDirError, read_or_make_token, token_file
from .. import tokens
from . import StatusCallback, autostart, sse

log = logging.getLogger(__name__)

RESTARTS = 3  # an engine that dies this many times in a row is an error, not a hiccup
NO_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10)


class PhilsEngineBackend:
    heals = True
    warms = True
    fits = True  # judges candidates by the code after the cursor (protocol.EngineJob.fit_suffix)
    fim: dict[str, str] | None = None  # the model's fill-in-the-middle markers, once loaded (if it has them)

    def __init__(self, settings: EngineSettings, on_status: StatusCallback, autostart_engine: bool):
        self.settings = settings
        self.on_status = on_status
        self.autostart = autostart_engine
        self.window = uuid.uuid4().hex
        self.count_tokens = tokens.estimate
        self.context_tokens = settings.context_tokens
        self.state = "idle"
        self.description = settings.url or "the shared engine"
        self._socket: Path | None = None
        self._session: aiohttp.ClientSession | None = None
        self._attached: asyncio.Task | None = None
        self._settled = asyncio.Event()  # the engine said ready or error (or could not be reached)
        self._closed = False

    # --- connection ---------------------------------------------------------

    def _base(self) -> str:
        return "http://phils" if self._socket is not None else self.settings.url.rstrip("/")

    def _new_session(self) -> aiohttp.ClientSession:
        headers = {}
        if self._socket is None:  # TCP: the engine wants its bearer token
            headers["Authorization"] = f"Bearer {self._token()}"
        connector = (aiohttp.UnixConnector(path=str(self._socket), force_close=True) if self._socket is not None
                     else aiohttp.TCPConnector(force_close=True))
        return aiohttp.ClientSession(connector=connector, headers=headers, timeout=NO_TIMEOUT)

    def _token(self) -> str:
        if self.settings.api_key_env:
            return os.environ.get(self.settings.api_key_env, "")
        return read_or_make_token(token_file())

    async def _connect(self) -> None:
        if self.autostart:
            self._status("loading", "starting the shared engine")
            self._socket = await autostart.ensure_engine(self.settings, logging.getLevelName(log.getEffectiveLevel()).lower())
        elif self.settings.url.startswith("unix:"):
            self._socket = Path(self.settings.url[len("unix:"):])
        elif not self.settings.url.startswith(("http://", "https://")):
            raise ValueError("engine.backend = phils needs engine.url (http://127.0.0.1:PORT or unix:/path/to.sock)")
        if self._session is not None:
            await self._session.close()
        self._session = self._new_session()

    async def start(self) -> None:
        """Connect (starting the engine if need be) and wait until it is ready or failed."""
        self._attached = asyncio.ensure_future(self._stay_attached())
        await self._settled.wait()

    async def _stay_attached(self) -> None:
        failures = 0
        while not self._closed:
            try:
                await self._connect()
                await self._follow_status()
                failures = 0 if self.state == "ready" else failures + 1
                reason = "the engine went away"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # EngineStartError, RuntimeDirError, a refused token, a dropped stream...
                failures += 1
                reason = str(exc) or type(exc).__name__
                if isinstance(exc, RuntimeDirError):
                    failures = RESTARTS  # retrying cannot make the directory ours
            if self._closed:
                return
            if not self.autostart or failures >= RESTARTS:
                self._status("error", f"cannot reach the engine ({self.description}): {reason}")
                self._settled.set()
                if not self.autostart:
                    await asyncio.sleep(2.0)  # a remote engine may come back: keep trying, quietly
                    continue
                return
            log.warning("%s; starting it again", reason)
            self._status("loading", f"{reason}; starting it again")
            await asyncio.sleep(0.2 * failures)

    async def _follow_status(self) -> None:
        assert self._session is not None
        async with self._session.get(f"{self._base()}/phils/v1/attach", params={"window": self.window}) as response:
            if response.status in (401, 403):
                raise aiohttp.ClientResponseError(response.request_info, (), status=response.status,
                                                  message="the engine refused this window's token")
            response.raise_for_status()
            async for event in sse.events(response):
                if not isinstance(event, dict) or "state" not in event:
                    continue
                if event["state"] == "ready":
                    await self._fetch_model_facts()
                self._status(event["state"], str(event.get("message", "")), event.get("percent"))

    async def _fetch_model_facts(self) -> None:
        assert self._session is not None
        async with self._session.get(f"{self._base()}/v1/models") as response:
            models = await response.json(content_type=None) if response.status == 200 else {}
        meta = ((models.get("data") or [{}])[0]).get("meta") or {}
        self.context_tokens = int(meta.get("context_tokens") or self.settings.context_tokens)
        fim = meta.get("fim")
        self.fim = fim if isinstance(fim, dict) and all(isinstance(fim.get(k), str) and fim[k]
                                                        for k in ("prefix", "suffix", "middle")) else None
        headers = {"Authorization": f"Bearer {self._token()}"} if self._socket is None else {}
        self.count_tokens = tokens.RemoteCounter(str(self._socket) if self._socket else None, self.settings.url, headers)

    def _status(self, state: str, message: str, percent: Any = None) -> None:
        self.state = state
        self.on_status(state, message, percent if isinstance(percent, int) else None)
        if state in ("ready", "error"):
            self._settled.set()

    # --- work ---------------------------------------------------------------

    async def generate(self, job: EngineJob) -> GenerationResult:
        session = self._session
        if session is None or self.state != "ready":
            raise EngineError(f"the engine is {self.state}", "loading")
        body = {
            "model": self.settings.model,
            "prompt": job.prompt,
            "max_tokens": job.max_new_tokens,
            "temperature": 0,
            "stream": True,
            "phils": {
                "document": job.document, "window": self.window, "warmup": job.warmup,
                "background": job.background,
                "shape": job.shape.as_dict() if job.shape else None, "heal": job.heal,
                "ignore_stops": job.ignore_stops, "deadline_ms": job.deadline_ms,
                "fit_suffix": job.fit_suffix, "candidates": job.candidates, "define": list(job.define),
                "samples": job.samples, "early_accept": job.early_accept, "near_prompt": job.near_prompt,
                "alternatives": job.alternatives,
            },
        }
        try:
            async with session.post(f"{self._base()}/v1/completions", json=body) as response:
                if response.status != 200:
                    raise _error_of(response.status, await response.text())
                async for event in sse.events(response):
                    if isinstance(event, dict) and "error" in event:
                        raise EngineError(str(event["error"].get("message", event["error"])))
                    if isinstance(event, dict) and event.get("choices"):
                        return GenerationResult.from_dict(event["choices"][0].get("text", ""), event.get("phils"))
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineError(f"lost the engine: {exc}", "loading") from None
        raise EngineError("the engine closed the stream without an answer", "loading")

    async def forget(self, document: str) -> None:
        if self._session is None:
            return
        try:
            async with self._session.post(f"{self._base()}/phils/v1/forget",
                                          json={"window": self.window, "document": document}):
                pass
        except (aiohttp.ClientError, OSError):
            pass  # the engine is gone, and the cache with it

    def forget_all(self) -> None:
        """A TCP client left: begin a fresh window on the engine (its old one's caches are freed)."""
        if self._attached is not None:
            self._attached.cancel()
        self.window = uuid.uuid4().hex
        self._settled = asyncio.Event()
        self._attached = asyncio.ensure_future(self._stay_attached())

    async def report(self) -> dict[str, Any]:
        if self._session is None:
            return {}
        try:
            async with self._session.get(f"{self._base()}/health",
                                         timeout=aiohttp.ClientTimeout(total=5)) as response:
                health = await response.json(content_type=None)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError):
            return {"engine": {"state": "unreachable"}}
        return {
            "busy": health.get("busy"),
            "cache": health.get("cache", {}),
            "engine": {k: health.get(k) for k in ("state", "pid", "windows", "version", "model", "process")},
        }

    async def close(self) -> None:
        self._closed = True
        if self._attached is not None:
            self._attached.cancel()
            try:
                await self._attached
            except (asyncio.CancelledError, Exception):
                pass
        if self._session is not None:
            await self._session.close()


def _error_of(status: int, text: str) -> EngineError:
    if status == 503:
        return EngineError(f"the engine is not ready: {text[:200]}", "loading")
    if status in (401, 403):
        return EngineError("the engine refused this window's token", "error")
    return EngineError(f"the engine answered {status}: {text[:300]}")
