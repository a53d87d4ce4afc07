"""Load benchmarks over a server's stdio: a flood of edits, and a soak.

``flood``: didChange at a fixed rate (1 000/s by default) into one document,
with completion requests, cancels and cheap ``phils/stats`` probes
interleaved. A probe's latency is how long a message waits behind whatever the
server is doing: if edits waited behind generations, probes would too.

``soak``: typing bursts into several documents with pauses, completions after
each pause, some cancelled, documents opened and closed, for a fixed time.

Both report requests served, latency percentiles, the server's thread count
and RSS at the start, the end and after settling; nothing leaves loopback.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from .raw_client import RawServer
from ..machine import process_figures
from ..lsp.stats import percentiles

REQUEST_CANCELLED = -32800
ALPHABET = "abcdefghij klmnop(qrs)tuv, wxyz = 0123456789 +-*"
BASE = "import os\n\n\ndef process(items, limit=10):\n    \"\"\"Return the first items, cleaned.\"\"\"\n    result = []\n"


def _position_at_end(text: str) -> dict[str, int]:
    lines = text.split("\n")
    return {"line": len(lines) - 1, "character": len(lines[-1].encode("utf-16-le")) // 2}


class _Session:
    """Requests sent with their send times; responses matched as they arrive."""

    def __init__(self, server: RawServer):
        self.server = server
        self.pending: dict[int, tuple[str, float]] = {}
        self.latency_ms: dict[str, list[float]] = {"probe": [], "completion": []}
        self.cancelled = 0
        self.errors = 0
        self.suggestions = 0

    def request(self, kind: str, method: str, params: Any) -> int:
        msg_id = self.server.next_id()
        self.pending[msg_id] = (kind, time.monotonic())
        self.server.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return msg_id

    def inline(self, uri: str, text: str) -> int:
        return self.request("completion", "textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": _position_at_end(text), "context": {"triggerKind": 2}})

    def cancel(self, msg_id: int) -> None:
        self.server.notify("$/cancelRequest", {"id": msg_id})

    def collect(self, timeout: float = 0.0) -> None:
        """Match responses that have arrived (waiting up to ``timeout`` for all pending)."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.server.next_response(min(0.05, max(0.0, deadline - time.monotonic())))
            if message is None:
                if not self.pending or time.monotonic() >= deadline:
                    return
                continue
            kind, sent = self.pending.pop(message.get("id"), (None, 0.0))
            if kind is None:
                continue
            if "error" in message:
                if message["error"]["code"] == REQUEST_CANCELLED:
                    self.cancelled += 1
                else:
                    self.errors += 1
                continue
            self.latency_ms[kind].append((message["_received"] - sent) * 1000)
            if kind == "completion" and message["result"] and message["result"]["items"]:
                self.suggestions += 1


def _edit(server: RawServer, uri: str, version: int, text: str, insert: str) -> str:
    at = _position_at_end(text)
    server.notify("textDocument/didChange", {
        "textDocument": {"uri": uri, "version": version},
        "contentChanges": [{"range": {"start": at, "end": at}, "text": insert}]})
    return text + insert


def _in_sync(server: RawServer, session: _Session, uri: str, text: str) -> bool:
    """The server completes the document exactly as it completes a fresh copy of the client's text."""
    session.collect(timeout=60)
    fresh = uri.replace(".py", "-fresh.py")
    server.open(fresh, text)
    a = server.inline(uri, **_position_at_end(text))
    b = server.inline(fresh, **_position_at_end(text))
    server.notify("textDocument/didClose", {"textDocument": {"uri": fresh}})
    return "result" in a and a.get("result") == b.get("result")


def run_flood(server_args: list[str], seconds: float = 10.0, edits_per_s: int = 1000, request_every: int = 25,
              probe_every: int = 50, settle_s: float = 5.0, env: dict[str, str] | None = None,
              cwd: str | None = None) -> dict[str, Any]:
    server = RawServer(*server_args, env=env, cwd=cwd)
    try:
        server.initialize()
        session = _Session(server)
        uri, text, version = "file:///flood/flood.py", BASE + "    ", 1
        server.open(uri, text)
        server.inline(uri, **_position_at_end(text))  # the first completion starts the tokenizer's threads
        ready = process_figures(server.process.pid)
        started = time.monotonic()
        sent = requests = 0
        last_request: int | None = None
        while (elapsed := time.monotonic() - started) < seconds:
            while sent < int(elapsed * edits_per_s):
                sent += 1
                version += 1
                insert = "\n    " if sent % 40 == 0 else ALPHABET[sent % len(ALPHABET)]
                text = _edit(server, uri, version, text, insert)
                if sent % request_every == 0:
                    if last_request is not None and requests % 2:
                        session.cancel(last_request)  # every other request is cancelled by the editor
                    last_request = session.inline(uri, text)
                    requests += 1
                if sent % probe_every == 0:
                    session.request("probe", "phils/stats", {})
            if sent % 20 == 0:
                session.collect()
            time.sleep(0.001)
        flood_s = time.monotonic() - started
        session.collect(timeout=60)
        end = process_figures(server.process.pid)
        time.sleep(settle_s)
        settled = process_figures(server.process.pid)
        in_sync = _in_sync(server, session, uri, text)
        stats = server.request("phils/stats", {})["result"]
        return {
            "benchmark": "flood",
            "edits": sent,
            "edits_per_s": round(sent / flood_s, 1),
            "seconds": round(flood_s, 1),
            "completion_requests": requests,
            "unanswered": len(session.pending),
            "cancelled": session.cancelled,
            "errors": session.errors,
            "suggestions": session.suggestions,
            "probe_ms": {**percentiles(session.latency_ms["probe"]),
                         "max": round(max(session.latency_ms["probe"], default=0), 1)},
            "completion_ms": percentiles(session.latency_ms["completion"]),
            # How long one completion kept the model busy (server side): what an edit would wait.
            "server_completion_ms": stats["latency_ms"],
            "threads": {"ready": ready["threads"], "end": end["threads"], "settled": settled["threads"]},
            "rss_mb": {"ready": ready["rss_mb"], "end": end["rss_mb"], "settled": settled["rss_mb"]},
            "in_sync": in_sync,
            "server_alive": server.alive(),
        }
    finally:
        server.close()


def run_soak(server_args: list[str], seconds: float = 60.0, documents: int = 5, seed: int = 1,
             env: dict[str, str] | None = None, cwd: str | None = None) -> dict[str, Any]:
    rng = random.Random(seed)
    server = RawServer(*server_args, env=env, cwd=cwd)
    try:
        server.initialize()
        session = _Session(server)
        docs: dict[str, list[Any]] = {}  # uri -> [text, version]

        def open_doc(n: int) -> None:
            uri = f"file:///soak/doc{n}.py"
            docs[uri] = [BASE + "    ", 1]
            server.open(uri, docs[uri][0])

        for n in range(documents):
            open_doc(n)
        start = process_figures(server.process.pid)
        started = time.monotonic()
        samples = [{"s": 0.0, **start}]
        opened = documents
        while time.monotonic() - started < seconds:
            if time.monotonic() - started >= samples[-1]["s"] + seconds / 8:
                samples.append({"s": round(time.monotonic() - started, 1), **process_figures(server.process.pid)})
            uri = rng.choice(list(docs))
            entry = docs[uri]
            for _ in range(rng.randint(3, 15)):  # a burst of typing at ~30 keys/s
                entry[1] += 1
                insert = "\n    " if rng.random() < 0.05 else rng.choice(ALPHABET)
                entry[0] = _edit(server, uri, entry[1], entry[0], insert)
                time.sleep(0.03)
            msg_id = session.inline(uri, entry[0])
            if rng.random() < 0.3:
                time.sleep(rng.uniform(0, 0.05))
                session.cancel(msg_id)  # the user typed on
            else:
                session.collect(timeout=30)
            if rng.random() < 0.05:  # close a document, open a new one
                server.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
                del docs[uri]
                open_doc(opened)
                opened += 1
            session.collect()
        session.collect(timeout=60)
        end = process_figures(server.process.pid)
        stats = server.request("phils/stats", {})["result"]
        served = len(session.latency_ms["completion"])
        return {
            "benchmark": "soak",
            "seconds": round(time.monotonic() - started, 1),
            "documents_opened": opened,
            "requests_served": served,
            "suggestions": session.suggestions,
            "cancelled": session.cancelled,
            "errors": session.errors,
            "unanswered": len(session.pending),
            "latency_ms": percentiles(session.latency_ms["completion"]),
            "threads": {"start": start["threads"], "end": end["threads"]},
            "rss_mb": {"start": start["rss_mb"], "end": end["rss_mb"]},
            "anon_mb": {"start": start["anon_mb"], "end": end["anon_mb"]},
            # Over time: file-backed weights page in as they are first read; anonymous memory should level off.
            "samples": samples + [{"s": round(time.monotonic() - started, 1), **end}],
            "kv_cache": stats["cache"],
            "server_alive": server.alive(),
        }
    finally:
        server.close()


def write_results(result: dict[str, Any], name: str, command: str, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {**result, "command": command, "date": time.strftime("%Y-%m-%d %H:%M")}
    path = out_dir / f"{result['benchmark']}-{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
