"""Remote engines for teams: the OpenAI adapter against phils' own engine and against a stub that
speaks vLLM's documented streaming format (vLLM itself cannot run on these machines), and the
failures an editor must see as a status, never as a hang."""

from __future__ import annotations

import asyncio
import json
import threading
import time

from aiohttp import web

from conftest import ROOT, server_env
from phils.tools.raw_client import RawServer
from test_shared_engine import _free_port, _wait_ready, spawn_tcp_engine

SOURCE = 'def add(a, b):\n    """Return the sum of a and b."""\n    '
# What the stub "model" says after any prompt: the body, then a new function (past the block).
STUB_TOKENS = ["    return", " a", " +", " b", "\n", "\n", "\n", "def", " other", "():", "\n", "    pass", "\n"] * 20


class StubVLLM:
    """An OpenAI /v1/completions server in the format vLLM streams, one token per event."""

    def __init__(self, models_status: int = 200, loading_for_s: float = 0.0, silent: bool = False):
        self.models_status = models_status
        self.loading_until = time.monotonic() + loading_for_s
        self.silent = silent  # accept completions and never answer
        self.requests: list[dict] = []
        self.sent_tokens: list[int] = []  # per request: events sent before the client left
        self.port = _free_port()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        async def models(request: web.Request) -> web.Response:
            if self.models_status != 200:
                return web.json_response({"error": {"message": "nope"}}, status=self.models_status)
            if time.monotonic() < self.loading_until:
                return web.json_response({"error": {"message": "loading"}}, status=503)
            return web.json_response({"object": "list", "data": [
                {"id": "microsoft/phi-2", "object": "model", "owned_by": "vllm", "max_model_len": 2048}]})

        async def completions(request: web.Request) -> web.StreamResponse:
            body = await request.json()
            self.requests.append({"body": body, "auth": request.headers.get("Authorization")})
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            if self.silent:
                await asyncio.sleep(3600)
            sent = 0
            self.sent_tokens.append(0)
            try:
                for token in STUB_TOKENS[: body["max_tokens"]]:
                    chunk = {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": body["model"],
                             "choices": [{"index": 0, "text": token, "logprobs": None, "finish_reason": None}]}
                    await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    sent += 1
                    self.sent_tokens[-1] = sent
                    await asyncio.sleep(0.02)
                final = {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": "length"}]}
                await response.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())
            except (ConnectionResetError, asyncio.CancelledError):
                pass
            return response

        async def main() -> None:
            app = web.Application()
            app.router.add_get("/v1/models", models)
            app.router.add_post("/v1/completions", completions)
            runner = web.AppRunner(app, handler_cancellation=True)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._ready.set()
            await asyncio.Event().wait()

        asyncio.run(main())


def front(*settings: str, env: dict | None = None) -> RawServer:
    args = []
    for item in ("completion.warmup_ms=0", "engine.max_new_tokens=64", *settings):
        args += ["--set", item]
    return RawServer(*args, env={**server_env(), **(env or {})}, cwd=str(ROOT))


def test_vllm_requests_are_explicit_and_the_stream_closes_when_the_block_ends():
    stub = StubVLLM()
    server = front("engine.backend=openai", f"engine.url={stub.url}", "engine.api_key_env=PHILS_TEST_KEY",
                   env={"PHILS_TEST_KEY": "sk-test"})
    try:
        server.initialize()
        server.open("file:///a.py", SOURCE)
        items = server.inline("file:///a.py", 2, 4)["result"]["items"]
        assert [i["insertText"] for i in items] == ["return a + b"]
        body = stub.requests[-1]["body"]
        assert stub.requests[-1]["auth"] == "Bearer sk-test"
        assert body["model"] == "microsoft/phi-2" and body["stream"] is True
        assert body["max_tokens"] == 64 and body["temperature"] == 0 and body["n"] == 1
        assert body["prompt"].endswith('"""Return the sum of a and b."""\n')  # indentation held back: no healing
        time.sleep(0.3)
        # The stop rule ended the suggestion at "def other": the stream was closed there, not at 64 tokens.
        assert stub.sent_tokens[-1] <= 10, stub.sent_tokens
    finally:
        server.close()


def test_a_refused_api_key_is_an_error_status():
    stub = StubVLLM(models_status=401)
    server = front("engine.backend=openai", f"engine.url={stub.url}")
    try:
        server.initialize(wait_ready=False)
        error = server.wait_status("error", timeout=30)
        assert "API key" in error["message"]
        server.open("file:///a.py", SOURCE)
        assert server.inline("file:///a.py", 2, 4)["result"] == {"items": []}
    finally:
        server.close()


def test_a_loading_server_is_loading_then_ready():
    stub = StubVLLM(loading_for_s=3)
    server = front("engine.backend=openai", f"engine.url={stub.url}")
    try:
        server.initialize(wait_ready=False)
        assert "loading" in server.wait_status("loading", timeout=30)["message"]
        server.wait_status("ready", timeout=30)
        server.open("file:///a.py", SOURCE)
        assert server.inline("file:///a.py", 2, 4)["result"]["items"]
    finally:
        server.close()


def test_nothing_listening_is_an_error_status_and_the_server_keeps_running():
    server = front("engine.backend=openai", f"engine.url=http://127.0.0.1:{_free_port()}")
    try:
        server.initialize(wait_ready=False)
        assert "cannot reach" in server.wait_status("error", timeout=30)["message"]
        server.open("file:///a.py", SOURCE)
        assert server.inline("file:///a.py", 2, 4)["result"] == {"items": []}
        assert server.alive()
    finally:
        server.close()


def test_an_engine_that_never_answers_times_out_with_an_error():
    stub = StubVLLM(silent=True)
    server = front("engine.backend=openai", f"engine.url={stub.url}", "engine.timeout_s=2")
    try:
        server.initialize()
        server.open("file:///a.py", SOURCE)
        started = time.monotonic()
        assert server.inline("file:///a.py", 2, 4, timeout=30)["result"] == {"items": []}
        assert time.monotonic() - started < 10
        assert "did not answer" in server.wait_status("error", timeout=10)["message"]
    finally:
        server.close()


def test_the_openai_adapter_works_against_phils_own_engine(tiny_model, tmp_path):
    token_file = tmp_path / "token"
    engine, port = spawn_tcp_engine(tiny_model, token_file)
    try:
        token = token_file.read_text().strip()
        _wait_ready(port, token)
        for backend in ("openai", "phils"):
            server = front(f"engine.backend={backend}", f"engine.url=http://127.0.0.1:{port}",
                           f"engine.model={tiny_model}", "engine.api_key_env=PHILS_TEST_KEY",
                           "engine.ignore_stops=true", "engine.max_new_tokens=4",
                           "completion.python_syntax=false",  # (the random model's words are no Python)
                           env={"PHILS_TEST_KEY": token})
            try:
                server.initialize()
                server.open("file:///a.py", "def add(a, b):\n    return")
                assert server.inline("file:///a.py", 1, 10)["result"]["items"], backend
            finally:
                server.close()
    finally:
        engine.terminate()
        engine.wait(30)


def test_the_phils_backend_without_its_token_is_an_error(tiny_model, tmp_path):
    engine, port = spawn_tcp_engine(tiny_model, tmp_path / "token")
    try:
        server = front("engine.backend=phils", f"engine.url=http://127.0.0.1:{port}",
                       "engine.api_key_env=PHILS_TEST_KEY", env={"PHILS_TEST_KEY": "wrong"})
        try:
            server.initialize(wait_ready=False)
            assert "token" in server.wait_status("error", timeout=30)["message"]
            assert server.alive()
        finally:
            server.close()
    finally:
        engine.terminate()
        engine.wait(30)
