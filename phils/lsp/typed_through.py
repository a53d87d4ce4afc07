"""Answer at once when the user types the start of the suggestion being shown, or accepts it.

If the last suggestion for a document was ``return a + b`` and the user typed
``ret``, the rest (``urn a + b``) is still right: no model call is needed.
When the user accepts a suggestion, the editor asks again at its end: the
answer there was computed ahead, while the suggestion was on screen.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .documents import CursorContext


@dataclass(frozen=True)
class Shown:
    """A suggestion as it was given: the text around the cursor then, and the text."""

    prefix: str
    suffix: str
    text: str


def accepted(ctx: CursorContext, text: str) -> CursorContext:
    """The cursor's context once ``text`` is inserted at it (the suggestion accepted)."""
    prefix_line = (ctx.line_prefix + text).rsplit("\n", 1)[-1]
    return replace(ctx, version=None, line=ctx.line + text.count("\n"), prefix=ctx.prefix + text,
                   line_prefix=prefix_line, character=len(prefix_line.encode("utf-16-le")) // 2)


def ahead_of(shown: Shown | None, ctx: CursorContext) -> str | None:
    """``shown``'s text ("": nothing to suggest there) when the cursor is where it was computed for, else None."""
    if shown is None or ctx.prefix != shown.prefix or ctx.suffix != shown.suffix:
        return None
    return shown.text if shown.text.strip() else ""


def rest_of(shown: Shown | None, ctx: CursorContext) -> str | None:
    """What is left of ``shown`` after what was typed since, or None if it no longer applies."""
    if shown is None or ctx.suffix != shown.suffix or not ctx.prefix.startswith(shown.prefix):
        return None
    typed = ctx.prefix[len(shown.prefix) :]
    if not typed or len(typed) >= len(shown.text) or not shown.text.startswith(typed):
        return None
    rest = shown.text[len(typed) :]
    return rest if rest.strip() else None
