"""``phils bench accept``: the request an editor makes right after the user accepts a suggestion.

At each of ``--requests`` line starts of a real file the document is cut there
and a completion requested; the user reads it for ``--read-ms``, accepts it
(the editor inserts it), and the editor asks again at its end. That second
request is what ``completion.ahead`` answers from work done while the first
suggestion was on screen. Each mode (ahead on, off) runs in a fresh server.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from .bench import _summary, machine, write_report
from .lsp_client import start_server, stop_server
from .lsp_client import stats as server_stats

MODES = {"ahead-off": ["completion.ahead=false"], "ahead-on": ["completion.ahead=true"]}


async def run_mode(mode: str, args: Any, cuts: list[str], path: Path) -> dict[str, Any]:
    from lsprotocol import types

    command = ["--model", args.model, "--log-level", "warning"]
    for item in ["engine.backend=local", "completion.warmup_ms=0", *(args.set or []), *MODES[mode]]:
        command += ["--set", item]
    client = await start_server(command, root=Path.cwd())
    uri = path.resolve().as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        types.TextDocumentItem(uri=uri, language_id="python", version=1, text=cuts[0])))
    version, first_ms, after_ms, answers = 1, [], [], []

    async def ask(line: int, character: int) -> tuple[str, float]:
        started = time.monotonic()
        result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line, character),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
        return (result.items[0].insert_text if result and result.items else ""), (time.monotonic() - started) * 1000

    def replace_all(text: str) -> None:
        nonlocal version
        version += 1
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))

    for text in cuts:
        replace_all(text)
        line = text.count("\n")
        suggestion, ms = await ask(line, 0)
        first_ms.append(ms)
        if not suggestion:
            answers.append(("", ""))
            continue
        await asyncio.sleep(args.read_ms / 1000)
        replace_all(text + suggestion)  # accepted
        end_line = line + suggestion.count("\n")
        end_character = len(suggestion.rsplit("\n", 1)[-1].encode("utf-16-le")) // 2
        following, ms = await ask(end_line, end_character)
        after_ms.append(ms)
        answers.append((suggestion, following))
    stats = await server_stats(client)
    await stop_server(client)
    return {"mode": mode, "requests": len(first_ms), "first_ms": _summary(first_ms),
            "after_accept_ms": _summary(after_ms), "after_accept": len(after_ms), "answered_ahead": stats["ahead"],
            "ahead_computed": stats["ahead_computed"], "answers": answers}


def cut_points(source: str, count: int, skip_lines: int) -> list[str]:
    """The file cut at ``count`` line starts after ``skip_lines``, each before an indented or code line."""
    lines = source.splitlines(keepends=True)
    starts = [i for i in range(skip_lines, len(lines)) if lines[i].strip()]
    step = max(len(starts) // max(count, 1), 1)
    return ["".join(lines[:i]) for i in starts[::step][:count]]


def run(args: Any) -> int:
    path = Path(args.file)
    cuts = cut_points(path.read_text(encoding="utf-8"), args.requests, args.prompt_lines)
    results = {}
    for mode in args.modes.split(","):
        started = time.monotonic()
        results[mode] = asyncio.run(run_mode(mode, args, cuts, path))
        shown = {k: v for k, v in results[mode].items() if k != "answers"}
        print(f"{mode}: {json.dumps(shown)} ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    modes = list(results)
    identical = all(results[m]["answers"] == results[modes[0]]["answers"] for m in modes)
    report = {"command": "phils bench accept " + " ".join(sys.argv[3:]), "date": time.strftime("%Y-%m-%d %H:%M"),
              "model": args.model, "file": args.file, "machine": machine(), "read_ms": args.read_ms,
              "answers_identical_across_modes": identical, "modes": results}
    write_report(args.out, f"accept-{args.name or Path(args.model).name}", report, markdown(report))
    return 0


def markdown(report: dict[str, Any]) -> str:
    rows = ["| mode | requests | first request p50 / p95 ms | after accepting p50 / p95 ms | answered ahead |",
            "| --- | --- | --- | --- | --- |"]
    for r in report["modes"].values():
        rows.append(f"| {r['mode']} | {r['requests']} | {r['first_ms']['p50']} / {r['first_ms']['p95']} "
                    f"| {r['after_accept_ms']['p50']} / {r['after_accept_ms']['p95']} "
                    f"| {r['answered_ahead']} of {r['after_accept']} |")
    m = report["machine"]
    return "\n".join([
        f"# After accepting a suggestion: {Path(report['model']).name}", "",
        f"`{report['command']}` on {report['date']}: {m['cpu']}, {m['cores']} cores; the user reads each "
        f"suggestion for {report['read_ms']} ms before accepting it.", "", *rows, "",
        f"Answers identical across modes: {report['answers_identical_across_modes']}.", ""])
