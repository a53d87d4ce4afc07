"""The server's text stays equal to the editor's under random incremental edits.

A model editor keeps the text as a Python string and sends LSP edits with
positions counted the way a client counts them (UTF-16 code units by default,
UTF-8 bytes when negotiated); line breaks are only \\n, \\r\\n and \\r, as LSP
says. Text includes astral characters, CRLF, tabs, and characters that Python's
str.splitlines() would wrongly treat as line breaks (form feed, U+2028).
"""

from __future__ import annotations

import random
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from lsprotocol import types
from pygls.workspace import PositionCodec

from conftest import inline, open_doc, phils_server, stats
from phils.lsp.documents import cursor_context, open_text_document

PIECES = ["a", "bc", " ", "    ", "\t", "\n", "\r\n", "\r", "é", "😀", "漢", "\x0c", "\u2028", "def f(x):\n    return x\n"]
LINE_BREAK = re.compile(r"\r\n|\r|\n")


def lsp_lines(text: str) -> list[str]:
    """Lines as LSP counts them, without their breaks."""
    return LINE_BREAK.split(text)


def units(s: str, encoding: str) -> int:
    if encoding == "utf-8":
        return len(s.encode("utf-8"))
    return len(s.encode("utf-16-le")) // 2


def position(text: str, offset: int, encoding: str) -> types.Position:
    before = text[:offset]
    lines = lsp_lines(before)
    return types.Position(line=len(lines) - 1, character=units(lines[-1], encoding))


def inside_crlf(text: str, offset: int) -> bool:
    return 0 < offset < len(text) and text[offset - 1] == "\r" and text[offset] == "\n"


@st.composite
def edit_sequences(draw):
    text = "".join(draw(st.lists(st.sampled_from(PIECES), max_size=12)))
    edits = []
    current = text
    for _ in range(draw(st.integers(1, 15))):
        a = draw(st.integers(0, len(current)))
        b = draw(st.integers(a, len(current)))
        if inside_crlf(current, a) or inside_crlf(current, b):
            continue  # no client puts a position between \r and \n
        new = "".join(draw(st.lists(st.sampled_from(PIECES), max_size=4)))
        edits.append((a, b, new))
        current = current[:a] + new + current[b:]
    return text, edits


@settings(max_examples=300, deadline=None)
@given(edit_sequences(), st.sampled_from(["utf-16", "utf-8"]), st.data())
def test_incremental_edits_keep_the_text_and_cursor_in_sync(sequence, encoding, data):
    text, edits = sequence
    codec = PositionCodec(encoding=types.PositionEncodingKind(encoding))
    doc = open_text_document("file:///sync.py", text, version=1, position_codec=codec)
    for version, (a, b, new) in enumerate(edits, start=2):
        change = types.TextDocumentContentChangePartial(
            range=types.Range(start=position(text, a, encoding), end=position(text, b, encoding)), text=new
        )
        doc.apply_change(change)
        doc.version = version
        text = text[:a] + new + text[b:]
        assert doc.source == text

    # A completion at any valid cursor sees exactly the text before and after it.
    offset = data.draw(st.integers(0, len(text)).filter(lambda o: not inside_crlf(text, o)))
    here = position(text, offset, encoding)
    context = cursor_context(doc, here.line, here.character)
    assert context is not None
    assert context.prefix == re.sub("\r\n?", "\n", text[:offset])  # (every line break read as "\n")
    assert context.suffix == re.sub("\r\n?", "\n", text[offset:])
    assert context.line_prefix == lsp_lines(text[:offset])[-1]


def random_edits(rng: random.Random, text: str, count: int):
    for _ in range(count):
        a, b = sorted(rng.randint(0, len(text)) for _ in range(2))
        if inside_crlf(text, a) or inside_crlf(text, b):
            continue
        new = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 3)))
        yield a, b, new
        text = text[:a] + new + text[b:]


async def test_the_real_server_follows_random_edits(tiny_model):
    """Over stdio: after random edits, the server completes the edited document
    exactly as it completes a fresh copy of the editor's text."""
    rng = random.Random(20261123)
    async with phils_server("--model", str(tiny_model), "--set", "engine.ignore_stops=true", "--set", "completion.python_syntax=false",
                            "--set", "engine.max_new_tokens=4", "--set", "completion.warmup_ms=0") as client:
        for case in range(10):
            text = "import os\n" + "".join(rng.choice(PIECES) for _ in range(8))
            uri = f"file:///edited{case}/t.py"  # (the same file name: a short file's prompt begins with it)
            open_doc(client, uri, text)
            for version, (a, b, new) in enumerate(random_edits(rng, text, 30), start=2):
                client.text_document_did_change(types.DidChangeTextDocumentParams(
                    text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                    content_changes=[types.TextDocumentContentChangePartial(
                        range=types.Range(start=position(text, a, "utf-16"), end=position(text, b, "utf-16")),
                        text=new)],
                ))
                text = text[:a] + new + text[b:]
            fresh = f"file:///fresh{case}/t.py"
            open_doc(client, fresh, text)
            end = position(text, len(text), "utf-16")
            edited_answer = await inline(client, uri, end.line, end.character)
            fresh_answer = await inline(client, fresh, end.line, end.character)
            assert [(i.insert_text, i.range) for i in edited_answer.items] == \
                [(i.insert_text, i.range) for i in fresh_answer.items], repr(text)
            report = await stats(client)
            # Same text, same prompt: the token counts of the two requests agree too.
            per_document = {d["uri"]: d for d in report["documents"]}
            assert per_document[uri]["prompt_tokens"] == per_document[fresh]["prompt_tokens"] > 0
