"""Server-sent events from an aiohttp response: each ``data:`` payload, parsed as JSON."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

DONE = object()


async def events(response: Any) -> AsyncIterator[Any]:
    """Yield each event's JSON data (``DONE`` for ``[DONE]``); comments and other fields are skipped."""
    data: list[str] = []
    async for raw in response.content:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
        elif not line and data:
            payload = "\n".join(data)
            data = []
            if payload == "[DONE]":
                yield DONE
                return
            try:
                yield json.loads(payload)
            except json.JSONDecodeError:
                continue
