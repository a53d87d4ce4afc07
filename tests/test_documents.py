from __future__ import annotations

from lsprotocol import types
from pygls.workspace import PositionCodec, TextDocument

from phils.lsp.documents import cursor_context


def doc(text: str, encoding=types.PositionEncodingKind.Utf16) -> TextDocument:
    return TextDocument("file:///t.py", text, version=3, position_codec=PositionCodec(encoding))


def test_prefix_suffix_and_line_parts():
    ctx = cursor_context(doc("a = 1\nprint(a)\n"), 1, 6)
    assert ctx.prefix == "a = 1\nprint("
    assert ctx.suffix == "a)\n"
    assert ctx.line_prefix == "print("
    assert ctx.line_suffix == "a)"
    assert ctx.single_line
    assert ctx.version == 3


def test_utf16_columns_count_astral_characters_twice():
    text = 's = "😀"; t = 1\n'
    # "😀" is two UTF-16 units: the column after the closing quote is 8, not 7.
    ctx = cursor_context(doc(text), 0, 8)
    assert ctx.line_prefix == 's = "😀"'
    assert cursor_context(doc(text, types.PositionEncodingKind.Utf32), 0, 7).line_prefix == 's = "😀"'


def test_crlf_line_endings():
    ctx = cursor_context(doc("a = 1\r\nb = 2\r\n"), 1, 5)
    assert ctx.line_prefix == "b = 2"
    assert ctx.line_suffix == ""
    assert ctx.prefix == "a = 1\r\nb = 2"


def test_the_empty_line_after_a_final_newline_is_a_valid_position():
    ctx = cursor_context(doc("x = 1\n"), 1, 0)
    assert ctx is not None and ctx.prefix == "x = 1\n" and ctx.suffix == ""


def test_out_of_range_positions_give_none():
    d = doc("x = 1\ny = 2")
    assert cursor_context(d, 2, 0) is None  # no line 2 (no final newline)
    assert cursor_context(d, 5, 0) is None
    assert cursor_context(d, 0, 6) is None  # past the end of the line
    assert cursor_context(d, -1, 0) is None


def test_next_line_skips_blank_lines():
    ctx = cursor_context(doc("def f():\n    \n\n    return 1\n"), 1, 4)
    assert ctx.next_line == "    return 1"
