"""Names the code below the cursor reads that nothing binds: the hole must define them (pure).

In the middle of a function, the code after the cursor often uses a variable
that only the missing lines can define (``result.append(x)`` below, and no
``result`` anywhere above). A fill-in-the-middle model sees that; Phi-2 does
not, so the engine also tries answers that start by binding such a name, and
lets the document's likelihood judge them with the others.

Python only, from tokens (the text around a cursor rarely parses): a name
counts as known when it appears anywhere before the cursor, is bound anywhere
after it (assigned, a loop or ``with`` target, a definition, an import, a
parameter), or is a keyword or builtin. Misses cost one judged candidate,
never a wrong answer.
"""

from __future__ import annotations

import builtins
import io
import keyword
import tokenize
from functools import lru_cache

MAX_NAMES = 2
_BINDERS = {"def", "class", "import", "as", "global", "nonlocal"}
_KNOWN = set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins)) | {"self", "cls", "__class__"}


def names_to_bind(before: str, after: str, block_indent: int) -> list[str]:
    """Names read in the code after the cursor, up to where the block at ``block_indent`` ends, that
    nothing before the cursor mentions and nothing after it binds; in order of first use, at most ``MAX_NAMES``."""
    known = _KNOWN | {text for text, *_ in _names(before)} | _bound(after)
    found: list[str] = []
    for text, previous, following in _reads(after, block_indent):
        if text in known or text in found or previous == "." or following == "=":
            continue
        found.append(text)
        if len(found) == MAX_NAMES:
            break
    return found


# While the user types at one place, the text after the cursor stays the same: its scans are kept
# (48 ms for the 3 500 lines after a cursor in transformers' modeling_utils.py, each keystroke).
@lru_cache(maxsize=4)
def _reads(after: str, indent: int) -> tuple[tuple[str, str, str], ...]:
    return tuple(_names(_block(after, indent)))


def _block(after: str, indent: int) -> str:
    """``after`` up to the first code line indented less than ``indent`` (the enclosing block's end)."""
    lines = after.split("\n")
    kept = lines[:1]  # the rest of the cursor's line
    for line in lines[1:]:
        stripped = line.lstrip()
        if stripped and not stripped.startswith("#") and len(line) - len(stripped) < indent:
            break
        kept.append(line)
    return "\n".join(kept)


@lru_cache(maxsize=4)
def _bound(text: str) -> frozenset[str]:
    """Names that ``text`` binds: assignment and loop targets, definitions, imports, parameters."""
    bound: set[str] = set()
    tokens = list(_tokens(text))
    depth_at_def: int | None = None  # inside a def's or lambda's parameters
    in_target = False  # between ``for`` and ``in``
    depth = 0
    for index, token in enumerate(tokens):
        previous = tokens[index - 1].string if index else ""
        following = tokens[index + 1].string if index + 1 < len(tokens) else ""
        if token.type == tokenize.OP and token.string in "([{":
            depth += 1
        elif token.type == tokenize.OP and token.string in ")]}":
            depth -= 1
            if depth_at_def is not None and depth < depth_at_def:
                depth_at_def = None
        if token.type != tokenize.NAME:
            if token.string == ":" and depth_at_def == depth + 1:  # a lambda's parameters end at its colon
                depth_at_def = None
            continue
        if token.string == "for":
            in_target = True
        elif token.string == "in":
            in_target = False
        elif token.string in ("def", "lambda"):
            depth_at_def = depth + 1
        elif (in_target or depth_at_def is not None or previous in _BINDERS or following == "="
              or (previous == "," and following in (",", "=")) or following == ":="):
            bound.add(token.string)
    return frozenset(bound)


def _names(text: str):
    """(name, the token before it, the token after it) for every name token in ``text``."""
    tokens = list(_tokens(text))
    for index, token in enumerate(tokens):
        if token.type == tokenize.NAME:
            previous = tokens[index - 1].string if index else ""
            following = tokens[index + 1].string if index + 1 < len(tokens) else ""
            yield token.string, previous, following


def _tokens(text: str):
    """Python's tokens of ``text``, line by line so that bad indentation or an open bracket cannot stop
    it; comments, strings and layout left out."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.STRING, tokenize.ENDMARKER}
    for line in text.split("\n"):
        if not line.strip():
            continue
        try:
            for token in tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline):
                if token.type == tokenize.ERRORTOKEN:
                    break  # an unterminated string, say: the rest of the line is not code to read
                if token.type not in skip and not token.type == getattr(tokenize, "FSTRING_MIDDLE", -1):
                    yield token
        except (tokenize.TokenError, SyntaxError, IndentationError):
            continue
