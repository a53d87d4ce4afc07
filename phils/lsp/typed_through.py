"""Answer at once when the user types the start of the suggestion being shown.

If the last suggestion for a document was ``return a + b`` and the user typed
``ret``, the rest (``urn a + b``) is still right: no model call is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

from .documents import CursorContext


@dataclass(frozen=True)
class Shown:
    """A suggestion as it was given: the text around the cursor then, and the text."""

    prefix: str
    suffix: str
    text: str


def rest_of(shown: Shown | None, ctx: CursorContext) -> str | None:
    """What is left of ``shown`` after what was typed since, or None if it no longer applies."""
    if shown is None or ctx.suffix != shown.suffix or not ctx.prefix.startswith(shown.prefix):
        return None
    typed = ctx.prefix[len(shown.prefix) :]
    if not typed or len(typed) >= len(shown.text) or not shown.text.startswith(typed):
        return None
    rest = shown.text[len(typed) :]
    return rest if rest.strip() else None
