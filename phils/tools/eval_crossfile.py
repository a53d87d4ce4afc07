"""``phils eval crossfile``: lines that call a function defined in another module of the same package.

CrossCodeEval's construction on packages installed from PyPI: in each
module of a package, single-line statements inside functions that call a
name the module imports from another module of the same package (``from
.util import parse`` … ``x = parse(data)``) are cut right before that call
(``x = █``): the rest of the line is to be written, with the rest of the
file below. The package is copied into a workspace of its own (the
workspace root is what the editor sends), the document is opened at its
path there, and the answer's first line is compared with the rest of the
original line: exact match and edit similarity. Run it with ``--set completion.project_context=false`` for the
same cases without the other modules' signatures.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import difflib
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .eval_humaneval import latency_summary, progress_printer, save_results
from .lsp_client import start_server, stop_server

PACKAGES = ("aiohttp", "pygls", "prometheus_client", "huggingface_hub")


@dataclass(frozen=True)
class Case:
    package: str
    module: str  # path inside the workspace
    document: str
    line: int
    character: int
    target: str  # the rest of the line from the call on, stripped
    callee: str  # the imported name it calls


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {name!r} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


@contextlib.contextmanager
def packages_workspace(args: Any, make: Callable[[Path, str, int], list[Any]]) -> Iterator[tuple[Path, tuple[str, ...], list[Any]]]:
    """A workspace holding copies of ``--packages`` (the root the editor sends), the packages, and the
    cases ``make(workspace, package, --per-package)`` takes from each; removed afterwards."""
    packages = tuple(p.strip() for p in args.packages.split(",") if p.strip()) or PACKAGES
    with tempfile.TemporaryDirectory(prefix="phils-packages-") as directory:
        workspace = Path(directory)
        cases: list[Any] = []
        for package in packages:
            shutil.copytree(package_dir(package), workspace / package,
                            ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd", "*.c", "*.h"))
            cases += make(workspace, package, args.per_package)
        print(f"{len(cases)} cases from {', '.join(packages)}", file=sys.stderr)
        yield workspace, packages, cases


def first_line(answer: str) -> str:
    """The answer's first non-blank line, stripped: what is compared with the original."""
    return next((line.strip() for line in answer.split("\n") if line.strip()), "")


def line_scores(first: str, target: str) -> dict[str, Any]:
    return {"exact": first == target, "edit_similarity": round(difflib.SequenceMatcher(None, first, target).ratio(), 4)}


def summary_of(mode: str, settings: Any, packages: tuple[str, ...], results: list[dict[str, Any]],
               counted: tuple[str, ...]) -> dict[str, Any]:
    """A run's summary: exact first lines, mean edit similarity, the ``counted`` flags, latency."""
    return {
        "mode": mode, "model": settings.engine.model, "command": "phils " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"), "packages": list(packages), "cases": len(results),
        "exact": sum(r["exact"] for r in results),
        "edit_similarity": round(statistics.mean(r["edit_similarity"] for r in results), 4) if results else 0.0,
        **{name: sum(r[name] for r in results) for name in counted},
        "latency_s": latency_summary([r["seconds"] for r in results]),
    }


def make_cases(workspace: Path, package: str, limit: int) -> list[Case]:
    """Up to ``limit`` cases spread over the package's modules, the same ones on every run."""
    found: list[Case] = []
    for path in sorted((workspace / package).rglob("*.py")):
        if "test" in path.name or path.stat().st_size > 300_000:
            continue
        found.extend(_cases_in(workspace, package, path))
    if len(found) <= limit:
        return found
    step = len(found) / limit
    return [found[int(i * step)] for i in range(limit)]


def _cases_in(workspace: Path, package: str, path: Path) -> list[Case]:
    source = path.read_text(encoding="utf-8", errors="replace")
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    imported = _names_from_package(tree, package)
    if not imported:
        return []
    lines = source.split("\n")
    cases, seen = [], set()
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for statement in ast.walk(function):
            if not isinstance(statement, (ast.Assign, ast.Expr, ast.Return, ast.AugAssign, ast.AnnAssign)):
                continue
            if statement.lineno != statement.end_lineno or statement.lineno in seen:
                continue
            call = _call(statement, imported)
            if call is None or statement.lineno - 1 <= function.lineno:
                continue
            seen.add(statement.lineno)
            number = statement.lineno - 1
            original = lines[number]
            column = len(original.encode("utf-8")[: call.col_offset].decode("utf-8", errors="replace"))
            document = "\n".join(lines[:number] + [original[:column]] + lines[number + 1 :])
            cases.append(Case(package, path.relative_to(workspace).as_posix(), document, number, column,
                              original[column:].strip(), call.func.id))
    return sorted(cases, key=lambda c: c.line)


def _names_from_package(tree: ast.Module, package: str) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").split(".")[0] == package):
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def _call(statement: ast.stmt, imported: set[str]) -> ast.Call | None:
    for node in ast.walk(statement):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in imported:
            return node
    return None


async def complete_over_lsp(server_args: list[str], workspace: Path, cases: list[Case], progress) -> list[tuple[str, float]]:
    from lsprotocol import types

    client = await start_server(server_args, root=workspace)
    answers = []
    open_uri, version = "", 0
    for index, case in enumerate(cases):
        uri = (workspace / case.module).as_uri()
        version += 1
        if uri == open_uri:  # the next case in the same module: the editor's text changes, as when moving around
            client.text_document_did_change(types.DidChangeTextDocumentParams(
                types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                [types.TextDocumentContentChangeWholeDocument(text=case.document)]))
        else:
            if open_uri:
                client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(open_uri)))
            client.text_document_did_open(types.DidOpenTextDocumentParams(
                types.TextDocumentItem(uri=uri, language_id=getattr(case, "language_id", "python"), version=version,
                                       text=case.document)))
            open_uri = uri
        started = time.monotonic()
        result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=case.line, character=case.character),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
        elapsed = time.monotonic() - started
        answers.append((result.items[0].insert_text if result and result.items else "", elapsed))
        progress(index, answers[-1])
    await stop_server(client)
    return answers


def score(case: Case, answer: str) -> dict[str, Any]:
    first = first_line(answer)
    return {**line_scores(first, case.target), "callee_written": f"{case.callee}(" in first, "empty": not first}


def run(args: Any, settings: Any, server_args: list[str]) -> int:
    mode = "with-context" if settings.completion.project_context else "without-context"
    with packages_workspace(args, make_cases) as (workspace, packages, cases):
        answers = asyncio.run(complete_over_lsp(server_args, workspace, cases, progress_printer(len(cases))))
    results = [{"package": c.package, "module": c.module, "line": c.line + 1, "target": c.target,
                "callee": c.callee, "completion": a, "seconds": round(s, 3), **score(c, a)}
               for c, (a, s) in zip(cases, answers)]
    summary = summary_of(mode, settings, packages, results, ("callee_written", "empty"))
    save_results(args, settings, "crossfile", mode, summary, results, table)
    print(json.dumps(summary, indent=2))
    return 0


def table(directory: Path) -> str:
    rows = ["| model | mode | cases | exact | edit similarity | callee written | empty | latency p50 / p95 s | command |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for path in sorted(directory.glob("crossfile-*.json")):
        s = json.loads(path.read_text())
        rows.append(f"| {s['model']} | {s['mode']} | {s['cases']} | {s['exact']} | {s['edit_similarity']:.3f} "
                    f"| {s['callee_written']} | {s['empty']} | {s['latency_s']['p50']} / {s['latency_s']['p95']} "
                    f"| `{s['command']}` |")
    return ("# Calls into another module of the same package (CrossCodeEval's construction)\n\n"
            "Packages as installed from PyPI; the cursor right before the call, the answer's first line against "
            "the rest of the original line.\n\n"
            + "\n".join(rows) + "\n")
