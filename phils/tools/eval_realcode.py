"""``phils eval realcode``: one line blanked in a function of a real module, the whole module the document.

Real code as people edit it, from packages installed from PyPI (what every
phils install has): in each module, simple statements of one line inside a
function body with code below them (no docstrings, no ``pass``) are blanked
down to their indentation; the module with that hole is opened as the editor
opens a file and the suggestion asked at the hole. The answer's first line
is compared with the original line: exact match and edit similarity; also
empty answers and answers that repeat the next line in place (what a
suggestion must never do). The same holes go to the baselines on the same
GGUF through ``--baseline`` (llama-server's raw continuation from the line
break, and ``/infill`` as llama.vim sends it, its default window of 256
lines above and 64 below).
"""

from __future__ import annotations

import ast
import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .eval_crossfile import complete_over_lsp, first_line, line_scores, packages_workspace, summary_of
from .eval_humaneval import progress_printer, save_results

PER_MODULE = 2  # holes a module gives at most, so that a package's holes spread over its modules
MIN_CHARS = 8  # shorter lines (``i += 1``) say little about a model


@dataclass(frozen=True)
class Case:
    package: str
    module: str  # path inside the workspace
    document: str  # the module, the line blanked down to its indentation
    line: int
    character: int
    target: str  # the original line, stripped
    next_line: str  # the next non-blank line below, stripped

    @property
    def offset(self) -> int:
        lines = self.document.split("\n")
        return sum(len(text) + 1 for text in lines[: self.line]) + self.character


def holes_in(source: str) -> list[int]:
    """0-based lines of one-line simple statements inside function bodies, each with a statement below it."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    lines = source.split("\n")
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for block in _blocks(node.body):
            for statement, below in zip(block, block[1:]):
                if not isinstance(statement, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return, ast.Expr,
                                              ast.Raise, ast.Delete)) or statement.lineno != statement.end_lineno:
                    continue
                if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
                    continue  # a docstring or a bare constant
                text = lines[statement.lineno - 1]
                if len(text.strip()) < MIN_CHARS or ";" in text or text.rstrip().endswith("\\") or below is None:
                    continue
                found.add(statement.lineno - 1)
    return sorted(found)


def _blocks(body: list[ast.stmt]):
    """Every statement list inside a function body (its own, and those of its if/for/while/with/try)."""
    yield body
    for statement in body:
        for field in ("body", "orelse", "finalbody"):
            inner = getattr(statement, field, None)
            if isinstance(inner, list) and inner and isinstance(inner[0], ast.stmt) \
                    and not isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                yield from _blocks(inner)
        for handler in getattr(statement, "handlers", []) or []:
            yield from _blocks(handler.body)


def make_cases(workspace: Path, package: str, limit: int) -> list[Case]:
    cases: list[Case] = []
    for path in sorted((workspace / package).rglob("*.py")):
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        holes = holes_in(source)
        if not holes:
            continue
        # Spread over the module: evenly spaced among its candidates, the same on every run.
        step = max(1, len(holes) // PER_MODULE)
        for line in holes[step // 2 :: step][:PER_MODULE]:
            cases.append(_case(workspace, package, path, source, line))
            if len(cases) >= limit:
                return cases
    return cases


def _case(workspace: Path, package: str, path: Path, source: str, line: int) -> Case:
    lines = source.split("\n")
    original = lines[line]
    indent = original[: len(original) - len(original.lstrip())]
    below = next((text.strip() for text in lines[line + 1 :] if text.strip()), "")
    document = "\n".join(lines[:line] + [indent] + lines[line + 1 :])
    return Case(package, str(path.relative_to(workspace)), document, line, len(indent), original.strip(), below)


def score(case: Case, answer: str) -> dict[str, Any]:
    first = first_line(answer)
    return {**line_scores(first, case.target), "empty": not first,
            "repeats_next_line": bool(first) and first == case.next_line and first != case.target}


def run(args: Any, settings: Any, server_args: list[str]) -> int:
    baseline = getattr(args, "baseline", None)
    mode = baseline or "phils"
    with packages_workspace(args, make_cases) as (workspace, packages, cases):
        progress = progress_printer(len(cases))
        if baseline:
            from .llama_baselines import complete_cases

            answers = complete_cases(args.llama_url, baseline, cases, lambda case: 1, args.max_new_tokens, progress)
        else:
            answers = asyncio.run(complete_over_lsp(server_args, workspace, cases, progress))
    results = [{"package": c.package, "module": c.module, "line": c.line + 1, "target": c.target,
                "completion": a, "seconds": round(s, 3), **score(c, a)} for c, (a, s) in zip(cases, answers)]
    summary = summary_of(mode, settings, packages, results, ("empty", "repeats_next_line"))
    save_results(args, settings, "realcode", mode, summary, results, table)
    print(json.dumps(summary, indent=2))
    return 0


def table(directory: Path) -> str:
    rows = ["| model | what answers | holes | exact | edit similarity | empty | repeats the next line | "
            "latency p50 / p95 s | date | command |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for path in sorted(directory.glob("realcode-*.json")):
        s = json.loads(path.read_text())
        rows.append(f"| {s['model']} | {s['mode']} | {s['cases']} | {s['exact']} | {s['edit_similarity']:.3f} "
                    f"| {s['empty']} | {s['repeats_next_line']} | {s['latency_s']['p50']} / {s['latency_s']['p95']} "
                    f"| {s['date']} | `{s['command']}` |")
    return ("# One line blanked in real code (installed packages' functions, the whole module the document)\n\n"
            "The answer's first line against the original line. Baselines from llama-server on the same GGUF.\n\n"
            + "\n".join(rows) + "\n")
