"""What an instance of the class around the cursor can have: ``self.name`` beyond it is an invention (pure).

Code models write ``if not self.is_empty():`` in a ``Stack`` that has no
``is_empty`` (Qwen2.5-Coder 1.5B in two of nine small classes): accepted, it
is an AttributeError. Where the whole class is in the document, the stop rule
ends a suggestion before the line that reads such a name, and the engine's
next best answer is tried where that leaves nothing.

Only where that is certain: Python, the cursor in the class's body or in one
of its methods (first parameter ``self``), every base either ``object``, a
builtin type (its attributes are known), ``ABC``/``Generic``/``Protocol`` or
a class of this document (read the same way), no class decorator but
``dataclass``/``total_ordering``, and no ``__getattr__``/``setattr`` games.
The names are every word of the class's text, strings and comments too (a
``__slots__`` entry, an attribute named in a docstring), so a miss is a name
nothing in the class mentions.
"""

from __future__ import annotations

import builtins
import re

from .outline import indentation, signature_end

MAX_NAMES = 5000  # a class bigger than this is not read (the names travel with every request)
MAX_CHARS = 200_000  # of the document on each side of the cursor
MAX_LINES_UP = 3000  # how far above the cursor its class's header is looked for
MAX_BASE_DEPTH = 4

_CLASS = re.compile(r"\s*class\s+(\w+)\s*(?:\((.*)\))?\s*:")
_CLASS_LINE = re.compile(r"\s*class\s+(\w+)")
_DEF = re.compile(r"\s*(?:async\s+)?def\s+\w+\s*\(\s*(\w*)")
_DECORATOR = re.compile(r"\s*@\s*([\w.]+)")
_WORD = re.compile(r"[A-Za-z_]\w*")
_DYNAMIC = re.compile(r"__getattr__|__getattribute__|setattr\s*\(|__dict__")
_NEUTRAL_BASES = {"object", "ABC", "abc.ABC", "Generic", "typing.Generic", "Protocol", "typing.Protocol"}
_DECORATORS = {"dataclass", "dataclasses.dataclass", "total_ordering", "functools.total_ordering"}


def of_class_at_cursor(prefix: str, suffix: str, block_indent: int) -> tuple[str, ...] | None:
    """The names ``self.name`` may read at the end of ``prefix`` (code at ``block_indent``), or None where
    that cannot be known."""
    if len(prefix) > MAX_CHARS:  # (a huge file: its class and bases are near the cursor, or not read)
        prefix = prefix[prefix.find("\n", len(prefix) - MAX_CHARS) + 1:]
    lines = (prefix + suffix[:MAX_CHARS]).split("\n")
    cursor = prefix.count("\n")
    found = _enclosing_class(lines, cursor, block_indent)
    if found is None:
        return None
    names: set[str] = set()
    if not _read_class(lines, found, names, 0):
        return None
    return tuple(sorted(names)) if len(names) <= MAX_NAMES else None


def _enclosing_class(lines: list[str], cursor: int, limit: int) -> int | None:
    """The line of the class whose body or method the cursor is in (a nested def may be between)."""
    method = None  # the outermost def passed so far: the one right under the class
    for i in range(cursor - 1, max(cursor - MAX_LINES_UP, -1), -1):
        line = lines[i]
        if not line.strip() or indentation(line) >= limit or line.lstrip().startswith(")"):
            continue  # (`):` ends a header that broke its line)
        limit = indentation(line)
        if (match := _DEF.match(line)) is not None:
            method = match.group(1) if match.group(1) else _first_parameter(lines, i)
        elif _CLASS_LINE.match(line) is not None:
            return i if method in (None, "self") else None
        if limit == 0:
            return None
    return None


def _first_parameter(lines: list[str], start: int) -> str:
    """The first parameter of a signature that breaks its line after ``(``."""
    for line in lines[start + 1:start + 4]:
        if line.strip():
            match = _WORD.match(line.strip())
            return match.group(0) if match else ""
    return ""


def _read_class(lines: list[str], start: int, names: set[str], depth: int) -> bool:
    """Add the class at ``start``'s words (and its bases') to ``names``; False where it is not all known."""
    end = signature_end(lines, start)  # (a header may break its line between bases)
    match = _CLASS.match(" ".join(line.strip() for line in lines[start:end + 1]))
    if match is None or depth > MAX_BASE_DEPTH:
        return False
    above = start - 1
    while above >= 0 and (decorator := _DECORATOR.match(lines[above])) is not None:
        if decorator.group(1) not in _DECORATORS:
            return False
        above -= 1
    end += 1
    while end < len(lines) and (not lines[end].strip() or indentation(lines[end]) > indentation(lines[start])):
        end += 1
    text = "\n".join(lines[start:end])
    if _DYNAMIC.search(text):
        return False
    names.update(_WORD.findall(text))
    return all(_read_base(base, lines, names, depth) for base in _bases(match.group(2) or ""))


def _bases(text: str) -> list[str]:
    """A class header's bases, split at its top-level commas (``Generic[K, V]`` is one)."""
    bases, depth, current = [], 0, ""
    for char in text:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            bases.append(current.strip())
            current = ""
        else:
            current += char
    return [base for base in bases + [current.strip()] if base]


def _read_base(base: str, lines: list[str], names: set[str], depth: int) -> bool:
    if "=" in base or base.startswith("*"):  # metaclass=..., **kwargs: anything may come from there
        return False
    name = base.split("[", 1)[0].strip()
    if name in _NEUTRAL_BASES:
        return True
    builtin = getattr(builtins, name, None)
    if isinstance(builtin, type):
        names.update(dir(builtin))
        return True
    for i, line in enumerate(lines):
        if (match := _CLASS_LINE.match(line)) is not None and not line[0].isspace() and match.group(1) == name:
            return _read_class(lines, i, names, depth + 1)
    return False
