"""Drive a ``phils serve`` subprocess over stdio, as an editor would (for the bench and the eval)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

LOAD_TIMEOUT_S = 1800


async def start_server(args: list[str], root: Path | None = None) -> Any:
    """Start ``phils serve ARGS``, initialize a session (in workspace ``root``), and wait until its model is ready."""
    from lsprotocol import types
    from pygls.lsp.client import LanguageClient

    client = LanguageClient("phils-tools", "1")
    ready = asyncio.Event()
    status: dict[str, str] = {}

    @client.feature("phils/status")
    def on_status(ls: Any, params: Any) -> None:
        status.update(state=params.state, message=params.message)
        if params.state in ("ready", "error"):
            ready.set()

    await client.start_io(sys.executable, "-m", "phils", "serve", *args)
    folders = [types.WorkspaceFolder(uri=root.as_uri(), name=root.name)] if root is not None else None
    await client.initialize_async(types.InitializeParams(
        capabilities=types.ClientCapabilities(), root_uri=root.as_uri() if root is not None else None,
        workspace_folders=folders))
    client.initialized(types.InitializedParams())
    await asyncio.wait_for(ready.wait(), LOAD_TIMEOUT_S)
    if status.get("state") != "ready":
        await stop_server(client)
        raise SystemExit(f"the model did not load: {status.get('message')}")
    return client


async def stop_server(client: Any) -> None:
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()


async def stats(client: Any) -> dict[str, Any]:
    return plain(await client.protocol.send_request_async("phils/stats", {}))


def plain(value: Any) -> Any:
    """pygls hands back custom results as named tuples; turn them into dicts."""
    if hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
