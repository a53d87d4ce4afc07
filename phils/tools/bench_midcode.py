"""``phils bench midcode``: time to a suggestion in the middle of real code, judged vs plain.

Holes come from real modules installed on every machine (the standard
library's own source): in each module, one simple statement in the middle
of a function body, with code below it, is blanked down to its indentation.
The whole module is the document, opened in a fresh server as an editor
opens a file, and the cursor is put on the blank line (phils' editor clients
send ``phils/didMoveCursor`` when it rests; ``--cursor-notify off`` for an
editor that does not); after ``--open-pause`` seconds (the user reads before
typing) the editor asks for a suggestion at the blank line. Then the line is typed
back a few characters at a time, pausing after each burst as people do, and
the editor asks again after each burst. Then the rest of the line is typed at
the same pace, Enter pressed (the editor indents), and the editor asks on the
new line. Last, the typed text is
deleted and the first request asked again: the same work with its prompt
cached (warm), the yardstick for the first request in a fresh file.

Reported per mode (``judged``: ``completion.fit_suffix`` on, the default;
``plain``: off; both in Phi-2's code format; ``fim``: the defaults for a model
with fill-in-the-middle markers), on the same holes in the same sitting: p50/p95 of the time
from the last keystroke to the suggestion, for the first request in a freshly
opened file and for the requests after it; how often the suggestion at the
blank line was the original line, and its first line's edit similarity to it
(and, while typing, how often the typed text
and the suggestion's first line were); and the share of requests answered from
work done ahead (typed through the last suggestion, computed ahead, or a
prompt the warm-up had already pre-filled).
"""

from __future__ import annotations

import ast
import asyncio
import difflib
import json
import statistics
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bench import machine, write_report
from .lsp_client import start_server, stats as server_stats, stop_server

# Modules of the standard library (present wherever Python is), in a fixed order, so every run and
# every machine with the same Python gets the same holes.
MODULES = (
    "textwrap.py", "json/decoder.py", "csv.py", "shlex.py", "difflib.py", "fractions.py", "calendar.py",
    "configparser.py", "fnmatch.py", "gettext.py", "ipaddress.py", "statistics.py", "tokenize.py",
    "string.py", "heapq.py", "argparse.py", "glob.py", "netrc.py", "mimetypes.py", "quopri.py",
    "ftplib.py", "pprint.py", "dataclasses.py", "traceback.py", "sched.py", "colorsys.py", "filecmp.py",
    "graphlib.py", "locale.py", "plistlib.py",
)
MODES = {  # judged and plain in Phi-2's code format, whatever the model; fim where the model has the markers
    "judged": ["completion.fit_suffix=true", "completion.fim=off"],
    "judged-all": ["completion.fit_suffix=true", "completion.early_accept=false", "completion.fim=off"],
    "plain": ["completion.fit_suffix=false", "completion.fim=off"],
    "fim": ["completion.fim=auto"],
}


@dataclass(frozen=True)
class Hole:
    path: Path  # the module
    document: str  # its text with the line blanked to its indentation
    line: int  # the blank line (0-based)
    indent: str
    original: str  # the line's code, without its indentation


def find_hole(path: Path, max_line: int) -> Hole | None:
    """The simple statement nearest the middle of a function body, in the module's first ``max_line`` lines."""
    source = path.read_text(encoding="utf-8")
    lines = source.split("\n")
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    found: list[int] = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or len(node.body) < 4:
            continue
        for statement in node.body[1:-1]:  # code above it and below it in the same body
            text = lines[statement.lineno - 1]
            if (statement.lineno == statement.end_lineno and statement.lineno <= max_line
                    and isinstance(statement, (ast.Assign, ast.AugAssign, ast.Expr, ast.Return, ast.AnnAssign))
                    and not (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant))
                    and 12 <= len(text.strip()) <= 70 and "#" not in text and ";" not in text):
                found.append(statement.lineno - 1)
    if not found:
        return None
    middle = min(max_line, len(lines)) // 2
    line = min(found, key=lambda n: (abs(n - middle), n))
    text = lines[line]
    indent = text[: len(text) - len(text.lstrip())]
    document = "\n".join([*lines[:line], indent, *lines[line + 1:]])
    return Hole(path, document, line, indent, text.strip())


def holes(count: int, max_line: int) -> list[Hole]:
    root = Path(sysconfig.get_paths()["stdlib"])
    chosen = []
    for name in MODULES:
        if (root / name).is_file() and (hole := find_hole(root / name, max_line)) is not None:
            chosen.append(hole)
        if len(chosen) == count:
            break
    return chosen


def bursts(text: str, size: int) -> list[str]:
    """The line as typed: bursts of about ``size`` characters, each ending at a word's end where one is near."""
    out, start = [], 0
    while start < len(text):
        end = min(start + size, len(text))
        while end < len(text) and end - start < size + 4 and (text[end - 1].isalnum() or text[end - 1] == "_") \
                and (text[end].isalnum() or text[end] == "_"):
            end += 1
        out.append(text[start:end])
        start = end
    return out


async def run_mode(mode: str, command: list[str], chosen: list[Hole], args: Any) -> dict[str, Any]:
    from lsprotocol import types

    requests: list[dict[str, Any]] = []
    settings = [part for item in MODES[mode] for part in ("--set", item)]
    client = await start_server([*command, *settings], root=chosen[0].path.parent if chosen else None)
    for number, hole in enumerate(chosen):
        # Each module opened as the editor opens a file: nothing of it is cached yet, and it is closed after.
        uri = hole.path.as_uri()  # the module's own path, so its package's other modules are found
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            types.TextDocumentItem(uri=uri, language_id="python", version=1, text=hole.document)))
        line, character, version = hole.line, len(hole.indent), 1
        if args.cursor_notify == "on":
            client.protocol.notify("phils/didMoveCursor", {"textDocument": {"uri": uri},
                                                           "position": {"line": line, "character": character}})
        await asyncio.sleep(args.open_pause)
        previous = await server_stats(client)

        async def ask(kind: str, typed: str = "", at: tuple[int, int] | None = None) -> None:
            before = await server_stats(client)
            started = time.monotonic()
            result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(*(at or (line, character))),
                context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
            latency = (time.monotonic() - started) * 1000
            after = await server_stats(client)
            text = result.items[0].insert_text if result and result.items else ""
            # From the warm-up: the engine pre-filled this document since the last request, and the
            # request itself computed (almost) no prompt tokens.
            warmed = after["warmup_tokens"] > previous["warmup_tokens"] and after["requests"] > before["requests"] \
                and after["prefill_tokens"] - before["prefill_tokens"] <= 2
            source = ("typed-through" if after["typed_through"] > before["typed_through"] else
                      "ahead" if after["ahead"] > before["ahead"] else "warm-up" if warmed else "model")
            previous.update(after)
            requests.append({"hole": number, "kind": kind, "ms": round(latency, 1), "source": source,
                             "prompt": after["prompt_tokens"] - before["prompt_tokens"],
                             "prefill": after["prefill_tokens"] - before["prefill_tokens"],
                             # Exact: the line typed so far and the suggestion's first line are the blanked line.
                             "text": text, "exact": (typed + text.split("\n")[0]).strip() == hole.original,
                             "similarity": round(difflib.SequenceMatcher(
                                 None, (typed + text.split("\n")[0]).strip(), hole.original).ratio(), 4)})

        async def type_keys(keys: list[str]) -> None:
            """Each key a change at the cursor on the hole's line, at the typing pace."""
            nonlocal version, character
            for key in keys:
                version += 1
                here = types.Position(line, character)
                client.text_document_did_change(types.DidChangeTextDocumentParams(
                    text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                    content_changes=[types.TextDocumentContentChangePartial(range=types.Range(here, here), text=key)]))
                character += len(key.encode("utf-16-le")) // 2
                await asyncio.sleep(args.typing_ms / 1000)

        await ask("first")
        typed = ""
        for burst in bursts(hole.original, args.burst)[: args.pauses]:
            typed += burst
            await type_keys(list(burst))
            await ask("typing", typed)
        # Enter: the rest of the line typed at the same pace, then Enter (the editor inserts the line's
        # indentation with the line break, in one change), and a request on the new line.
        indented = hole.indent + ("    " if hole.original.rstrip().endswith(":") else "")  # as editors indent
        await type_keys([*hole.original[len(typed):], "\n" + indented])
        await ask("enter", at=(line + 1, len(indented)))
        # Warm: all typed text deleted, the same blank-line request as the first one, its prompt now cached.
        version += 1
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(
                types.Position(line, len(hole.indent)), types.Position(line + 1, len(indented))), text="")]))
        character = len(hole.indent)
        await asyncio.sleep(args.typing_ms / 1000)
        await ask("warm")
        client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri=uri)))
        first = next(r for r in requests if r["hole"] == number)
        print(f"{mode} {number + 1}/{len(chosen)} {hole.path.name}:{hole.line + 1} first {first['ms']:.0f} ms, then "
              f"{[r['ms'] for r in requests if r['hole'] == number][1:]} exact={first['exact']}", file=sys.stderr)
    await stop_server(client)
    return summarize_mode(mode, requests)


def summarize_mode(mode: str, requests: list[dict[str, Any]]) -> dict[str, Any]:
    first = [r for r in requests if r["kind"] == "first"]
    typing = [r for r in requests if r["kind"] == "typing"]
    warm = [r for r in requests if r["kind"] == "warm"]
    enter = [r for r in requests if r["kind"] == "enter"]
    asked = first + typing  # as the user types (the warm repeats are a yardstick)
    sources = {s: sum(r["source"] == s for r in asked) for s in ("model", "warm-up", "typed-through", "ahead")}
    return {
        "mode": mode,
        "holes": len(first),
        "first_ms": percentiles([r["ms"] for r in first]),
        "typing_ms": percentiles([r["ms"] for r in typing]),
        "warm_ms": percentiles([r["ms"] for r in warm]),  # the first request again, its prompt cached
        "enter_ms": percentiles([r["ms"] for r in enter]),  # a new line after the finished line
        "enter_prefill": percentiles([r["prefill"] for r in enter]),
        "enter_ahead": sum(r["source"] == "ahead" for r in enter),  # the new line's suggestion computed ahead
        "all_ms": percentiles([r["ms"] for r in first + typing]),
        "exact_first_line": sum(r["exact"] for r in first),
        "exact_typing": sum(r["exact"] for r in typing),
        "first_similarity": round(statistics.mean(r["similarity"] for r in first), 3) if first else None,
        "first_vs_warm_p50": round(statistics.median([r["ms"] for r in first]) / statistics.median(
            [r["ms"] for r in warm]), 2) if warm else None,
        "empty": sum(not r["text"] for r in asked),
        "requests": len(asked),
        "sources": sources,
        "answered_from_work_ahead": round(1 - sources["model"] / len(asked), 3) if asked else None,
        "detail": requests,
    }


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None}
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered), 1),
            "p95": round(ordered[min(int(0.95 * len(ordered)), len(ordered) - 1)], 1)}


def run(args: Any) -> int:
    chosen = holes(args.holes, args.max_line)
    command = ["--log-level", "warning"]
    if args.profile:
        command += ["--profile", args.profile]
    if args.model:
        command += ["--model", args.model]
    for item in args.set or []:
        command += ["--set", item]
    results = {}
    for mode in args.modes.split(","):
        started = time.monotonic()
        results[mode] = asyncio.run(run_mode(mode, command, chosen, args))
        shown = {k: v for k, v in results[mode].items() if k != "detail"}
        print(f"{mode}: {json.dumps(shown)} ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    report = {
        "command": "phils bench midcode " + " ".join(sys.argv[3:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "model": args.model or f"profile {args.profile}",
        "settings": args.set or [],
        "machine": machine(),
        "holes": [f"{h.path.name}:{h.line + 1}" for h in chosen],
        "open_pause_s": args.open_pause, "cursor_notify": args.cursor_notify, "burst_chars": args.burst, "pauses": args.pauses, "typing_ms": args.typing_ms,
        "modes": results,
    }
    judged, plain = results.get("judged") or results.get("judged-all"), results.get("plain")
    if judged and plain and plain["typing_ms"]["p50"] and plain["first_ms"]["p50"]:
        report["judged_vs_plain"] = {
            "first_p50": round(judged["first_ms"]["p50"] / plain["first_ms"]["p50"], 2),
            "typing_p50": round(judged["typing_ms"]["p50"] / plain["typing_ms"]["p50"], 2),
            "all_p50": round(judged["all_ms"]["p50"] / plain["all_ms"]["p50"], 2),
            "judged_p95_vs_plain_p50": round(judged["all_ms"]["p95"] / plain["all_ms"]["p50"], 2),
        }
    for result in results.values():
        if result["typing_ms"]["p50"]:
            result["first_vs_typing_p50"] = round(result["first_ms"]["p50"] / result["typing_ms"]["p50"], 2)
    name = args.name or (args.profile or Path(args.model).name)
    write_report(args.out, f"midcode-{name}", report, markdown(report))
    return 0


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    rows = ["| mode | holes | first in a fresh file p50 / p95 ms | while typing p50 / p95 ms | all p50 / p95 ms "
            "| first ÷ typing (p50) | same request warm p50 ms (first ÷ warm) | after Enter p50 / p95 ms (tokens computed p50; answered from work ahead) | exact: blank line / typing | blank line edit similarity | empty | from work ahead (warm-up / typed / ahead) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["modes"].values():
        s = r["sources"]
        rows.append(f"| {r['mode']} | {r['holes']} | {r['first_ms']['p50']} / {r['first_ms']['p95']} "
                    f"| {r['typing_ms']['p50']} / {r['typing_ms']['p95']} | {r['all_ms']['p50']} / {r['all_ms']['p95']} "
                    f"| {r.get('first_vs_typing_p50')} | {r.get('warm_ms', {}).get('p50')} ({r.get('first_vs_warm_p50')}) "
                    f"| {r.get('enter_ms', {}).get('p50')} / {r.get('enter_ms', {}).get('p95')} "
                    f"({r.get('enter_prefill', {}).get('p50')}; ahead {r.get('enter_ahead', '-')}) "
                    f"| {r['exact_first_line']} / {r.get('exact_typing', '?')} | {r.get('first_similarity')} "
                    f"| {r['empty']}/{r['requests']} "
                    f"| {r['answered_from_work_ahead']} ({s['warm-up']} / {s['typed-through']} / {s['ahead']}) |")
    ratio = report.get("judged_vs_plain")
    return "\n".join([
        f"# Mid-code suggestions: {report['model']}",
        "",
        f"`{report['command']}` on {report['date']}: {m['cpu']}, {m['cores']} cores, torch {m['torch']}; "
        f"settings {report['settings'] or 'the profile'}.",
        f"{len(report['holes'])} holes (a statement blanked in a function of a standard-library module, the whole "
        f"module the document), the file open {report['open_pause_s']} s before the first request "
        f"({'the cursor on the hole, phils/didMoveCursor sent' if report.get('cursor_notify') == 'on' else 'no cursor notification'}), then the line "
        f"typed back in bursts of ~{report['burst_chars']} characters ({report['pauses']} pauses, "
        f"{report['typing_ms']} ms a keystroke).",
        "",
        *rows,
        "",
        (f"Judged ÷ plain, p50: first {ratio['first_p50']}×, while typing {ratio['typing_p50']}×, all "
         f"{ratio.get('all_p50')}×; judged p95 ÷ plain p50 {ratio['judged_p95_vs_plain_p50']}×." if ratio else ""),
        "",
    ])
