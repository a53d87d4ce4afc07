"""Answer at once when the user types the start of the suggestion being shown, or accepts it.

If the last suggestion for a document was ``return a + b`` and the user typed
``ret``, the rest (``urn a + b``) is still right: no model call is needed.
When the user accepts a suggestion, the editor asks again at its end: the
answer there was computed ahead, while the suggestion was on screen. Where
nothing follows on that line, the next line was computed ahead too, so
pressing Enter (the editor indents) finds its suggestion done.
"""

from __future__ import annotations

from dataclasses import dataclass

from .documents import CursorContext, accepted

OPENS_A_BLOCK = ":{(["  # a line ending so is followed by a deeper one (Python's colon, brackets)


@dataclass(frozen=True)
class Shown:
    """A suggestion as it was given: the text around the cursor then, and the text."""

    prefix: str
    suffix: str
    text: str


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


def found_ahead(computed: list[Shown], ctx: CursorContext) -> tuple[Shown, str] | None:
    """A suggestion computed ahead that answers at ``ctx``, with what to show: where it was computed for,
    its text ("": nothing to suggest there); typed into since (the editor's indentation after Enter, or
    the user typing what it says), the rest of it."""
    for shown in computed:
        if (text := ahead_of(shown, ctx)) is not None:
            return shown, text
    for shown in computed:
        if (rest := rest_of(shown, ctx)) is not None:
            return shown, rest
    return None


def line_after(ctx: CursorContext) -> CursorContext | None:
    """The cursor after Enter at ``ctx``, indented as editors indent (the line's own indentation, one
    level deeper after a line that opens a block), where the line ends there with code on it (else
    None): a new line is where the user goes next when nothing follows on this one."""
    if ctx.line_suffix or not ctx.line_prefix.strip():
        return None
    indent = ctx.line_prefix[: len(ctx.line_prefix) - len(ctx.line_prefix.lstrip())]
    if ctx.line_prefix.rstrip()[-1] in OPENS_A_BLOCK:
        below = ctx.next_line[: len(ctx.next_line) - len(ctx.next_line.lstrip())]
        deeper = below if below.startswith(indent) and len(below) > len(indent) else ""
        indent = deeper or indent + ("\t" if "\t" in indent else "    ")
    return accepted(ctx, "\n" + indent)


def worth_waiting(prefix: str, suffix: str, ctx: CursorContext) -> bool:
    """Whether a suggestion being computed at (``prefix``, ``suffix``) will answer at ``ctx``: the same
    place, or a new line that the editor has indented further since."""
    if suffix != ctx.suffix or not ctx.prefix.startswith(prefix):
        return False
    typed = ctx.prefix[len(prefix):]
    return not typed or "\n" in prefix and prefix.rsplit("\n", 1)[1].strip() == "" and typed.strip(" \t") == ""
