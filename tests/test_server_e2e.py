"""End to end: ``phils serve`` as a subprocess over stdio, driven by an LSP client."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
from lsprotocol import types

from conftest import cancel_request, inline, open_doc, phils_server, server_env, start_inline, stats, wait_until

URI = "file:///work/example.py"
SOURCE = 'import os\n\n\ndef add(a, b):\n    """Return the sum of a and b."""\n    return a + b\n\n\ndef mul(a, b):\n    '


async def test_capabilities_and_inline_completion_at_the_cursor(tiny_model):
    async with phils_server("--model", str(tiny_model), "--set", "engine.ignore_stops=true", "--set", "completion.python_syntax=false",
                            "--set", "engine.max_new_tokens=6") as client:
        caps = client.init_result.capabilities
        assert caps.inline_completion_provider is not None
        assert caps.completion_provider is not None
        sync = caps.text_document_sync
        assert sync.change == types.TextDocumentSyncKind.Incremental
        assert [s["state"] for s in client.status.states][-1] == "ready"

        open_doc(client, URI, SOURCE)
        result = await inline(client, URI, 9, 4)
        assert isinstance(result, types.InlineCompletionList)
        assert len(result.items) == 1
        item = result.items[0]
        assert item.range.start == types.Position(line=9, character=4)
        assert item.range.end == types.Position(line=9, character=4)
        assert item.insert_text.strip()


async def test_with_the_completion_widget_open_the_suggestion_extends_its_selected_item(tiny_model):
    async with phils_server("--model", str(tiny_model), "--set", "engine.ignore_stops=true", "--set", "completion.python_syntax=false",
                            "--set", "engine.max_new_tokens=6") as client:
        open_doc(client, URI, SOURCE + "return a")
        selected = types.Range(start=types.Position(line=9, character=11), end=types.Position(line=9, character=12))

        async def ask(item_range: types.Range) -> types.InlineCompletionList:
            context = types.InlineCompletionContext(
                trigger_kind=types.InlineCompletionTriggerKind.Automatic,
                selected_completion_info=types.SelectedCompletionInfo(range=item_range, text="abs"))
            return await client.text_document_inline_completion_async(types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=URI), position=types.Position(line=9, character=12),
                context=context))

        result = await ask(selected)
        # The editor shows it only over the item's range and beginning with the item's text.
        assert len(result.items) == 1
        assert result.items[0].range == selected
        assert result.items[0].insert_text.startswith("abs") and len(result.items[0].insert_text) > 3
        # An item on another line than the cursor's cannot be extended there: nothing, and the server goes on.
        elsewhere = types.Range(start=types.Position(line=8, character=0), end=types.Position(line=8, character=1))
        assert not (await ask(elsewhere)).items
        assert len((await inline(client, URI, 9, 12)).items) == 1


async def test_a_notebook_cell_is_completed_with_the_cells_above_it_in_its_prompt(tiny_model):
    """VS Code sends Jupyter notebooks as cells (LSP 3.17 notebook sync), when the server asks for them."""
    async with phils_server("--model", str(tiny_model), "--set", "engine.ignore_stops=true", "--set", "completion.python_syntax=false",
                            "--set", "engine.max_new_tokens=6", "--set", "completion.warmup_ms=0") as client:
        assert client.init_result.capabilities.notebook_document_sync is not None
        cells = ["import os\nimport sys\n\n\ndef add(a, b):\n    return a + b\n", "total = add(", "x = "]
        uris = [f"vscode-notebook-cell:/work/nb.ipynb#W{n}sZmlsZQ%3D%3D" for n in range(3)]
        client.notebook_document_did_open(types.DidOpenNotebookDocumentParams(
            notebook_document=types.NotebookDocument(uri="file:///work/nb.ipynb", notebook_type="jupyter-notebook", version=1,
                cells=[types.NotebookCell(kind=types.NotebookCellKind.Code, document=uri) for uri in uris]),
            cell_text_documents=[types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)
                                 for uri, text in zip(uris, cells)]))
        result = await inline(client, uris[1], 0, len(cells[1]))
        assert len(result.items) == 1 and result.items[0].range.start == types.Position(line=0, character=len(cells[1]))
        alone = len(cells[1])  # the cell's own text has at most this many tokens; with the cell above, more
        before = await stats(client)
        assert before["prompt_tokens"] > alone + 10
        # Another cell: the cells above it that the last prompt had are not computed again (one cache per notebook).
        assert len((await inline(client, uris[2], 0, 4)).items) == 1
        after = await stats(client)
        assert after["reused_tokens"] - before["reused_tokens"] > 10
        # Typing in the cell: the next request sees the edit (pygls applies the cell's change).
        client.notebook_document_did_change(types.DidChangeNotebookDocumentParams(
            notebook_document=types.VersionedNotebookDocumentIdentifier(version=2, uri="file:///work/nb.ipynb"),
            change=types.NotebookDocumentChangeEvent(cells=types.NotebookDocumentCellChanges(text_content=[
                types.NotebookDocumentCellContentChanges(
                    document=types.VersionedTextDocumentIdentifier(uri=uris[1], version=2),
                    changes=[types.TextDocumentContentChangePartial(
                        range=types.Range(start=types.Position(line=0, character=12), end=types.Position(line=0, character=12)),
                        text="1, ")])]))))
        result = await inline(client, uris[1], 0, 15)
        assert len(result.items) == 1 and result.items[0].range.start.character == 15
        client.notebook_document_did_close(types.DidCloseNotebookDocumentParams(
            notebook_document=types.NotebookDocumentIdentifier(uri="file:///work/nb.ipynb"),
            cell_text_documents=[types.TextDocumentIdentifier(uri=uri) for uri in uris]))
        assert not (await inline(client, uris[1], 0, 15)).items  # closed: no longer completed


async def test_an_explicit_request_gets_alternatives_to_cycle_through(tiny_model):
    """VS Code's Alt+\\ and "next suggestion" ask with the Invoked trigger: the suggestion, then others."""
    async with phils_server("--model", str(tiny_model), "--set", "completion.python_syntax=false",
                            "--set", "engine.max_new_tokens=8", "--set", "completion.multiline=false") as client:
        open_doc(client, URI, SOURCE)
        automatic = await inline(client, URI, 9, 4)
        invoked = await client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=URI), position=types.Position(line=9, character=4),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
        assert len(automatic.items) == 1
        texts = [item.insert_text for item in invoked.items]
        assert texts[0] == automatic.items[0].insert_text  # the best first, as the automatic request shows it
        assert 2 <= len(texts) <= 3 and len(set(texts)) == len(texts) and all(t.strip() for t in texts)
        assert all(item.range == automatic.items[0].range for item in invoked.items)
        assert (await stats(client))["alternatives"] >= len(texts) - 1  # counted in phils/stats


async def test_a_client_that_shows_inline_completions_gets_no_completion_item_to_race_them(tiny_model):
    """VS Code asks for completion items at every identifier keystroke, beside the inline request: answered
    from the model, the later of the two would supersede the other and the ghost text would show nothing."""
    async with phils_server("--model", str(tiny_model), "--set", "engine.ignore_stops=true",
                            "--set", "completion.python_syntax=false", "--set", "engine.max_new_tokens=12",
                            inline=True) as client:
        open_doc(client, URI, SOURCE)
        ghost = asyncio.ensure_future(inline(client, URI, 9, 4))
        await asyncio.sleep(0.005)
        listed = await client.text_document_completion_async(types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=URI), position=types.Position(line=9, character=4)))
        assert not listed.items and listed.is_incomplete is False
        assert len((await ghost).items) == 1


async def test_completion_fallback_gives_the_same_suggestion_as_a_text_edit(tiny_model):
    async with phils_server("--model", str(tiny_model), "--set", "engine.ignore_stops=true", "--set", "completion.python_syntax=false",
                            "--set", "engine.max_new_tokens=6", "--set", "completion.multiline=false") as client:
        open_doc(client, URI, SOURCE)
        ghost = await inline(client, URI, 9, 4)
        listed = await client.text_document_completion_async(
            types.CompletionParams(text_document=types.TextDocumentIdentifier(uri=URI),
                                   position=types.Position(line=9, character=4))
        )
        assert listed.is_incomplete is True
        assert len(listed.items) == 1
        edit = listed.items[0].text_edit
        assert edit.new_text == ghost.items[0].insert_text
        assert edit.range.start == types.Position(line=9, character=4)
        # Mid-name, the item covers what was typed of the name, as editors match labels against it
        # (Helix, Sublime Text, Emacs would hide `urn a * b` after `ret`; `return a * b` matches).
        open_doc(client, URI, SOURCE + "re😀t", version=2)
        ghost = await inline(client, URI, 9, 9)
        listed = await client.text_document_completion_async(types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=URI), position=types.Position(line=9, character=9)))
        (item,) = listed.items
        assert item.text_edit.range.start == types.Position(line=9, character=8)  # `t`: the word after the emoji
        assert item.text_edit.range.end == types.Position(line=9, character=9)
        assert item.text_edit.new_text == "t" + ghost.items[0].insert_text
        assert item.label.startswith("t") and item.filter_text.startswith("t")


async def test_progress_and_status_while_the_model_loads(tiny_model):
    # A model configuration no shared engine has loaded yet: this window's engine loads it.
    async with phils_server("--model", str(tiny_model), "--set", "engine.kv_cache_mb=33") as client:
        states = [s["state"] for s in client.status.states]
        assert states[0] == "loading" and states[-1] == "ready"
        # Status bars get the load's progress in phils/status too, rising to the end.
        percents = [s["percent"] for s in client.status.states if s["percent"] is not None]
        assert percents and percents == sorted(percents) and percents[-1] >= 90
        await asyncio.sleep(0.2)  # the progress end follows the ready status
        reports = [r for values in client.progress_reports.values() for r in values]
        kinds = [r.kind for r in reports]
        assert kinds[0] == "begin" and kinds[-1] == "end"


async def test_edits_are_applied_incrementally_before_completing(tiny_model):
    async with phils_server("--model", str(tiny_model), "--set", "engine.ignore_stops=true", "--set", "completion.python_syntax=false",
                            "--set", "engine.max_new_tokens=4", "--log-level", "debug") as client:
        open_doc(client, URI, "x = 1\n")
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=2),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=types.Range(start=types.Position(line=1, character=0),
                                          end=types.Position(line=1, character=0)),
                        text="def f():\n    ",
                    )
                ],
            )
        )
        # Position (2, 4) exists only if the edit was applied.
        result = await inline(client, URI, 2, 4)
        assert len(result.items) == 1
        assert result.items[0].range.start == types.Position(line=2, character=4)


async def test_bad_positions_and_unknown_documents_get_empty_results(tiny_model):
    async with phils_server("--model", str(tiny_model)) as client:
        open_doc(client, URI, "x = 1\ny = 2\n")
        for line, character in [(99, 0), (0, 99), (5, 5)]:
            result = await inline(client, URI, line, character)
            assert list(result.items) == []
        result = await inline(client, "file:///never/opened.py", 0, 0)
        assert list(result.items) == []
        # The server is still fine.
        assert (await stats(client))["state"] == "ready"


async def test_a_request_before_the_model_is_ready_is_answered_empty_at_once(tiny_model):
    # The model's load is held back by a huge import... simulated by a slow profile:
    async with phils_server("--model", str(tiny_model), wait=None) as client:
        open_doc(client, URI, SOURCE)
        started = time.monotonic()
        result = await inline(client, URI, 9, 4)
        elapsed = time.monotonic() - started
        if client.status.states and client.status.states[-1]["state"] == "ready":
            pytest.skip("the model loaded before the request was sent; nothing to check")
        assert list(result.items) == []
        assert elapsed < 2.0
        await client.status.wait_for("ready")


async def test_a_bad_setting_warns_with_its_name_and_keeps_the_default(tiny_model):
    async with phils_server("--model", str(tiny_model),
                            init_options={"engine": {"max_new_tokens": "lots"}, "completion": {"bogus": 1}}) as client:
        warnings = [m.message for m in client.messages if m.type == types.MessageType.Warning]
        assert any("engine.max_new_tokens" in w for w in warnings), warnings
        assert any("completion.bogus" in w for w in warnings), warnings
        open_doc(client, URI, SOURCE)
        result = await inline(client, URI, 9, 4)  # the server works with the default
        assert isinstance(result, types.InlineCompletionList)


async def test_a_missing_model_reports_an_error_and_the_server_lives_on(tmp_path):
    missing = tmp_path / "no-such-model"
    async with phils_server("--model", str(missing), wait="error") as client:
        error = client.status.states[-1]
        assert error["state"] == "error" and "not found" in error["message"]
        await asyncio.sleep(0.2)
        shown = [m for m in client.messages if m.type == types.MessageType.Error]
        assert shown and str(missing) in shown[0].message
        open_doc(client, URI, SOURCE)
        assert list((await inline(client, URI, 9, 4)).items) == []
        assert (await stats(client))["state"] == "error"


async def test_changing_the_model_setting_reloads_it(tiny_model, tmp_path):
    async with phils_server("--model", str(tmp_path / "missing"), wait="error") as client:
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"phils": {"engine": {"model": str(tiny_model)}}})
        )
        await client.status.wait_for("ready")
        open_doc(client, URI, SOURCE)
        assert (await stats(client))["state"] == "ready"
        assert len((await inline(client, URI, 9, 4)).items) <= 1


async def test_cancel_request_stops_the_decode_loop(tiny_model):
    # ignore_stops makes the model decode until max_new_tokens: a long generation.
    async with phils_server("--model", str(tiny_model), "--set", "engine.ignore_stops=true", "--set", "completion.python_syntax=false",
                            "--set", "engine.max_new_tokens=1900") as client:
        open_doc(client, URI, SOURCE)
        msg_id, answer = start_inline(client, URI, 9, 4)
        await asyncio.sleep(0.5)
        before = await stats(client)
        assert before["busy"], "the generation ended before it could be cancelled"
        cancel_request(client, msg_id)
        with pytest.raises(Exception, match="cancel"):
            await asyncio.wait_for(answer, 3.0)
        # The worker stops decoding soon after $/cancelRequest.
        after = await wait_until(client, lambda s: not s["busy"], timeout=3.0)
        assert after["cancelled"] == 1
        assert after["decode_tokens"] < 1900
        # The next request is served.
        client2_task = inline(client, URI, 9, 4)
        result = await asyncio.wait_for(client2_task, 120)
        assert len(result.items) == 1


async def test_a_newer_request_for_the_same_document_supersedes_the_older(tiny_model):
    async with phils_server("--model", str(tiny_model), "--set", "engine.ignore_stops=true", "--set", "completion.python_syntax=false",
                            "--set", "engine.max_new_tokens=1900") as client:
        open_doc(client, URI, SOURCE)
        _, first = start_inline(client, URI, 9, 4)
        await asyncio.sleep(0.5)
        second_id, second = start_inline(client, URI, 9, 4)
        assert list((await asyncio.wait_for(first, 3.0)).items) == []  # superseded: answered empty
        cancel_request(client, second_id)
        assert (await wait_until(client, lambda s: not s["busy"], timeout=3.0))["cancelled"] == 2


async def test_shutdown_and_exit_end_the_process_with_code_0(tiny_model):
    from pytest_lsp import client_capabilities
    from pytest_lsp.client import make_test_lsp_client

    client = make_test_lsp_client()
    await client.start_io(sys.executable, "-m", "phils", "serve", "--model", str(tiny_model), env=server_env())
    await client.initialize_session(types.InitializeParams(capabilities=client_capabilities("neovim")))
    process = client._server
    await client.shutdown_session()
    assert await asyncio.wait_for(process.wait(), 15) == 0
    await client.stop()


async def test_a_budget_cut_is_counted_and_the_answer_is_still_shown(tiny_model):
    """A 1 ms budget mid-code: judging is cut, the greedy answer is shown, and phils/stats says so."""
    source = "def add(a, b):\n    total = a + b\n    \n    return total\n"
    async with phils_server("--model", str(tiny_model), "--set", "completion.timeout_ms=1",
                            "--set", "completion.python_syntax=false", "--set", "engine.max_new_tokens=6",
                            "--set", "completion.warmup_ms=0") as client:
        open_doc(client, "file:///work/budget.py", source)
        answer = await inline(client, "file:///work/budget.py", 2, 4)
        counters = await stats(client)
        assert answer.items and answer.items[0].insert_text
        assert counters["budget_ms"] == 1 and counters["budget_cuts"] == {"judging": 1}
