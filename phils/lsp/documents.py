"""Turn a pygls document and an LSP position into a frozen cursor context.

pygls owns the text and the UTF-16 arithmetic; this module only reads them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from pygls.workspace import TextDocument, Workspace

# LSP's only line breaks. str.splitlines(), which pygls uses, also breaks at
# form feeds, U+2028 and other characters real Python files contain, and the
# server's text then drifts from the editor's with every edit near them.
_LSP_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
_OTHER_BREAKS = re.compile("[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_BREAK = re.compile(r"\r\n?|\n")


class LspTextDocument(TextDocument):
    """pygls' document, with lines split where LSP splits them."""

    @property
    def lines(self) -> tuple[str, ...]:
        source = self.source
        if _OTHER_BREAKS.search(source) is None:
            return tuple(source.splitlines(True))  # the same split, faster
        return tuple(_LSP_LINE.findall(source))


class LspWorkspace(Workspace):
    def _create_text_document(self, doc_uri: str, source: str | None = None, version: int | None = None,
                              language_id: str | None = None) -> TextDocument:
        return LspTextDocument(doc_uri, source=source, version=version, language_id=language_id,
                               sync_kind=self._sync_kind, position_codec=self._position_codec)


def use_lsp_line_breaks(workspace: Workspace) -> None:
    """Make the pygls workspace create LspTextDocuments (called at initialize)."""
    workspace.__class__ = LspWorkspace


def open_text_document(uri: str, source: str, version: int | None = None, **kwargs: Any) -> LspTextDocument:
    return LspTextDocument(uri, source=source, version=version, **kwargs)


@dataclass(frozen=True)
class CursorContext:
    uri: str
    version: int | None
    line: int  # 0-based line of the cursor
    character: int  # the cursor's column as the client counts it (UTF-16 by default)
    prefix: str  # all text before the cursor
    suffix: str  # all text after the cursor
    line_prefix: str  # text before the cursor on its line
    line_suffix: str  # text after the cursor on its line, without the line break
    language_id: str | None = None
    # The document's line break. Prefix and suffix always break lines with "\n" (what the model read most,
    # what every filter splits on); a suggestion is sent with this one (a CRLF file stays CRLF).
    eol: str = "\n"

    @property
    def single_line(self) -> bool:
        """Text follows the cursor on its line: complete that line only."""
        return self.line_suffix.strip() != ""

    @property
    def next_line(self) -> str:
        """The first non-blank line after the cursor's line ("" if none)."""
        for line in self.suffix.split("\n")[1:]:
            if line.strip():
                return line
        return ""


def cursor_context(doc: TextDocument, line: int, character: int) -> CursorContext | None:
    """The context at (line, character), or None when the position is not in the document."""
    lines = doc.lines
    if line < 0 or character < 0:
        return None
    if line >= len(lines):
        # A position just past a final newline is the empty last line.
        if not (line == len(lines) and (not lines or lines[-1].endswith(("\n", "\r")))):
            return None
        text_line = ""
    else:
        text_line = lines[line]
    content = text_line.rstrip("\r\n")
    if character > doc.position_codec.client_num_units(content):
        return None
    line_prefix = _prefix_in_line(doc, content, character)
    # The same line split pygls uses to apply edits, so positions agree with it.
    line_start = sum(len(text) for text in lines[:line])
    offset = line_start + len(line_prefix)
    source = doc.source
    return CursorContext(
        uri=doc.uri,
        version=doc.version,
        line=line,
        character=character,
        prefix=lf(source[:offset]),
        suffix=lf(source[offset:]),
        line_prefix=line_prefix,
        line_suffix=content[len(line_prefix):],
        language_id=doc.language_id,
        eol=line_break(source),
    )


def lf(text: str) -> str:
    """``text`` with every LSP line break ("\r\n", "\r", "\n") written "\n"."""
    return _BREAK.sub("\n", text) if "\r" in text else text


def line_break(source: str) -> str:
    """The line break a document uses (its first one; "\n" in a document of one line)."""
    found = _BREAK.search(source)
    return found.group() if found else "\n"


def accepted(ctx: CursorContext, text: str) -> CursorContext:
    """The cursor's context once ``text`` is inserted at it (the suggestion accepted)."""
    prefix_line = (ctx.line_prefix + text).rsplit("\n", 1)[-1]
    return replace(ctx, version=None, line=ctx.line + text.count("\n"), prefix=ctx.prefix + text,
                   line_prefix=prefix_line, character=len(prefix_line.encode("utf-16-le")) // 2)


def with_item_accepted(ctx: CursorContext, start: int, end: int, text: str) -> CursorContext | None:
    """The context once the item selected in the editor's completion widget is accepted: ``text`` in place
    of columns [``start``, ``end``) of the cursor's line (UTF-16), the cursor after it; None where that
    range is not around the cursor."""
    if not 0 <= start <= ctx.character <= end:
        return None
    before = _chars_for_units(ctx.line_prefix[::-1], ctx.character - start)
    after = _chars_for_units(ctx.line_suffix, end - ctx.character)
    if before is None or after is None:
        return None
    cleared = replace(ctx, prefix=ctx.prefix[: len(ctx.prefix) - before], suffix=ctx.suffix[after:],
                      line_prefix=ctx.line_prefix[: len(ctx.line_prefix) - before], line_suffix=ctx.line_suffix[after:])
    return accepted(cleared, text)  # (the range's text gone, the item's in its place)


def with_surroundings(ctx: CursorContext, before: str, after: str, uri: str) -> CursorContext:
    """The context with the text the editor shows around the document (a notebook's other cells), as
    part of the document at ``uri`` (the notebook)."""
    return replace(ctx, uri=uri, prefix=lf(before) + ctx.prefix, suffix=ctx.suffix + lf(after))


def _chars_for_units(text: str, units: int) -> int | None:
    """How many characters from the start of ``text`` make ``units`` UTF-16 units; None if none do."""
    count = 0
    for chars, ch in enumerate(text):
        if count >= units:
            return chars if count == units else None
        count += 2 if ord(ch) > 0xFFFF else 1
    return len(text) if count == units else None


def line_prefix_at(doc: TextDocument, line: int, character: int) -> str:
    """The text before client column ``character`` on ``line`` (its whole text where the column is past it)."""
    lines = doc.lines
    return _prefix_in_line(doc, lines[line].rstrip("\r\n"), character) if 0 <= line < len(lines) else ""


def _prefix_in_line(doc: TextDocument, content: str, character: int) -> str:
    """The part of ``content`` before client column ``character``."""
    units = 0
    for index, ch in enumerate(content):
        if units >= character:
            return content[:index]
        units += doc.position_codec.client_num_units(ch)
    return content
