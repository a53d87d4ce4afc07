"""Turn a pygls document and an LSP position into a frozen cursor context.

pygls owns the text and the UTF-16 arithmetic; this module only reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pygls.workspace import TextDocument


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
        if not (line == len(lines) and (not lines or lines[-1].endswith("\n"))):
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
        prefix=source[:offset],
        suffix=source[offset:],
        line_prefix=line_prefix,
        line_suffix=content[len(line_prefix):],
        language_id=doc.language_id,
    )


def _prefix_in_line(doc: TextDocument, content: str, character: int) -> str:
    """The part of ``content`` before client column ``character``."""
    units = 0
    for index, ch in enumerate(content):
        if units >= character:
            return content[:index]
        units += doc.position_codec.client_num_units(ch)
    return content
