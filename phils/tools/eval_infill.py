"""``phils eval infill``: completions in the middle of existing code, from real tested functions.

Cases come from HumanEval's canonical solutions: one line, or a span of 2-4
lines, in the middle of a body (code stays below it) is blanked; the cursor
sits at that line's indentation, as an editor leaves it (``--kind call``: a
call's arguments are blanked in the middle of its line, the cursor after its
``(`` and the ``)`` kept, as an editor that closes brackets leaves it); the completion is
inserted there and the problem's tests run in the sandbox of ``eval
humaneval``. ``--raw`` is the baseline: the same model's greedy continuation
of the text before the cursor, cut after the first line (or as many lines as
the span had). ``--at-line-start``: the blanked line left empty and the cursor
at its column 0, where Enter leaves it before the editor indents (where phils
computes the next line ahead; the answer writes its own indentation).
``--baseline llama-raw`` / ``llama-infill`` ask a running
llama-server on the same GGUF instead (``llama_baselines``): the raw
continuation from the line break, and ``/infill`` as llama.vim sends it.

Reported per kind (line, span): pass@1, exact answers (the same non-blank
lines as the original, whitespace aside), empty answers, answers longer than
the hole, answers that repeat the line after the cursor or a docstring line,
and latency.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .eval_humaneval import latency_summary, passes, problems, progress_printer, save_results
from ..stoprule import code_chars
from .lsp_client import start_server, stop_server


KINDS = ("line", "span", "call")


@dataclass(frozen=True)
class Case:
    task_id: str
    kind: str  # line | span
    document: str  # the problem's code with the hole
    line: int  # the cursor, 0-based
    character: int
    original: list[str]  # the blanked lines
    following: str  # the first non-blank line after the hole
    test: str  # the problem's tests
    entry_point: str  # the function they check

    @property
    def offset(self) -> int:
        lines = self.document.split("\n")
        return sum(len(l) + 1 for l in lines[: self.line]) + self.character

    def program(self, completion: str) -> str:
        return self.document[: self.offset] + completion + self.document[self.offset :]


def make_cases(rows: list[dict[str, Any]], kinds: tuple[str, ...] = ("line", "span"),
               at_line_start: bool = False) -> list[Case]:
    cases = []
    for number, row in enumerate(rows):
        body = row["canonical_solution"].rstrip("\n").split("\n")
        code = [i for i, line in enumerate(body) if line.strip() and not line.strip().startswith("#")]
        if "line" in kinds and len(code) >= 2:
            cases.append(_hole(row, body, code[(len(code) - 1) // 2], 1, "line", at_line_start))
        if "span" in kinds and len(code) >= 4:
            size = min(2 + number % 3, len(code) - 1)  # 2, 3 or 4 code lines, at least one left below
            first = max((len(code) - size) // 2, 0)
            start, end = code[first], code[first + size - 1] + 1
            cases.append(_hole(row, body, start, end - start, "span", at_line_start))
        if "call" in kinds and (case := _call_hole(row, body, code)) is not None:
            cases.append(case)
    return cases


def _call_hole(row: dict[str, Any], body: list[str], code: list[int]) -> Case | None:
    """A call's arguments blanked, the cursor after its ``(`` and the ``)`` still there, as an editor
    that closes brackets leaves it: on the code line nearest the body's middle that has such a call."""
    middle = len(code) // 2
    for _, index in sorted((abs(rank - middle), index) for rank, index in enumerate(code)):
        line = body[index]
        arguments = _first_call_arguments(line)
        if arguments is None:
            continue
        opened, closed = arguments
        prompt = row["prompt"] if row["prompt"].endswith("\n") else row["prompt"] + "\n"
        kept = body[:index] + [line[: opened + 1] + line[closed:]] + body[index + 1 :]
        return Case(task_id=row["task_id"], kind="call", document=prompt + "\n".join(kept) + "\n",
                    line=prompt.count("\n") + index, character=opened + 1, original=[line[opened + 1 : closed]],
                    following=next((l for l in body[index + 1 :] if l.strip()), ""),
                    test=row["test"], entry_point=row["entry_point"])
    return None


def _first_call_arguments(line: str) -> tuple[int, int] | None:
    """The offsets of the ``(`` and ``)`` of the first outermost call in ``line`` with arguments."""
    depth, opened = 0, None
    for offset, char in code_chars(line):
        if char == "(":
            if depth == 0 and offset > 0 and (line[offset - 1].isalnum() or line[offset - 1] in "_."):
                opened = offset
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0 and opened is not None:
                if line[opened + 1 : offset].strip():
                    return opened, offset
                opened = None
    return None


def _hole(row: dict[str, Any], body: list[str], start: int, size: int, kind: str, at_line_start: bool = False) -> Case:
    indent = "" if at_line_start else body[start][: len(body[start]) - len(body[start].lstrip())]
    kept = body[:start] + [indent] + body[start + size :]
    prompt = row["prompt"] if row["prompt"].endswith("\n") else row["prompt"] + "\n"
    following = next((l for l in body[start + size :] if l.strip()), "")
    return Case(task_id=row["task_id"], kind=kind, document=prompt + "\n".join(kept) + "\n",
                line=prompt.count("\n") + start, character=len(indent),
                original=[l for l in body[start : start + size] if l.strip()], following=following,
                test=row["test"], entry_point=row["entry_point"])


# --- the two ways of completing --------------------------------------------


async def complete_over_lsp(server_args: list[str], cases: list[Case], progress) -> list[tuple[str, float]]:
    from lsprotocol import types

    client = await start_server(server_args)
    answers = []
    for index, case in enumerate(cases):
        uri = f"file:///infill/{case.task_id.replace('/', '_')}_{case.kind}.py"
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            types.TextDocumentItem(uri=uri, language_id="python", version=1, text=case.document)))
        started = time.monotonic()
        result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=case.line, character=case.character),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
        elapsed = time.monotonic() - started
        client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri=uri)))
        answers.append((result.items[0].insert_text if result and result.items else "", elapsed))
        progress(index, answers[-1])
    await stop_server(client)
    return answers


def complete_raw(settings: Any, cases: list[Case], max_new_tokens: int, progress) -> list[tuple[str, float]]:
    """The baseline: the model's greedy continuation of the text before the cursor, first line(s) kept."""
    import torch
    from transformers import StoppingCriteria

    from ..engine import load_model

    loaded = load_model(settings.engine)
    model, tokenizer = loaded.model, loaded.tokenizer
    if model is None:  # int4 runs on ONNX Runtime: the baseline is transformers' own generate()
        raise SystemExit("--raw runs the model with transformers on torch: drop engine.quantize=int4")

    class EnoughLines(StoppingCriteria):  # saves time only: the kept lines are the same
        def __init__(self, start: int, lines: int):
            self.start, self.lines = start, lines

        def __call__(self, input_ids, scores, **kwargs) -> bool:
            return tokenizer.decode(input_ids[0, self.start :]).count("\n") >= self.lines

    answers = []
    for index, case in enumerate(cases):
        started = time.monotonic()
        lines_wanted = 1 if case.kind == "line" else len(case.original)
        ids = tokenizer(case.document[: case.offset], return_tensors="pt").input_ids.to(model.device)
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 stopping_criteria=[EnoughLines(ids.shape[1], lines_wanted)],
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        answers.append(("\n".join(text.split("\n")[:lines_wanted]).rstrip(), time.monotonic() - started))
        progress(index, answers[-1])
    return answers


def baseline_lines(case: Case) -> int:
    """How many lines a raw baseline answer keeps: the first line, or the span's lines."""
    return 1 if case.kind != "span" else len(case.original)


# --- scoring -------------------------------------------------------------------


def score(case: Case, completion: str) -> dict[str, Any]:
    ok, error = passes({"prompt": "", "test": case.test, "entry_point": case.entry_point}, case.program(completion))
    written = [l.strip() for l in completion.split("\n") if l.strip()]
    # As inserted: the first line after the cursor's indentation, the others with their own.
    placed = [l.rstrip() for l in (" " * case.character + completion).split("\n") if l.strip()]
    following = case.following.rstrip()
    docstring = _docstring_lines(case.document)
    return {
        "passed": ok,
        "error": error,
        "exact": written == [l.strip() for l in case.original],
        "empty": not completion.strip(),
        "longer": len(written) > len(case.original),
        # The next line written again where it stands (the stutter a stop rule must prevent) ...
        "repeats_next_line": bool(following.strip()) and following in placed,
        # ... and its text at another indentation (often legitimate: `return False` in a branch above it).
        "next_line_text": bool(following.strip()) and following.strip() in written,
        "repeats_docstring": any(l in docstring for l in written if len(l) > 3),
    }


def _repeats(kind: dict[str, Any]) -> str:
    if "next_line_text" not in kind:  # older runs counted the text at any indentation only
        return f"? / {kind['repeats_next_line']}"
    return f"{kind['repeats_next_line']} / {kind['next_line_text']}"


def _docstring_lines(document: str) -> set[str]:
    """Stripped lines inside triple-quoted strings (the problems' docstrings)."""
    inside, found = False, set()
    for line in document.split("\n"):
        stripped = line.strip()
        quotes = stripped.count('"""') + stripped.count("'''")
        if inside or quotes:
            text = stripped.strip("\"'").strip()
            if text:
                found.add(text)
        if quotes % 2 == 1:
            inside = not inside
    return found


def run(args: Any, settings: Any, server_args: list[str]) -> int:
    rows = problems(args.limit)
    kinds = tuple(k for k in KINDS if args.kind in (k, "all") or (args.kind == "both" and k != "call"))
    cases = make_cases(rows, kinds, getattr(args, "at_line_start", False))
    baseline = getattr(args, "baseline", None)
    mode = baseline or ("raw" if args.raw else "phils")
    progress = progress_printer(len(cases))
    if baseline:
        from .llama_baselines import complete_cases

        answers = complete_cases(args.llama_url, baseline, cases, baseline_lines, args.max_new_tokens, progress)
    elif args.raw:
        answers = complete_raw(settings, cases, args.max_new_tokens, progress)
    else:
        answers = asyncio.run(complete_over_lsp(server_args, cases, progress))
    results = [{"task_id": c.task_id, "kind": c.kind, "seconds": round(s, 3), "completion": a,
                "original": c.original, **score(c, a)} for c, (a, s) in zip(cases, answers)]
    summary = {"mode": mode, "model": settings.engine.model, "command": "phils " + " ".join(sys.argv[1:]),
               "date": time.strftime("%Y-%m-%d %H:%M"), "kinds": {}}
    for kind in kinds:
        rows_of = [r for r in results if r["kind"] == kind]
        if not rows_of:
            continue
        latencies = [r["seconds"] for r in rows_of]
        summary["kinds"][kind] = {
            "cases": len(rows_of),
            **{name: sum(r[name] for r in rows_of) for name in
               ("passed", "exact", "empty", "longer", "repeats_next_line", "next_line_text", "repeats_docstring")},
            "pass@1": round(sum(r["passed"] for r in rows_of) / len(rows_of), 4),
            "latency_s": latency_summary(latencies),
        }
    save_results(args, settings, "infill", mode, summary, results, table)
    print(json.dumps(summary, indent=2))
    return 0


def table(directory: Path) -> str:
    rows = ["| date | model | mode | kind | cases | pass@1 | exact | empty | longer than the hole | repeats next line: in place / its text anywhere "
            "| repeats docstring | latency p50 / p95 s | command |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for path in sorted(directory.glob("infill-*.json")):
        s = json.loads(path.read_text())
        for kind, k in s["kinds"].items():
            rows.append(f"| {s['date']} | {s['model']} | {s['mode']} | {kind} | {k['cases']} | {k['pass@1']:.3f} ({k['passed']}) "
                        f"| {k['exact']} | {k['empty']} | {k['longer']} | {_repeats(k)} "
                        f"| {k['repeats_docstring']} | {k['latency_s']['p50']} / {k['latency_s']['p95']} "
                        f"| `{s['command']}` |")
    return ("# Completions in the middle of existing code (HumanEval bodies, blanked lines)\n\n"
            "Each run with the code of its date: the latest `phils` rows are the current defaults. "
            "\"repeats next line\": answers that write the line after the hole again in place (same text, same "
            "indentation), and answers holding its text at any indentation (runs before 2026-11-30 09:00 counted "
            "only the latter).\n\n"
            + "\n".join(rows) + "\n")
