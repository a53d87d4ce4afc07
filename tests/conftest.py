"""Shared fixtures: an offline tiny model, and a real phils server over stdio."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

import pytest

# Tests never reach a model hub, and keep to one thread: two threads on a
# shared 2-core machine ran 10x slower than one.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def private_runtime_dir(tmp_path_factory):
    """Shared engines started by the tests live in a runtime dir of their own, and stop at the end."""
    import subprocess

    directory = tmp_path_factory.mktemp("xdg-runtime")
    directory.chmod(0o700)
    previous = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(directory)
    yield directory
    subprocess.run([sys.executable, "-m", "phils", "engine", "stop", "--all"], env=server_env(),
                   capture_output=True, timeout=60)
    if previous is None:
        os.environ.pop("XDG_RUNTIME_DIR", None)
    else:
        os.environ["XDG_RUNTIME_DIR"] = previous


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A random tiny Phi with a tokenizer trained offline (about 8 s, once per run)."""
    from phils.tools.testmodel import make_test_model

    return make_test_model(tmp_path_factory.mktemp("tiny-phi"), shape="tiny")


@pytest.fixture(scope="session")
def phils_cache(tmp_path_factory) -> Path:
    """phils' cache directory for converted models, shared by the whole run."""
    configured = os.environ.get("PHILS_TEST_CACHE")
    return Path(configured) if configured else tmp_path_factory.mktemp("phils-cache")


def server_env(cache: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    if cache is not None:
        env["XDG_CACHE_HOME"] = str(cache)
    return env


class StatusLog:
    """Collects phils/status notifications and lets a test wait for a state."""

    def __init__(self) -> None:
        self.states: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    def add(self, params: Any) -> None:
        self.states.append({"state": params.state, "message": params.message, "percent": getattr(params, "percent", None)})
        self._changed.set()

    async def wait_for(self, *states: str, timeout: float = 120) -> dict[str, Any]:
        async def until() -> dict[str, Any]:
            while True:
                for entry in self.states:
                    if entry["state"] in states:
                        return entry
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(until(), timeout)


@contextlib.asynccontextmanager
async def phils_server(
    *args: str,
    init_options: dict[str, Any] | None = None,
    progress: bool = True,
    wait: str | None = "ready",
    env: dict[str, str] | None = None,
    root: Path | None = None,
    inline: bool = False,
):
    """Start ``phils serve ARGS`` over stdio and initialize a session with it (in workspace ``root``;
    ``inline``: the client declares LSP 3.18 inline completions, as vscode-languageclient 10 does)."""
    from lsprotocol import types
    from pytest_lsp import client_capabilities
    from pytest_lsp.client import make_test_lsp_client

    client = make_test_lsp_client()
    status = StatusLog()
    client.feature("phils/status")(lambda ls, params: status.add(params))
    client.status = status  # type: ignore[attr-defined]
    await client.start_io(sys.executable, "-m", "phils", "serve", *args, env=env or server_env())
    capabilities = client_capabilities("visual-studio-code")
    # vscode-languageclient syncs notebooks by their cells when the server asks for them (LSP 3.17).
    capabilities.notebook_document = types.NotebookDocumentClientCapabilities(
        synchronization=types.NotebookDocumentSyncClientCapabilities())
    if inline:
        capabilities.text_document.inline_completion = types.InlineCompletionClientCapabilities()
    if not progress:
        capabilities.window = types.WindowClientCapabilities(work_done_progress=False)
    result = await client.initialize_session(
        types.InitializeParams(
            capabilities=capabilities, initialization_options=init_options,
            root_uri=root.as_uri() if root is not None else None,
            workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name=root.name)] if root is not None else None,
        )
    )
    client.init_result = result  # type: ignore[attr-defined]
    try:
        if wait:
            await status.wait_for(wait, "error")
        yield client
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.shutdown_session(), 30)
        await client.stop()


def open_doc(client, uri: str, text: str, version: int = 1) -> None:
    from lsprotocol import types

    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=version, text=text)
        )
    )


async def inline(client, uri: str, line: int, character: int):
    from lsprotocol import types

    return await client.text_document_inline_completion_async(
        types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=line, character=character),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
        )
    )


async def stats(client) -> dict[str, Any]:
    """The server's ``phils/stats`` as plain dicts."""
    from phils.tools.lsp_client import plain

    return plain(await client.protocol.send_request_async("phils/stats", {}))


async def wait_until(client, predicate, timeout: float = 30.0) -> dict[str, Any]:
    """Poll ``phils/stats`` until ``predicate`` holds; fail after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        current = await stats(client)
        if predicate(current):
            return current
        assert time.monotonic() < deadline, current
        await asyncio.sleep(0.05)


def start_inline(client, uri: str, line: int, character: int):
    """Send an inline completion request; returns (message id, future of the answer)."""
    import uuid

    from lsprotocol import types

    msg_id = str(uuid.uuid4())
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
    )
    future = asyncio.ensure_future(
        client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id)
    )
    return msg_id, future


def cancel_request(client, msg_id: str) -> None:
    from lsprotocol import types

    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))


@pytest.fixture(scope="session")
def tiny80_model(tmp_path_factory) -> Path:
    """A random tiny Phi with Phi-2's head size (80), which ONNX Runtime's attention kernel needs."""
    from phils.tools.testmodel import make_test_model

    return make_test_model(tmp_path_factory.mktemp("tiny80-phi"), shape="tiny80")
