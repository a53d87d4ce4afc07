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


def test_crlf_line_endings_are_read_as_newlines_and_remembered():
    ctx = cursor_context(doc("a = 1\r\nb = 2\r\nc = 3\r\n"), 1, 5)
    assert ctx.line_prefix == "b = 2"
    assert ctx.line_suffix == ""
    assert ctx.prefix == "a = 1\nb = 2"  # the model and the filters read "\n" (a CRLF file's prompt as any other)
    assert ctx.suffix == "\nc = 3\n"
    assert ctx.next_line == "c = 3"  # no "\r" left to tell it from the same line written by the model
    assert ctx.eol == "\r\n"
    assert cursor_context(doc("a = 1\nb = 2\n"), 1, 5).eol == "\n"
    assert cursor_context(doc("a = 1\rb = 2"), 1, 5).prefix == "a = 1\nb = 2"  # (a lone CR breaks a line in LSP)


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


def test_the_selected_widget_item_accepted_replaces_its_range_and_puts_the_cursor_after_it():
    from phils.lsp.documents import with_item_accepted

    # `os.pa|th_x = 1`: the widget's `path` replaces `pa` (range 3..5) before the cursor.
    ctx = cursor_context(doc("import os\nos.pa = 1\n"), 1, 5)
    after = with_item_accepted(ctx, 3, 5, "path")
    assert after.prefix == "import os\nos.path" and after.suffix == " = 1\n"
    assert (after.line, after.character, after.line_prefix, after.line_suffix) == (1, 7, "os.path", " = 1")
    # A range that runs past the cursor (the word's end) replaces that part too.
    ctx = cursor_context(doc("x = os.pa_old(1)\n"), 0, 9)
    after = with_item_accepted(ctx, 7, 13, "path")
    assert after.line_prefix == "x = os.path" and after.line_suffix == "(1)"
    # UTF-16 columns: the emoji is two units.
    ctx = cursor_context(doc('s = "😀" + na\n'), 0, 13)
    assert with_item_accepted(ctx, 11, 13, "name").line_prefix == 's = "😀" + name'
    # Not around the cursor, or splitting a surrogate pair: no context.
    assert with_item_accepted(ctx, 14, 15, "name") is None
    assert with_item_accepted(ctx, 6, 13, "x") is None
    # An item of several lines leaves the cursor on its last.
    ctx = cursor_context(doc("def f():\n    ret\n"), 1, 7)
    after = with_item_accepted(ctx, 4, 7, "return (\n        1")
    assert (after.line, after.character, after.line_prefix) == (2, 9, "        1")
