"""KV prefix reuse seen from the editor's side: warm-up, typed-through answers, the keystroke replay."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from lsprotocol import types

from conftest import inline, open_doc, phils_server, server_env, stats, wait_until

URI = "file:///work/example.py"
SOURCE = 'import os\n\n\ndef add(a, b):\n    """Return the sum of a and b."""\n    '


def type_text(client, version: int, line: int, character: int, text: str) -> None:
    here = types.Position(line=line, character=character)
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=version),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=here, end=here), text=text)],
        )
    )


async def test_a_pause_in_typing_prefills_the_prompt_so_the_request_computes_almost_nothing(tiny_model):
    async with phils_server("--model", str(tiny_model), "--set", "completion.warmup_ms=50",
                            "--set", "engine.ignore_stops=true", "--set", "completion.python_syntax=false", "--set", "engine.max_new_tokens=4") as client:
        open_doc(client, URI, SOURCE)
        type_text(client, 2, 5, 4, "return")
        warmed = await wait_until(client, lambda s: s["warmups"] >= 1 and not s["busy"])
        assert warmed["warmup_tokens"] > 10
        await inline(client, URI, 5, 10)
        after = await stats(client)
        assert after["requests"] == 1
        assert after["prefill_tokens"] <= 2  # the warm-up computed the rest
        assert after["reused_tokens"] == after["prompt_tokens"] - after["prefill_tokens"]


async def test_a_file_is_prefilled_when_opened_so_its_first_request_computes_only_the_cursors_line(tiny_model):
    body = "".join(f"    value_{n} = compute({n}, 'item {n}')\n" for n in range(40))
    source = f"def build():\n{body}    return value_0\n"
    async with phils_server("--model", str(tiny_model), "--set", "completion.warmup_ms=50",
                            "--set", "completion.python_syntax=false", "--set", "engine.max_new_tokens=4") as client:
        open_doc(client, URI, source)
        warmed = await wait_until(client, lambda s: s["warmups"] >= 1 and not s["busy"])
        assert warmed["warmup_tokens"] > 200  # the whole file, ahead of any request
        await inline(client, URI, 20, 4)  # mid-file, at a line's indentation
        after = await stats(client)
        assert after["requests"] == 1 and after["prompt_tokens"] > 100
        assert after["prefill_tokens"] <= 4  # the opening's pre-fill covered the text before the cursor


async def test_typing_the_start_of_a_suggestion_answers_the_rest_without_the_model(tiny_model):
    async with phils_server("--model", str(tiny_model), "--set", "completion.warmup_ms=0",
                            "--set", "engine.ignore_stops=true", "--set", "completion.python_syntax=false", "--set", "engine.max_new_tokens=8",
                            "--set", "completion.multiline=false") as client:
        open_doc(client, URI, SOURCE)
        first = (await inline(client, URI, 5, 4)).items[0].insert_text
        assert len(first) >= 2
        type_text(client, 2, 5, 4, first[0])
        rest = await inline(client, URI, 5, 5)
        assert rest.items[0].insert_text == first[1:]
        assert rest.items[0].range.start == types.Position(line=5, character=5)
        counters = await stats(client)
        assert counters["typed_through"] == 1 and counters["requests"] == 2
        assert counters["decode_tokens"] == 8  # only the first request ran the model
        # Typing something else goes back to the model.
        type_text(client, 3, 5, 5, "\u00a7")
        await inline(client, URI, 5, 6)
        assert (await stats(client))["decode_tokens"] == 16


async def test_after_accepting_a_suggestion_the_next_was_computed_while_it_was_shown(tiny_model):
    settings = ["--set", "completion.warmup_ms=0", "--set", "engine.ignore_stops=true", "--set", "completion.python_syntax=false",
                "--set", "engine.max_new_tokens=6", "--set", "completion.multiline=false"]
    async with phils_server("--model", str(tiny_model), *settings) as client:
        open_doc(client, URI, SOURCE)
        first = (await inline(client, URI, 5, 4)).items[0].insert_text
        await wait_until(client, lambda s: s["ahead_computed"] == 1 and not s["busy"])
        type_text(client, 2, 5, 4, first)  # accepted: the editor inserts it and asks again at its end
        second = (await inline(client, URI, 5, 4 + len(first))).items[0].insert_text
        counters = await stats(client)
        assert counters["ahead"] == 1 and counters["requests"] == 2 and second.strip()
    # The same request in a server that computes nothing ahead gets the same answer, from the model.
    async with phils_server("--model", str(tiny_model), *settings, "--set", "completion.ahead=false") as client:
        open_doc(client, URI, SOURCE)
        assert (await inline(client, URI, 5, 4)).items[0].insert_text == first
        type_text(client, 2, 5, 4, first)
        assert (await inline(client, URI, 5, 4 + len(first))).items[0].insert_text == second
        assert (await stats(client))["ahead"] == 0


async def test_closing_a_document_drops_its_cache(tiny_model):
    async with phils_server("--model", str(tiny_model), "--set", "engine.max_new_tokens=4") as client:
        open_doc(client, URI, SOURCE)
        await inline(client, URI, 5, 4)
        await wait_until(client, lambda s: s["cache"]["documents"] == 1 and not s["busy"])  # the ahead job too
        client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri=URI)))
        await wait_until(client, lambda s: s["cache"]["documents"] == 0)


def test_the_keystroke_replay_reuses_the_prompt_and_changes_no_suggestion(tiny_model, tmp_path):
    # A real file from an installed package, typed into the server.
    source = Path(importlib.util.find_spec("pygls.workspace.text_document").origin)
    done = subprocess.run(
        [sys.executable, "-m", "phils", "bench", "keystrokes", "--model", str(tiny_model), "--file", str(source),
         "--prompt-lines", "150", "--requests", "12", "--new-tokens", "8", "--modes", "cache-off,cache-on",
         "--set", "engine.context_tokens=768", "--out", str(tmp_path), "--name", "tiny"],
        capture_output=True, text=True, timeout=600, env=server_env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "keystrokes-tiny.json").read_text())
    off, on = report["modes"]["cache-off"], report["modes"]["cache-on"]
    assert off["requests"] == on["requests"] == 12
    assert report["suggestions_identical_across_modes"] is True
    assert off["reused_fraction"] == 0
    # The prompt was trimmed to the window (768 tokens) and still reused.
    assert 300 < on["prompt_tokens_mean"] <= 768
    assert on["reused_fraction"] >= 0.9  # a short replay in a small window: one move costs ~5%
    assert (tmp_path / "keystrokes-tiny.md").read_text().startswith("# Keystroke replay")


async def test_a_file_opened_while_the_model_loads_is_prefilled_once_it_is_ready(tiny_model):
    async with phils_server("--model", str(tiny_model), "--set", "completion.warmup_ms=50", wait=None) as client:
        open_doc(client, URI, SOURCE * 3)
        await client.status.wait_for("ready")
        warmed = await wait_until(client, lambda s: s["warmups"] >= 1 and not s["busy"])
        assert warmed["warmup_tokens"] > 30 and warmed["requests"] == 0


async def test_a_cursor_that_rests_while_the_model_loads_gets_its_suggestion_once_ready(tiny_model):
    """phils/didMoveCursor before the engine is ready is kept: once it is, the suggestion there is computed."""
    async with phils_server("--model", str(tiny_model), "--set", "completion.warmup_ms=50",
                            "--set", "engine.max_new_tokens=4", wait=None) as client:
        open_doc(client, URI, SOURCE * 3)
        client.protocol.notify("phils/didMoveCursor", {"textDocument": {"uri": URI},
                                                       "position": {"line": 3, "character": 0}})
        await client.status.wait_for("ready")
        computed = await wait_until(client, lambda s: s["ahead_computed"] >= 1 and not s["busy"])
        assert computed["requests"] == 0 and computed["warmups"] == 0
