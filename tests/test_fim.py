"""Fill-in-the-middle markers: found at load where the tokenizer has them, and a middle ends at their end tokens."""

from __future__ import annotations

import pytest
import torch

from phils.config import EngineSettings
from phils.engine import Engine, GenerationRequest, load_model
from phils.engine.loading.fim import find
from phils.engine.serving.service import EngineService

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def fim_model(tmp_path_factory):
    from phils.tools.testmodel import make_test_model

    return make_test_model(tmp_path_factory.mktemp("tiny-fim"), shape="tiny", fim=True)


def test_a_tokenizer_without_markers_has_no_fim(tiny_model):
    assert load_model(EngineSettings(model=str(tiny_model), threads=1)).fim is None


def test_markers_are_found_and_their_end_tokens_end_the_middle(fim_model):
    loaded = load_model(EngineSettings(model=str(fim_model), threads=1))
    markers = loaded.fim
    assert (markers.prefix, markers.suffix, markers.middle) == ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")
    vocabulary = loaded.tokenizer.get_vocab()
    assert {vocabulary["<|fim_pad|>"], vocabulary["<|endoftext|>"]} <= set(markers.stop_ids)
    engine = Engine(loaded, context_tokens=512, cache_bytes=2**26)
    assert set(markers.stop_ids) <= engine.eos_ids
    # Written as text, the markers are the model's own tokens, and a middle is decoded after them.
    prompt = "<|fim_prefix|>def f(x):\n<|fim_suffix|>\n    return y\n<|fim_middle|>    y = "
    assert engine.encode(prompt)[0] == vocabulary["<|fim_prefix|>"]
    result = engine.generate(GenerationRequest("doc", prompt, max_new_tokens=8))
    assert result.reason in ("length", "eos") and "<|fim" not in result.text


def test_the_engine_reports_the_markers_to_the_front(fim_model):
    service = EngineService(EngineSettings(model=str(fim_model), threads=1))
    try:
        service.load().result(timeout=120)
        assert service.model_info()["fim"] == {"prefix": "<|fim_prefix|>", "suffix": "<|fim_suffix|>",
                                              "middle": "<|fim_middle|>"}
    finally:
        service.close()


def test_a_tokenizer_that_cannot_be_read_has_no_fim():
    class Broken:
        def get_vocab(self):
            raise RuntimeError("no vocabulary")

    assert find(Broken()) is None


async def test_through_the_server_typing_on_a_line_under_a_fim_prompt_reuses_all_but_the_line(fim_model):
    """End to end: the server learns the markers from the engine; the second keystroke on the same line
    computes only that line's tokens again, the code below included in what is reused."""
    from lsprotocol import types

    from conftest import inline, open_doc, phils_server, stats

    uri = "file:///work/fim_example.py"
    source = "def add(a, b):\n    total = \n" + "".join(f"    check_{n}(total)\n" for n in range(20)) + "    return total\n"
    async with phils_server("--model", str(fim_model), "--set", "engine.max_new_tokens=4",
                            "--set", "completion.warmup_ms=0", "--set", "completion.python_syntax=false") as client:
        open_doc(client, uri, source)
        await inline(client, uri, 1, 12)
        first = await stats(client)
        here = types.Position(line=1, character=12)
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=here, end=here), text="a")]))
        await inline(client, uri, 1, 13)
        second = await stats(client)
        assert second["requests"] == 2 and first["prompt_tokens"] > 100  # the code below is in the prompt
        assert second["prefill_tokens"] - first["prefill_tokens"] <= 6


async def test_a_file_opened_is_prefilled_from_its_start_so_a_fim_request_anywhere_reuses_the_lines_above(fim_model):
    """The pre-fill on opening cannot know where the cursor will be: with FIM it is the prefix marker and the
    file's lines, the start every FIM prompt in the file shares."""
    from conftest import inline, open_doc, phils_server, stats, wait_until

    uri = "file:///work/fim_opened.py"
    body = "".join(f"    value_{n} = compute_{n}(value_{n - 1})\n" for n in range(1, 40))
    source = "def run(value_0):\n" + body + "    \n" + "".join(f"    check_{n}(value_39)\n" for n in range(10))
    cursor_line = source.count("\n", 0, source.index("    \n") + 1) - 1
    async with phils_server("--model", str(fim_model), "--set", "engine.max_new_tokens=4",
                            "--set", "completion.warmup_ms=50", "--set", "completion.python_syntax=false") as client:
        open_doc(client, uri, source)
        warmed = await wait_until(client, lambda s: s["warmups"] >= 1 and not s["busy"])
        await inline(client, uri, cursor_line, 4)
        first = await stats(client)
    assert first["requests"] == 1 and warmed["warmup_tokens"] > 300
    # Computed at the request: the code below, the markers and the cursor's line; the 40 lines above
    # (most of the prompt) were pre-filled. Pre-filling the prompt for the cursor at the file's end
    # (code format: nothing below it) shared nothing with this one.
    assert first["prefill_tokens"] < first["prompt_tokens"] / 3, (warmed, first)



async def test_where_the_cursor_rests_the_suggestion_is_computed_before_the_editor_asks(fim_model):
    """phils' editor clients send phils/didMoveCursor when the cursor stops: the suggestion there (its whole
    FIM prompt, the code below too) is computed while the user reads, and the first request there is answered
    with it. A later position supersedes an earlier one; params that cannot be read, a document never
    opened or a position past its end are ignored."""
    from conftest import inline, open_doc, phils_server, stats, wait_until

    uri = "file:///work/fim_cursor.py"
    body = "".join(f"    value_{n} = compute_{n}(value_{n - 1})\n" for n in range(1, 30))
    source = "def run(value_0):\n" + body + "    \n" + "".join(f"    check_{n}(value_29)\n" for n in range(20))
    cursor_line = source.count("\n", 0, source.index("    \n") + 1) - 1

    def cursor(client, line: int, character: int, target: str = uri) -> None:
        client.protocol.notify("phils/didMoveCursor", {"textDocument": {"uri": target},
                                                       "position": {"line": line, "character": character}})

    async with phils_server("--model", str(fim_model), "--set", "engine.max_new_tokens=4",
                            "--set", "completion.warmup_ms=50", "--set", "completion.python_syntax=false") as client:
        open_doc(client, uri, source)
        client.protocol.notify("phils/didMoveCursor", {"textDocument": {}, "position": {"line": "x"}})
        cursor(client, 2, 0, "file:///work/never_opened.py")
        cursor(client, 10 ** 6, 0)
        cursor(client, 5, 4)
        cursor(client, cursor_line, 4)
        computed = await wait_until(client, lambda s: s["ahead_computed"] >= 1 and not s["busy"])
        answer = await inline(client, uri, cursor_line, 4)
        first = await stats(client)
    assert computed["ahead_computed"] == 1  # one position computed: the one the cursor rested at
    assert first["requests"] == 1 and first["ahead"] == 1 and first["prefill_tokens"] == 0, first
    assert answer.items and answer.items[0].insert_text.strip()
