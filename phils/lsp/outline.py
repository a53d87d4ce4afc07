"""The shape of half-written Python, read from indentation alone (pure).

The stdlib ``ast`` cannot parse code that is being typed, so everything
here works line by line: imports, the def/class headers around the cursor
(with decorators, comments above and docstrings), sibling method
signatures, and whether the cursor sits in a body that is still empty.
"""

from __future__ import annotations

import re

MAX_IMPORT_LINES = 40

_IMPORT = re.compile(r"(import|from)\s+[\w.]+")
_HEADER = re.compile(r"\s*(async\s+def|def|class)\s+\w+")
_DEF = re.compile(r"\s*(async\s+def|def)\s+\w+")
_DECORATOR = re.compile(r"\s*@")
_COMMENT = re.compile(r"\s*#")
_DOCSTRING_END = re.compile(r'.*("""|\'\'\')\s*$')


def imports(lines: list[str]) -> list[int]:
    """Top-level import lines (the first MAX_IMPORT_LINES of them)."""
    return [i for i, line in enumerate(lines) if _IMPORT.match(line)][:MAX_IMPORT_LINES]


def enclosing_headers(lines: list[str]) -> dict[int, str]:
    """Headers of the defs/classes around the end, with their signatures' siblings in classes."""
    keep: dict[int, str] = {}
    limit = _indent_of_last_code(lines)
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i]
        if not line.strip() or limit == 0:
            continue
        indent = indentation(line)
        if indent >= limit:
            continue
        limit = indent
        if _HEADER.match(line):
            keep.update((j, lines[j]) for j in header_block(lines, i))
            if line.lstrip().startswith("class"):
                for j, signature in sibling_signatures(lines, i).items():
                    keep.setdefault(j, signature)  # the def being written keeps its full header
    return keep


def enclosing_def_indent(lines: list[str], below: int) -> int | None:
    """The indentation of the innermost ``def`` around the end that encloses code at ``below``; None at module level."""
    limit = below
    for line in reversed(lines):
        if not line.strip():
            continue
        indent = indentation(line)
        if indent < limit:
            if _DEF.match(line):
                return indent
            limit = indent
            if limit == 0:
                return None
    return None


def sibling_signatures(lines: list[str], class_line: int) -> dict[int, str]:
    """The class's method signatures as one-liners with ``...`` bodies: what the class offers."""
    members: dict[int, str] = {}
    body_indent = None
    for i in range(class_line + 1, len(lines)):
        line = lines[i]
        if not line.strip():
            continue
        indent = indentation(line)
        if indent <= indentation(lines[class_line]):
            break
        body_indent = body_indent if body_indent is not None else indent
        if indent == body_indent and _DEF.match(line) and line.rstrip().endswith(":"):
            members[i] = line.rstrip()[:-1].rstrip() + ": ...\n"
    return members


def header_block(lines: list[str], start: int) -> list[int]:
    """The header at ``start`` with comments and decorators above it, continuation lines and docstring."""
    first = start
    while first > 0 and (_DECORATOR.match(lines[first - 1]) or _COMMENT.match(lines[first - 1])):
        first -= 1
    end = signature_end(lines, start)
    indices = list(range(first, end + 1))
    doc = end + 1
    if doc < len(lines) and lines[doc].lstrip().startswith(('"""', "'''", "#")):
        quote = lines[doc].lstrip()[:3]
        close = doc
        if quote.startswith("#"):  # a comment describing the body counts as its docstring
            while close < len(lines) - 1 and _COMMENT.match(lines[close + 1]):
                close += 1
        elif lines[doc].count(quote) < 2:
            while close < len(lines) - 1 and quote not in lines[close + 1]:
                close += 1
            close += 1
        indices.extend(range(doc, min(close, len(lines) - 1) + 1))
    return indices


MAX_SIGNATURE_LINES = 30


def signature_end(lines: list[str], start: int) -> int:
    """The last line of the def or class header at ``start``: a signature over several lines runs on to where
    its brackets close."""
    end, depth = start, _open_brackets(lines[start])
    while depth > 0 and end < len(lines) - 1 and end - start < MAX_SIGNATURE_LINES:
        end += 1
        depth += _open_brackets(lines[end])
    return end


def _open_brackets(line: str) -> int:
    """The parentheses and square brackets ``line`` opens and does not close (a header's `{` is its body's)."""
    code = line.split("#", 1)[0]
    return code.count("(") + code.count("[") - code.count(")") - code.count("]")


_WINDOW_CHARS = 32_000


def empty_body_indent(prefix: str, unit: str = "    ") -> str | None:
    """The indentation the next line must have when the body above it is still empty.

    True right after ``def f():`` (or any line ending in ``:``), and after a
    def's docstring or leading comments when nothing else is in the body yet.
    """
    # Only the last stretch matters (a header, its signature, a docstring): on a
    # multi-megabyte file, splitting everything cost most of a request.
    if len(prefix) > _WINDOW_CHARS:
        prefix = prefix[prefix.find("\n", len(prefix) - _WINDOW_CHARS) + 1 :]
    lines = prefix.split("\n")[:-1]  # the cursor's own line is blank
    code = [i for i, line in enumerate(lines) if line.strip()]
    if not code:
        return None
    last = lines[code[-1]]
    if last.rstrip().endswith(":") and not _COMMENT.match(last):
        return last[: indentation(last)] + unit
    # Walk up over a docstring or comments; a def header must come right before them.
    i = len(code) - 1
    if _DOCSTRING_END.match(last):
        quote = _DOCSTRING_END.match(last).group(1)
        opened = last.count(quote) >= 2
        while not opened and i > 0:
            i -= 1
            opened = quote in lines[code[i]]
        i -= 1
    else:
        while i >= 0 and _COMMENT.match(lines[code[i]]):
            i -= 1
        if i == len(code) - 1:
            return None
    if i < 0:
        return None
    header = lines[code[i]]
    if header.rstrip().endswith(":") and _HEADER.match(_signature_start(lines, code, i)):
        body = lines[code[i + 1]]
        return body[: indentation(body)]
    return None


def is_header(line: str) -> bool:
    """Whether ``line`` starts a def or class."""
    return bool(_HEADER.match(line))


def indentation(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _signature_start(lines: list[str], code: list[int], i: int) -> str:
    """The first line of a signature that may span several lines and ends at code[i]."""
    for j in range(i, max(i - 10, -1), -1):
        if _HEADER.match(lines[code[j]]):
            return lines[code[j]]
        if j < i and lines[code[j]].rstrip().endswith(":"):
            break
    return lines[code[i]]


def _indent_of_last_code(lines: list[str]) -> int:
    for line in reversed(lines):
        if line.strip():
            return indentation(line) + (1 if line.rstrip().endswith(":") else 0)
    return 0
