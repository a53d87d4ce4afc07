"""Build the model's prompt from the code before the cursor: pure, no I/O, no torch.

Phi-2 is a base model trained on "code format" text, not fill-in-the-middle:
the prompt is the code before the cursor (models trained with FIM markers get
``build_fim``: the code after the cursor too). When it does not fit the token
budget, the middle goes: the module's imports and the enclosing class/def
headers (with their docstrings) stay at the top, then the left-out lines most
like the code at the cursor (``snippets``), then as much of the code just
before the cursor as fits.

The start of that tail is sticky: the caller passes back the line the last
prompt's tail started at, and it stays there for as long as the prompt still
fits. When it must move, the new tail fills only ``FILL`` of the budget, so
the next move is far away. While the user types, the prompt therefore grows
at its end and its start moves in large, rare steps: what the KV cache holds
stays a prefix of the next prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from . import outline, snippets
from .documents import CursorContext

FILL = 2 / 3
# A token is rarely longer than this many characters; used to bound the text we tokenize.
MAX_CHARS_PER_TOKEN = 12
# Head and tail are counted apart; leave room for a token that differs at the seam.
SEAM_TOKENS = 4


@dataclass(frozen=True)
class Prompt:
    text: str  # what the model reads
    # Whitespace the user typed on the cursor's line, held back from the prompt
    # because a tokenizer encodes a trailing "\n    " differently from the same
    # indentation inside code; the suggestion must begin with it (see heal()).
    held_back: str = ""
    # Indentation the prompt ends with that the document does not have yet: the
    # cursor is at the start of a line in a body that is still empty, where
    # code must be indented. The engine heals it (regenerates it as the first
    # token), and the suggestion starts with it.
    forced: str = ""
    tail_start: int | None = None  # the line the tail starts at when the middle was left out
    fim: bool = False  # written with fill-in-the-middle markers: the code below is in it
    middle_start: int | None = None  # FIM: the line the middle starts at (the lines from it on follow the marker)
    snippet_start: int | None = None  # the first line of the left-out code put back (``snippets``), if any

    @property
    def trimmed(self) -> bool:
        return self.tail_start is not None


def build(
    ctx: CursorContext, count_tokens: Callable[[str], int], budget: int, keep_start: int | None = None,
    context: str = "", keep_snippet: int | None = None,
) -> Prompt:
    """The prompt for ``ctx`` within ``budget`` tokens.

    ``keep_start`` is the previous prompt's ``tail_start`` for this document:
    the tail keeps starting there while everything still fits (``keep_snippet``: its ``snippet_start``, kept
    with it). ``context``
    (other modules' signatures, which change rarely) goes first, so that what
    follows it stays a reusable prefix too.
    """
    if context:
        built = build(ctx, count_tokens, budget - count_tokens(context) - SEAM_TOKENS, keep_start,
                      keep_snippet=keep_snippet)
        return replace(built, text=context + built.text)
    text, held_back = _hold_back_indentation(ctx.prefix, ctx.line_prefix)
    forced = "" if ctx.line_prefix else outline.empty_body_indent(ctx.prefix) or ""
    fitted, start, snippet = _fit(text, count_tokens, budget, keep_start, keep_snippet)
    return Prompt(text=fitted + forced, held_back=held_back, forced=forced, tail_start=start, snippet_start=snippet)


def build_fim(ctx: CursorContext, count_tokens: Callable[[str], int], budget: int, markers: dict[str, str],
              keep_start: int | None = None, context: str = "", suffix_tokens: int = 256,
              middle_start: int | None = None, keep_snippet: int | None = None) -> Prompt:
    """The prompt for a model trained with fill-in-the-middle markers (``prefix``, ``suffix``, ``middle``).

    As llama.vim lays it out: the lines above the cursor's line, then the code
    after the cursor (whole lines, at most ``suffix_tokens`` and
    ``FIM_SUFFIX_SHARE`` of the budget), then the cursor's line up to the
    cursor after the middle marker. Typing on a line changes only the prompt's
    end, so the KV cache holds all the rest. The middle is sticky: it starts
    at ``middle_start`` (the last prompt's) while the cursor stays within
    ``MAX_MIDDLE_LINES`` lines below it, so the lines written since then follow
    the marker too, and a new line (the code after the cursor unchanged) also
    reuses the whole cache instead of computing the code below again.
    """
    above = ctx.prefix[: len(ctx.prefix) - len(ctx.line_prefix)]
    lines = above.splitlines(keepends=True)
    start = len(lines)  # the cursor's line
    if middle_start is not None and start - MAX_MIDDLE_LINES <= middle_start <= start:
        start = middle_start
    middle = "".join(lines[start:]) + ctx.line_prefix
    below = _fit_start(ctx.suffix, count_tokens, min(suffix_tokens, int(budget * FIM_SUFFIX_SHARE)))
    room = budget - count_tokens(below) - count_tokens(middle) - count_tokens(context) - 4 * SEAM_TOKENS
    fitted, tail, snippet = _fit("".join(lines[:start]), count_tokens, room, keep_start, keep_snippet)
    text = f"{markers['prefix']}{context}{fitted}{markers['suffix']}{below}{markers['middle']}{middle}"
    return Prompt(text=text, tail_start=tail, fim=True, middle_start=start, snippet_start=snippet)


def fim_opening(ctx: CursorContext, count_tokens: Callable[[str], int], budget: int, markers: dict[str, str],
                context: str = "") -> Prompt:
    """What to pre-fill when a document opens, for a FIM model: the prefix marker and the file's first lines.

    Every FIM prompt in the document begins with them (the lines above its
    cursor), wherever the first request comes; a prompt written for one cursor
    position would share only its marker with a request at another. Whole
    lines from the start up to ``ctx``, as many as fit ``budget``.
    """
    above = ctx.prefix[: len(ctx.prefix) - len(ctx.line_prefix)]
    room = budget - count_tokens(context) - SEAM_TOKENS
    fitted = _fit_start(above, count_tokens, room) if above and room > 0 else ""
    return Prompt(text=f"{markers['prefix']}{context}{fitted}", fim=True)


# With FIM, the code after the cursor may take up to this share of the prompt (whole lines).
FIM_SUFFIX_SHARE = 0.25
# With FIM, lines written since the middle started stay in it up to this many; then it starts at the cursor's
# line again (the code below computed once more).
MAX_MIDDLE_LINES = 8


def _fit(text: str, count_tokens: Callable[[str], int], budget: int, keep_start: int | None,
         keep_snippet: int | None = None) -> tuple[str, int | None, int | None]:
    """``text`` if it fits ``budget`` tokens, else its middle left out (``_trim_middle``); where its tail starts
    and its snippet's first line."""
    window = text[-budget * MAX_CHARS_PER_TOKEN :] if budget > 0 else ""
    if len(window) == len(text) and count_tokens(text) <= budget:
        return text, None, None
    return _trim_middle(text, count_tokens, budget, keep_start, keep_snippet)


def _fit_start(text: str, count_tokens: Callable[[str], int], budget: int) -> str:
    """The longest run of ``text``'s first whole lines (the first line at least) that fits ``budget`` tokens."""
    window = text[: max(budget, 0) * MAX_CHARS_PER_TOKEN]
    lines = window.splitlines(keepends=True)
    if len(window) < len(text) and len(lines) > 1 and not lines[-1].endswith("\n"):
        lines.pop()  # cut by the window
    lo, hi = 1, len(lines)
    while lo < hi:  # the most lines that fit
        mid = (lo + hi + 1) // 2
        if count_tokens("".join(lines[:mid])) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return "".join(lines[:lo])


def heal(generated: str, held_back: str) -> str:
    """Strip from the model's output the indentation the user had already typed."""
    common = 0
    for a, b in zip(generated, held_back):
        if a != b:
            break
        common += 1
    return generated[common:]


def _hold_back_indentation(prefix: str, line_prefix: str) -> tuple[str, str]:
    if line_prefix and not line_prefix.strip():
        return prefix[: len(prefix) - len(line_prefix)], line_prefix
    return prefix, ""


def _trim_middle(
    text: str, count_tokens: Callable[[str], int], budget: int, keep_start: int | None, keep_snippet: int | None
) -> tuple[str, int, int | None]:
    lines = text.splitlines(keepends=True)
    imports = outline.imports(lines)
    head = {i: lines[i] for i in imports}
    head.update(outline.enclosing_headers(lines))
    head_tokens = count_tokens(_joined(head, len(lines))) if head else 0
    if head_tokens > budget // 2:  # a huge import block must not starve the code
        head, imports, head_tokens = {}, [], 0
    tail_budget = budget - head_tokens - SEAM_TOKENS
    # The tail may start anywhere after the imports; enclosing headers above it join the head.
    first_allowed = max(imports, default=-1) + 1
    snippet_budget = budget // snippets.SHARE
    if keep_start is not None and first_allowed <= keep_start < len(lines):
        chosen = {}
        if keep_snippet is not None and first_allowed <= keep_snippet < keep_start:
            chosen = snippets.snippet_lines(lines, keep_snippet, keep_start, count_tokens, snippet_budget)
        kept = _joined({**chosen, **head}, keep_start) + "".join(lines[keep_start:])
        if count_tokens(kept) <= budget:
            return kept, keep_start, keep_snippet if chosen else None
    start = _tail_start(lines, count_tokens, int(tail_budget * FILL), first_allowed)
    if start >= len(lines):  # not even the cursor's line fits: keep its end
        return _joined(head, start) + _fit_end(lines[-1], count_tokens, tail_budget), len(lines) - 1, None
    snippet = snippets.most_similar(lines, first_allowed, start, start)
    chosen = {} if snippet is None else snippets.snippet_lines(lines, snippet, start, count_tokens, snippet_budget)
    if not chosen:
        return _joined(head, start) + "".join(lines[start:]), start, None
    # Room for the snippet: the tail gives up as many tokens as the snippet may take, so the prompt is no longer
    # (prefill time is what the first suggestion in a file waits for); it starts lower, below the snippet.
    start = max(start, _tail_start(lines, count_tokens, int(tail_budget * FILL) - snippet_budget, first_allowed))
    # As the kept prompt will compute it (the same lines, so the next prompt starts with this one).
    head = {**snippets.snippet_lines(lines, snippet, start, count_tokens, snippet_budget), **head}
    return _joined(head, start) + "".join(lines[start:]), start, snippet


def _joined(head: dict[int, str], tail_start: int) -> str:
    """The head lines that come before the tail, in file order, ending in a line break."""
    text = "".join(head[i] for i in sorted(head) if i < tail_start)
    return text if not text or text.endswith("\n") else text + "\n"


def _tail_start(lines: list[str], count_tokens: Callable[[str], int], budget: int, first: int) -> int:
    """The first line of the longest tail of ``lines`` that fits ``budget`` tokens."""
    lo, hi = first, len(lines)
    max_chars, chars = budget * MAX_CHARS_PER_TOKEN, 0
    for i in range(len(lines) - 1, lo - 1, -1):  # don't tokenize what cannot fit anyway
        chars += len(lines[i])
        if chars > max_chars:
            lo = i + 1
            break
    while lo < hi:
        mid = (lo + hi) // 2
        if count_tokens("".join(lines[mid:])) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _fit_end(text: str, count_tokens: Callable[[str], int], budget: int) -> str:
    """The longest end of ``text`` (one very long line) that fits ``budget`` tokens."""
    text = text[-budget * MAX_CHARS_PER_TOKEN :]
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi) // 2
        if count_tokens(text[mid:]) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return text[lo:]

