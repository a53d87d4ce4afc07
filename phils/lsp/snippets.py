"""The lines a trimmed prompt left out that look most like the code at the cursor (pure).

When a module does not fit the window, the prompt keeps its imports, the
headers around the cursor and the code just above it; the method forty lines
up that does the same thing is gone. Like Copilot's and Tabby's snippet
retrieval (Jaccard similarity of identifier sets over sliding windows), the
window of the left-out lines sharing the most names with the lines above the
cursor goes back into the prompt, in file order, under the header of the def
it belongs to. It is chosen when the prompt's tail start moves and kept with
it (``keep``), so the prompt stays a prefix of the next while the user types.
"""

from __future__ import annotations

import keyword
import re
from typing import Callable

from . import outline

WINDOW_LINES = 10  # windows of this many lines of the left-out code are compared with the lines above the cursor
QUERY_LINES = 10
# The window most like the code above the cursor is code like it; what came next there is what may come next
# here (pygls' feature_manager: the line after the matched window is the blanked line's twin). A snippet is the
# window and the lines after it under the defs and classes it sits in, its first lines dropped where the
# budget is short.
AFTER_LINES = 6
MIN_SIMILARITY = 0.2  # below this, no snippet: unrelated code only costs the prompt room
SHARE = 6  # a snippet takes at most 1/SHARE of the prompt's budget

_NAME = re.compile(r"[A-Za-z_]\w*")
_COMMON = frozenset(keyword.kwlist) | {"self", "cls", "None", "True", "False"}


def names(line: str) -> frozenset[str]:
    """The identifiers a line uses, less keywords and what every method says."""
    return frozenset(_NAME.findall(line)) - _COMMON


def most_similar(lines: list[str], first: int, end: int, query_from: int) -> int | None:
    """The first line of the ``WINDOW_LINES``-line window within ``lines[first:end]`` whose names are most
    like those of ``lines[query_from:]`` (Jaccard), if at least ``MIN_SIMILARITY``; else None."""
    query = frozenset().union(*(names(line) for line in lines[max(query_from, len(lines) - QUERY_LINES):]))
    if not query or end - first <= 0:
        return None
    per_line = [names(line) for line in lines[first:end]]
    best, best_start = MIN_SIMILARITY, None
    for offset in range(0, max(1, len(per_line) - WINDOW_LINES + 1)):
        window = frozenset().union(*per_line[offset: offset + WINDOW_LINES])
        if not window:
            continue
        similarity = len(window & query) / len(window | query)
        if similarity > best:  # the earliest of equals: ties go to the first
            best, best_start = similarity, first + offset
    return best_start


def snippet_lines(lines: list[str], start: int, end: int, count_tokens: Callable[[str], int],
                  budget: int) -> dict[int, str]:
    """The snippet from ``start`` (the window and ``AFTER_LINES``, before ``end``) with the def and class lines
    it sits in, its first lines dropped until it fits ``budget`` tokens; {} if not even one line fits."""
    headers = _headers_above(lines, start)
    body = []
    for i in range(start, min(start + WINDOW_LINES + AFTER_LINES, end)):
        if headers and lines[i].strip() and outline.indentation(lines[i]) <= outline.indentation(lines[headers[0]]):
            break  # out of the def it sits in: what follows is other code
        body.append(i)
    while body and not lines[body[-1]].strip():
        body.pop()
    chosen = {i: lines[i] for i in body}
    for header in headers:  # each with its signature's continuation lines, to its colon
        end_of_signature = header
        while end_of_signature < start - 1 and not lines[end_of_signature].rstrip().endswith(":"):
            end_of_signature += 1
        chosen.update((i, lines[i]) for i in range(header, end_of_signature + 1))
    while body and count_tokens("".join(chosen[i] for i in sorted(chosen))) > budget:
        chosen.pop(body.pop(0))
    return chosen if body else {}


def _headers_above(lines: list[str], start: int) -> list[int]:
    """The def/class lines that enclose ``start``, innermost first."""
    code = next((line for line in lines[start:start + WINDOW_LINES] if line.strip()), "")
    indent = outline.indentation(code) if code else 0
    headers = []
    for i in range(start - 1, -1, -1):
        if indent == 0:
            break
        line = lines[i]
        if line.strip() and outline.indentation(line) < indent:
            indent = outline.indentation(line)
            if outline.is_header(line):
                headers.append(i)
    return headers
