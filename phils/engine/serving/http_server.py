"""``phils engine``: the shared engine behind HTTP, on a per-user Unix socket or 127.0.0.1.

The wire is OpenAI's ``POST /v1/completions`` (streamed as server-sent events),
so phils' front, curl, or any OpenAI client can use it; phils' additions ride
under a ``phils`` key (document and window for KV reuse, the stop rule as
data, healing, warm-up). Closing the connection cancels the request between
two tokens. Besides: ``GET /health`` (503 while loading, like llama-server),
``GET /v1/models``, ``GET /metrics`` (Prometheus), and under ``/phils/v1/``
the window attachment (a status event stream whose end means the window
left), forget and shutdown; ``POST /tokenize`` counts a prompt's tokens.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from ... import __version__
from ...config import EngineSettings
from ...machine import process_figures
from ...runtime import settings_hash
from ...stoprule import Shape
from ...protocol import EngineJob, GenerationResult
from .service import CancelFlag, EngineService

log = logging.getLogger(__name__)

SERVICE = web.AppKey("service", EngineService)
STATE = web.AppKey("state", dict)
FINISH_REASONS = {"stop": "stop", "eos": "stop", "length": "length", "deadline": "length"}
MAX_DEFINE = 4  # names to define a candidate for (each costs a few lines of decoding)
MAX_SAMPLES = 8  # sampled answers a request may ask for (likewise)
MAX_ALTERNATIVES = 8  # other answers a request may ask for (likewise)


class BadRequest(ValueError):
    pass


# --- requests ---------------------------------------------------------------


def parse_job(body: Any, service: EngineService) -> tuple[EngineJob, bool]:
    """An OpenAI completion request (with phils' extras) → (job, stream)."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise BadRequest("prompt must be a string")
    max_tokens = body.get("max_tokens", 16)  # OpenAI's default
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 0 <= max_tokens <= 32768:
        raise BadRequest("max_tokens must be an integer from 0 to 32768")
    stop = body.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else stop
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) and s for s in stop):
        raise BadRequest("stop must be a string or a list of strings")
    extra = body.get("phils")
    extra = {} if extra is None else extra
    if not isinstance(extra, dict):
        raise BadRequest("phils must be an object")
    try:
        shape = Shape.from_dict(extra["shape"]) if extra.get("shape") is not None else None
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    warmup = bool(extra.get("warmup", False)) or max_tokens == 0
    job = EngineJob(
        document=str(extra.get("document", "")),
        window=str(extra.get("window", "")),
        prompt=prompt,
        max_new_tokens=max_tokens if max_tokens else service.settings.max_new_tokens,
        warmup=warmup,
        shape=shape,
        stop_strings=tuple(stop),
        heal=bool(extra.get("heal", True)),
        ignore_stops=bool(extra.get("ignore_stops", False)),
        deadline_ms=_non_negative_int(extra.get("deadline_ms", 0), "phils.deadline_ms"),
        fit_suffix=_string(extra.get("fit_suffix", ""), "phils.fit_suffix"),
        candidates=max(_non_negative_int(extra.get("candidates", 1), "phils.candidates"), 1),
        define=_names(extra.get("define", []), "phils.define"),
        samples=min(_non_negative_int(extra.get("samples", 0), "phils.samples"), MAX_SAMPLES),
        early_accept=bool(extra.get("early_accept", True)),
        background=bool(extra.get("background", False)),
        near_prompt=_string(extra.get("near_prompt", ""), "phils.near_prompt"),
        alternatives=min(_non_negative_int(extra.get("alternatives", 0), "phils.alternatives"), MAX_ALTERNATIVES),
    )
    return job, bool(body.get("stream", False))


def _names(value: Any, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.isidentifier() for v in value):
        raise BadRequest(f"{name} must be a list of identifiers")
    return tuple(value[:MAX_DEFINE])


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    return value


def _non_negative_int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadRequest(f"{name} must be a non-negative integer")
    return value


def completion_body(result: GenerationResult, model: str, request_id: str) -> dict[str, Any]:
    finish = FINISH_REASONS.get(result.reason, result.reason)
    return {
        "id": request_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": result.text, "finish_reason": finish, "logprobs": None}],
        "usage": {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.new_tokens,
            "total_tokens": result.prompt_tokens + result.new_tokens,
        },
        "phils": {k: v for k, v in result.__dict__.items() if k != "text"},
    }


# --- handlers -----------------------------------------------------------------


async def completions(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE]
    try:
        job, stream = parse_job(await request.json(), service)
    except (BadRequest, json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _error(400, str(exc), "invalid_request_error")
    if service.state != "ready":
        return _error(503, f"the model is {service.state}: {service.message}", "unavailable_error")
    request_id = f"cmpl-{uuid.uuid4().hex[:24]}"
    response: web.StreamResponse | None = None
    if stream:  # headers now: the client knows it is queued, however long the prefill takes
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        try:
            await response.prepare(request)
        except ConnectionResetError:  # superseded before it started: the normal case, not an error
            log.debug("completion stream closed by the client before it started")
            return response
    cancel = CancelFlag()
    future = service.submit(job, cancel)
    try:
        result: GenerationResult = await asyncio.wrap_future(future)
    except asyncio.CancelledError:  # the client closed the connection: stop between two tokens
        cancel.set()
        raise
    except Exception as exc:
        log.exception("generation failed")
        message = f"generation failed: {type(exc).__name__}: {exc}"[:500]
        if response is None:
            return _error(500, message, "server_error")
        await _send_event(response, {"error": {"message": message, "type": "server_error"}})
        return response
    body = completion_body(result, service.settings.model, request_id)
    if response is None:
        return web.json_response(body)
    try:
        await _send_event(response, body)
        await response.write(b"data: [DONE]\n\n")
    except ConnectionResetError:  # the client stopped listening while the answer was computed: nothing to tell
        log.debug("completion stream closed by the client before its answer")
    return response


async def attach(request: web.Request) -> web.StreamResponse:
    """A window's status stream: its events are state changes; its end means the window left."""
    service, state = request.app[SERVICE], request.app[STATE]
    window = request.query.get("window") or uuid.uuid4().hex
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()

    def listener(status: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(events.put_nowait, status)

    service.subscribe(listener)
    state["windows"][window] = state["windows"].get(window, 0) + 1
    _windows_changed(request.app)
    try:
        await _send_event(response, service.status())
        while True:
            try:
                status = await asyncio.wait_for(events.get(), KEEPALIVE_S)
            except asyncio.TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            await _send_event(response, status)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        service.unsubscribe(listener)
        state["windows"][window] -= 1
        if not state["windows"][window]:
            del state["windows"][window]
            service.window_left(window)
        _windows_changed(request.app)
    return response


KEEPALIVE_S = 15.0


async def health(request: web.Request) -> web.Response:
    service, state = request.app[SERVICE], request.app[STATE]
    status = service.status()
    body = {
        "status": {"ready": "ok"}.get(service.state, service.state),
        **status,
        "version": __version__,
        "settings_hash": settings_hash(service.settings),
        "model": service.settings.model,
        "pid": os.getpid(),
        "windows": len(state["windows"]),
        "busy": service.busy,
        "cache": service.cache_report(),
        "process": process_figures(),
        **service.model_info(),
    }
    return web.json_response(body, status=200 if service.state == "ready" else 503)


async def models(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    entry = {"id": service.settings.model, "object": "model", "created": int(request.app[STATE]["started"]),
             "owned_by": "phils", "meta": service.model_info()}
    return web.json_response({"object": "list", "data": [entry]})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[SERVICE].metrics.exposition(),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def tokenize(request: web.Request) -> web.Response:
    """``{"prompt": text}`` → ``{"count": n}``, as vLLM's /tokenize answers (without the ids)."""
    service = request.app[SERVICE]
    try:
        text = (await request.json())["prompt"]
        if not isinstance(text, str):
            raise TypeError
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        return _error(400, "expected {prompt: string}", "invalid_request_error")
    if service.state != "ready":
        return _error(503, f"the model is {service.state}", "unavailable_error")
    return web.json_response({"count": service.count_tokens(text), "max_model_len": service.model_info()["context_tokens"]})


async def forget(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        window, document = str(body["window"]), str(body["document"])
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        return _error(400, "expected {window, document}", "invalid_request_error")
    request.app[SERVICE].forget(window, document)
    return web.json_response({"ok": True})


async def shutdown(request: web.Request) -> web.Response:
    log.info("asked to stop")
    request.app[STATE]["stop"].set()
    return web.json_response({"ok": True, "pid": os.getpid()})


def _windows_changed(app: web.Application) -> None:
    app[STATE]["last_window_change"] = time.monotonic()
    app[SERVICE].metrics.windows.set(len(app[STATE]["windows"]))


async def _send_event(response: web.StreamResponse, data: Any) -> None:
    await response.write(f"data: {json.dumps(data)}\n\n".encode())


def _error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response({"error": {"code": status, "message": message, "type": kind}}, status=status)


def _bearer_middleware(token: str):
    @web.middleware
    async def check(request: web.Request, handler):
        offered = request.headers.get("Authorization", "")
        if not secrets.compare_digest(offered.encode(), f"Bearer {token}".encode()):
            return _error(401, "a bearer token is required (see the engine's token file)", "authentication_error")
        return await handler(request)

    return check


def make_app(service: EngineService, token: str | None = None) -> web.Application:
    app = web.Application(middlewares=[_bearer_middleware(token)] if token else [], client_max_size=64 * 2**20)
    app[SERVICE] = service
    app[STATE] = {"windows": {}, "started": time.time(), "last_window_change": time.monotonic(),
                  "stop": asyncio.Event()}
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/phils/v1/attach", attach)
    app.router.add_post("/tokenize", tokenize)
    app.router.add_post("/phils/v1/forget", forget)
    app.router.add_post("/phils/v1/shutdown", shutdown)
    return app


# --- running it ---------------------------------------------------------------


def serve(settings: EngineSettings, socket_path: Path | None, host: str = "127.0.0.1", port: int = 0,
          token: str | None = None) -> int:
    """Run the engine until asked to stop, signalled, or idle for ``settings.idle_exit_s``."""
    try:
        return asyncio.run(_serve(settings, socket_path, host, port, token))
    except KeyboardInterrupt:
        return 0


async def _serve(settings: EngineSettings, socket_path: Path | None, host: str, port: int, token: str | None) -> int:
    service = EngineService(settings)
    app = make_app(service, token)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    bound_inode = None
    if socket_path is not None:
        if not _claim_socket_path(socket_path):
            log.error("another engine is serving %s", socket_path)
            await runner.cleanup()
            return 3
        site: web.BaseSite = web.UnixSite(runner, str(socket_path))
        await site.start()
        os.chmod(socket_path, 0o600)
        bound_inode = socket_path.stat().st_ino
        log.info("phils engine %s (pid %d) on %s", __version__, os.getpid(), socket_path)
    else:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("phils engine %s (pid %d) on http://%s:%d", __version__, os.getpid(), host,
                 site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    stop = app[STATE]["stop"]
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, stop.set)
    service.load()
    idle = asyncio.ensure_future(_exit_when_idle(app, settings.idle_exit_s))
    await stop.wait()
    idle.cancel()
    service.close()
    if socket_path is not None and bound_inode is not None:
        try:  # remove the socket only while it is still ours
            if socket_path.stat().st_ino == bound_inode:
                socket_path.unlink()
        except FileNotFoundError:
            pass
    await runner.cleanup()
    log.info("engine stopped")
    return 0


async def _exit_when_idle(app: web.Application, idle_exit_s: int) -> None:
    if idle_exit_s <= 0:
        return
    service, state = app[SERVICE], app[STATE]
    while True:
        await asyncio.sleep(min(1.0, idle_exit_s / 4))
        if state["windows"] or service.busy:
            continue
        quiet = time.monotonic() - max(state["last_window_change"], service.last_activity)
        if quiet >= idle_exit_s:
            log.info("no window for %d s: exiting", idle_exit_s)
            state["stop"].set()
            return


def _claim_socket_path(path: Path) -> bool:
    """True when ``path`` is free (a stale socket of a dead engine is removed); False when an engine answers."""
    if not path.exists() and not path.is_symlink():
        return True
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:  # nobody listens: a dead engine's socket
        log.info("removing the stale socket %s", path)
        path.unlink(missing_ok=True)
        return True
    finally:
        probe.close()
    return False
