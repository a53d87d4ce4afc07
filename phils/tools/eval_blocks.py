"""``phils eval blocks``: a small block blanked in real brace-language code, the whole file the document.

Where the Python evals blank lines, this one blanks whole blocks in C, C++,
Go, Rust, Java, JavaScript or TypeScript files under ``--source``: a line
ending with ``{`` inside a function or class, down to the line that closes it
at its own indentation (3 to 9 lines), with code below; the block becomes one
empty line at the header's indentation and the suggestion is asked there, as
soon as the file opens. Scored: the answer's first line against the header
(exact, edit similarity), the whole block (exact, every line stripped), and
whether the answer closes every bracket it opens, since a suggestion that
leaves a ``{`` open breaks the file the moment it is accepted. The same holes
go to llama-server's ``/infill`` with ``--baseline llama-infill``.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..stoprule import CLOSERS, OPENERS, code_chars, indent_width
from .eval_crossfile import complete_over_lsp, first_line
from .eval_humaneval import latency_summary, progress_printer, save_results

LANGUAGES = {".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".hpp": "cpp", ".go": "go", ".rs": "rust",
             ".java": "java", ".js": "javascript", ".mjs": "javascript", ".ts": "typescript", ".cs": "csharp"}
PER_FILE = 2  # holes a file gives at most, so that they spread over the files
MIN_LINES, MAX_LINES = 3, 9  # a block's lines, header and closing line included
CLOSING = re.compile(r"^[)}\]]+[;,)]*$")  # `}`, `};`, `});`: the block ends there (not `} else {`)
MAX_FILE_CHARS = 200_000


@dataclass(frozen=True)
class Case:
    module: str  # path inside the source folder
    language_id: str
    document: str  # the file, the block blanked down to one line at its indentation
    line: int
    character: int
    target: list[str]  # the block's lines, stripped, blank ones left out

    @property
    def offset(self) -> int:
        lines = self.document.split("\n")
        return sum(len(text) + 1 for text in lines[: self.line]) + self.character


def depth_change(text: str) -> tuple[int, bool]:
    """Brackets ``text`` opens and leaves open (outside strings), and whether it ever closes more than it
    opened (a bracket of the code around it)."""
    depth, under = 0, False
    for line in text.split("\n"):
        for _, char in code_chars(line, "//"):
            if char in OPENERS:
                depth += 1
            elif char in CLOSERS:
                depth -= 1
                under = under or depth < 0
    return depth, under


def balanced(text: str) -> bool:
    """Every bracket ``text`` opens it closes, and it closes none it did not open."""
    depth, under = depth_change(text)
    return depth == 0 and not under


def blocks_in(source: str) -> list[tuple[int, int]]:
    """(header, closing line), 0-based, of small indented blocks with code below them."""
    lines = source.split("\n")
    found = []
    for start, header in enumerate(lines):
        stripped = header.strip()
        if not stripped.endswith("{") or indent_width(header) == 0 or not re.search(r"\w", stripped) \
                or stripped.startswith(("}", "//", "/*", "*")):
            continue
        indent = indent_width(header)
        for end in range(start + 1, min(start + MAX_LINES, len(lines))):
            if not lines[end].strip():
                continue
            if indent_width(lines[end]) > indent:
                continue
            if indent_width(lines[end]) == indent and CLOSING.match(lines[end].strip()) \
                    and end - start + 1 >= MIN_LINES and any(text.strip() for text in lines[end + 1:]):
                block = "\n".join(lines[start:end + 1])
                if balanced(block):  # the measure reads this block right (no bracket in a comment or char)
                    found.append((start, end))
            break
    return found


def make_cases(source_dir: Path, limit: int) -> list[Case]:
    cases: list[Case] = []
    for path in sorted(p for p in source_dir.rglob("*") if p.suffix in LANGUAGES and p.is_file()):
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        starts = {text[:1] for text in source.split("\n") if text[:1] in ("\t", " ")}
        if len(source) > MAX_FILE_CHARS or len(starts) > 1:
            continue  # huge, or indented with tabs and spaces both, which the block finder would misread
        holes = blocks_in(source)
        step = max(1, len(holes) // PER_FILE)  # spread over the file, the same on every run
        lines = source.split("\n")
        for start, end in holes[step // 2:: step][:PER_FILE]:
            indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
            document = "\n".join(lines[:start] + [indent] + lines[end + 1:])
            target = [text.strip() for text in lines[start:end + 1] if text.strip()]
            cases.append(Case(str(path.relative_to(source_dir)), LANGUAGES[path.suffix], document, start,
                              len(indent), target))
    if len(cases) <= limit:
        return cases
    return [cases[i * len(cases) // limit] for i in range(limit)]  # spread over every file, the same each run


def score(case: Case, answer: str) -> dict[str, Any]:
    first = first_line(answer)
    written = [text.strip() for text in answer.split("\n") if text.strip()]
    return {
        "first_exact": first == case.target[0],
        "first_similarity": round(difflib.SequenceMatcher(None, first, case.target[0]).ratio(), 4),
        "block_exact": written == case.target,
        "block_similarity": round(difflib.SequenceMatcher(None, "\n".join(written), "\n".join(case.target)).ratio(), 4),
        "balanced": bool(written) and balanced(answer),
        "empty": not written,
    }


def run(args: Any, settings: Any, server_args: list[str]) -> int:
    source_dir = Path(args.source).expanduser().resolve()
    cases = make_cases(source_dir, args.limit)
    print(f"{len(cases)} blocks from {source_dir}", file=sys.stderr)
    if not cases:
        print(f"error: no blocks found under {source_dir} ({', '.join(sorted(set(LANGUAGES)))} files)",
              file=sys.stderr)
        return 1
    progress = progress_printer(len(cases))
    mode = args.baseline or "phils"
    if args.baseline:
        from .llama_baselines import complete_cases

        answers = complete_cases(args.llama_url, args.baseline, cases, lambda case: MAX_LINES, args.max_new_tokens,
                                 progress)
    else:
        answers = asyncio.run(complete_over_lsp(server_args, source_dir, cases, progress))
    results = [{"module": c.module, "line": c.line + 1, "target": c.target, "completion": a, "seconds": round(s, 3),
                **score(c, a)} for c, (a, s) in zip(cases, answers)]
    summary = {
        "mode": mode, "model": settings.engine.model, "command": "phils " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"), "source": str(source_dir), "cases": len(results),
        **{name: sum(r[name] for r in results) for name in ("first_exact", "block_exact", "balanced", "empty")},
        **{name: round(statistics.mean(r[name] for r in results), 4) for name in ("first_similarity",
                                                                                   "block_similarity")},
        "languages": sorted({c.language_id for c in cases}),
        "latency_s": latency_summary([r["seconds"] for r in results]),
    }
    save_results(args, settings, "blocks", mode, summary, results, table)
    print(json.dumps(summary, indent=2))
    return 0


def table(directory: Path) -> str:
    rows = ["| model | what answers | source | holes | first line exact / similarity | block exact / similarity | "
            "closes what it opens | empty | latency p50 / p95 s | date | command |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for path in sorted(directory.glob("blocks-*.json")):
        s = json.loads(path.read_text())
        rows.append(f"| {s['model']} | {s['mode']} | {Path(s['source']).name} ({', '.join(s['languages'])}) "
                    f"| {s['cases']} | {s['first_exact']} / {s['first_similarity']:.3f} "
                    f"| {s['block_exact']} / {s['block_similarity']:.3f} | {s['balanced']} | {s['empty']} "
                    f"| {s['latency_s']['p50']} / {s['latency_s']['p95']} | {s['date']} | `{s['command']}` |")
    return ("# A block blanked in real brace-language code (the whole file the document)\n\n"
            "The answer against the block: its first line, all its lines, and whether it closes every bracket "
            "it opens.\n\n" + "\n".join(rows) + "\n")
