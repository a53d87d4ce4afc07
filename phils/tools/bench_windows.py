"""``phils bench windows``: N editor windows typing at once, on one shared engine vs a server each.

For each N, in a fresh runtime directory (so the shared engine starts cold):
N windows are opened one after the other (each a real ``phils serve`` over
stdio), then all N type into a file of their own at once, asking for a
completion at every line end; then one more window is opened and timed to
its first suggestion. Written: total resident memory of every phils process
(fronts and engines) while all windows are open, time to the first
suggestion of the first and of the newly opened window, and keystroke
latency p50/p95 over all windows.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..machine import usable_cores
from .bench import write_report
from .lsp_client import start_server, stats, stop_server

MODES = {"shared": "engine.backend=auto", "separate": "engine.backend=local"}
SAMPLE = '''def add(a, b):
    """Return the sum of a and b."""
    return a + b


def mean(values):
    """The arithmetic mean of a list of numbers."""
    return sum(values) / len(values)


def clamp(x, low, high):
    """x limited to the range [low, high]."""
    return max(low, min(x, high))
'''


async def _open(args: list[str], uri: str, text: str) -> tuple[Any, float]:
    """Open a window with one document; returns (client, seconds to its first suggestion)."""
    from lsprotocol import types

    started = time.monotonic()
    client = await start_server(args)
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
    lines = text.split("\n")
    await _inline(client, uri, len(lines) - 1, len(lines[-1]))
    return client, time.monotonic() - started


async def _inline(client: Any, uri: str, line: int, character: int) -> Any:
    from lsprotocol import types

    return await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))


async def _type(client: Any, uri: str, opened: str, typed: str, latencies: list[float]) -> None:
    from lsprotocol import types

    line, character, version = opened.count("\n"), len(opened.rsplit("\n", 1)[-1]), 1
    for ch in typed:
        version += 1
        here = types.Position(line=line, character=character)
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(here, here), text=ch)]))
        line, character = (line + 1, 0) if ch == "\n" else (line, character + 1)
        await asyncio.sleep(0.005)
        if ch == "\n":
            started = time.monotonic()
            await _inline(client, uri, line, character)
            latencies.append((time.monotonic() - started) * 1000)


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
    except (OSError, StopIteration):
        return 0.0


def _front_pids(clients: list[Any]) -> list[int]:
    return [c._server.pid for c in clients if getattr(c, "_server", None) is not None]


async def run_windows(mode: str, windows: int, base_args: list[str]) -> dict[str, Any]:
    args = [*base_args, "--set", MODES[mode]]
    opened = SAMPLE + "\n\n"
    typed = "def double(x):\n    return 2 * x\n\n\ndef square(x):\n    return x * x\n"
    clients: list[Any] = []
    first_s: list[float] = []
    for i in range(windows):
        client, seconds = await _open(args, f"file:///bench/w{i}.py", opened)
        clients.append(client)
        first_s.append(seconds)
    engine_pids = set()
    for client in clients:
        engine = (await stats(client)).get("engine") or {}
        if engine.get("pid"):
            engine_pids.add(engine["pid"])
    latencies: list[float] = []
    await asyncio.gather(*(_type(c, f"file:///bench/w{i}.py", opened, typed, latencies) for i, c in enumerate(clients)))
    fronts = _front_pids(clients)
    rss = {"fronts_mb": round(sum(_rss_mb(p) for p in fronts)), "engines_mb": round(sum(_rss_mb(p) for p in engine_pids))}
    rss["total_mb"] = rss["fronts_mb"] + rss["engines_mb"]
    each = [round(_rss_mb(p)) for p in fronts]
    newcomer, new_window_s = await _open(args, "file:///bench/new.py", opened)
    for client in [*clients, newcomer]:
        await stop_server(client)
    ordered = sorted(latencies)
    return {
        "mode": mode, "windows": windows, "rss": rss, "front_rss_mb_each": each,
        "engine_processes": len(engine_pids) if mode == "shared" else windows,
        "first_window_first_suggestion_s": round(first_s[0], 2),
        "new_window_first_suggestion_s": round(new_window_s, 2),
        "keystrokes": len(latencies),
        "latency_ms": {"p50": round(statistics.median(ordered)) if ordered else None,
                       "p95": round(ordered[min(int(0.95 * len(ordered)), len(ordered) - 1)]) if ordered else None},
    }


def run(args: Any) -> int:
    counts = [int(n) for n in args.windows.split(",")]
    base = ["--log-level", "warning", "--set", "completion.warmup_ms=0", "--set", "engine.ignore_stops=true",
            "--set", f"engine.max_new_tokens={args.new_tokens}"]
    if args.model:
        base += ["--model", args.model]
    if args.profile:
        base += ["--profile", args.profile]
    for item in args.set or []:
        base += ["--set", item]
    rows = []
    for mode in ("shared", "separate"):
        for n in counts:
            with tempfile.TemporaryDirectory(prefix="phils-bench-") as runtime:
                os.environ["XDG_RUNTIME_DIR"] = runtime  # a cold shared engine for each row
                row = asyncio.run(run_windows(mode, n, base))
                subprocess.run([sys.executable, "-m", "phils", "engine", "stop", "--all"], capture_output=True,
                               env=dict(os.environ))
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
    result = {
        "command": "phils " + " ".join(sys.argv[1:]),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": usable_cores()},
        "model": args.model or args.profile,
        "new_tokens": args.new_tokens,
        "rows": rows,
    }
    name = args.name or Path(args.model or args.profile or "model").name
    write_report(args.out, f"windows-{name}", result, markdown(result))
    return 0


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Windows on one engine vs a server each — {result['model']}", "",
             f"Command: `{result['command']}`; {result['new_tokens']} new tokens a request; "
             f"{result['machine']['cores']} cores.", "",
             "| mode | windows | engines | total RSS MB | front RSS MB (each) | first window's first suggestion s "
             "| new window's first suggestion s | keystroke p50 ms | p95 ms |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        lines.append(f"| {r['mode']} | {r['windows']} | {r['engine_processes']} | {r['rss']['total_mb']} | "
                     f"{', '.join(map(str, r['front_rss_mb_each']))} | {r['first_window_first_suggestion_s']} | "
                     f"{r['new_window_first_suggestion_s']} | {r['latency_ms']['p50']} | {r['latency_ms']['p95']} |")
    return "\n".join(lines) + "\n"
