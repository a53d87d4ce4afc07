from __future__ import annotations

from pygls.workspace import TextDocument

from phils.lsp.documents import cursor_context
from phils.lsp.stats import Stats
from phils.lsp.typed_through import Shown, accepted, ahead_of, found_ahead, line_after, rest_of, worth_waiting


def ctx_at_end(before: str, after: str = "\n"):
    lines = before.split("\n")
    return cursor_context(TextDocument("file:///t.py", before + after), len(lines) - 1, len(lines[-1]))


SHOWN = Shown(prefix="def f():\n    ", suffix="\n", text="return a + b")


def test_typing_the_start_of_the_suggestion_leaves_the_rest():
    assert rest_of(SHOWN, ctx_at_end("def f():\n    ret")) == "urn a + b"


def test_anything_else_goes_back_to_the_model():
    assert rest_of(SHOWN, ctx_at_end("def f():\n    rex")) is None  # typed something different
    assert rest_of(SHOWN, ctx_at_end("def f():\n    ")) is None  # nothing typed: ask again
    assert rest_of(SHOWN, ctx_at_end("def f():\n    return a + b")) is None  # all of it typed
    assert rest_of(SHOWN, ctx_at_end("def f():\n    ret", "\nx = 1\n")) is None  # text after changed
    assert rest_of(SHOWN, ctx_at_end("def g():\n    ret")) is None  # text before changed
    assert rest_of(None, ctx_at_end("def f():\n    ret")) is None


def test_accepting_a_suggestion_moves_the_cursor_to_its_end():
    ctx = ctx_at_end("def f():\n    ", "\n\nx = 1\n")
    after = accepted(ctx, "total = 0\n    for v in values:\n        total += v")
    assert after.prefix == ctx.prefix + "total = 0\n    for v in values:\n        total += v"
    assert after.suffix == ctx.suffix and after.line == ctx.line + 2
    assert after.line_prefix == "        total += v" and after.character == len("        total += v")
    wide = accepted(ctx, "s = '\U0001F600'")  # UTF-16 counts an emoji twice
    assert wide.character == len("    s = ''") + 2 and wide.line == ctx.line


def test_the_suggestion_computed_ahead_answers_only_where_it_was_computed_for():
    ctx = ctx_at_end("def f():\n    return a + b")
    ahead = Shown(prefix=ctx.prefix, suffix=ctx.suffix, text="\n\n\ndef g():")
    assert ahead_of(ahead, ctx) == "\n\n\ndef g():"
    assert ahead_of(ahead, ctx_at_end("def f():\n    return a + c")) is None
    assert ahead_of(ahead, ctx_at_end("def f():\n    return a + b", "\nmore\n")) is None
    assert ahead_of(Shown(ctx.prefix, ctx.suffix, "  "), ctx) == ""  # nothing to suggest there, known already
    assert ahead_of(None, ctx) is None


def test_the_line_after_is_where_a_line_with_code_ends_indented_as_editors_do():
    after = line_after(ctx_at_end("def f():\n    y = 1", "\n    return y\n"))
    assert after is not None and after.prefix == "def f():\n    y = 1\n    " and (after.line, after.character) == (2, 4)
    assert after.suffix == "\n    return y\n"  # what the editor's Enter leaves after the cursor
    # After a line that opens a block: one level deeper, as deep as the block below where there is one.
    assert line_after(ctx_at_end("def f():\n    if y:", "\n      return y\n")).prefix.endswith("if y:\n      ")
    assert line_after(ctx_at_end("def f():\n    if y:", "\n    return y\n")).prefix.endswith("if y:\n        ")
    assert line_after(ctx_at_end("int f() {\n\tif (y) {", "\n}\n")).prefix.endswith("{\n\t\t")
    assert line_after(ctx_at_end("def f():\n    y = f(", ")\n")) is None  # text after the cursor on its line
    assert line_after(ctx_at_end("def f():\n    ")) is None  # a blank line: the suggestion is for this one


def test_the_next_line_computed_ahead_answers_after_the_editor_indents():
    below = "\n    return y\n"
    here = ctx_at_end("def f():\n    y = 1\n    ", below)
    computed = [Shown("def f():\n    y = 1", below, ""), Shown(here.prefix, below, "z = y + 1")]
    assert found_ahead(computed, here) == (computed[1], "z = y + 1")
    assert found_ahead(computed, ctx_at_end("def f():\n    y = 1\n    z", below)) == (computed[1], " = y + 1")
    assert found_ahead(computed, ctx_at_end("def f():\n    y = 1\n        ", below)) is None  # indented otherwise
    assert found_ahead(computed, ctx_at_end("def f():\n    y = 1\n", below)) is None  # an editor that does not indent
    assert found_ahead(computed, ctx_at_end("def f():\n    y = 1", below)) == (computed[0], "")
    # An editor that indents deeper still finds it where the model wrote that indentation too.
    deeper = [Shown(here.prefix, below, "    z = y + 1")]
    assert found_ahead(deeper, ctx_at_end("def f():\n    y = 1\n        ", below)) == (deeper[0], "z = y + 1")
    # Waiting for the next line's computation pays only where the editor has done nothing but indent.
    indented = ctx_at_end("def f():\n    y = 1\n        ", below)
    assert worth_waiting(here.prefix, below, indented) and worth_waiting(here.prefix, below, here)
    assert not worth_waiting(here.prefix, below, ctx_at_end("def f():\n    y = 1\n    z", below))
    assert not worth_waiting("def f():\n    y = 1", below, here)  # a line's end: Enter is not spaces


def test_stats_report_fractions_and_percentiles():
    class Result:
        prompt_tokens, reused_tokens, prefill_tokens, new_tokens = 100, 90, 10, 5
        decode_ms, decode_steps, first_token_ms, reason = 40.0, 4, 12.0, "length"

    stats = Stats()
    stats.record(Result(), suggested=True, total_ms=50.0)
    stats.record_typed_through()
    report = stats.as_dict()
    assert report["requests"] == 2 and report["typed_through"] == 1 and report["suggestions"] == 2
    assert report["reused_fraction"] == 0.9
    assert report["decode_ms_per_token"] == 10.0
    assert report["first_token_ms"]["p50"] == 12.0


def test_the_kv_cache_budget_counts_reclaimable_memory():
    from phils.engine.serving.service import MIN_KV_BUDGET, kv_budget
    from phils.machine import available_memory

    assert kv_budget(False, 0, "cpu") == 0
    assert kv_budget(True, 300, "cpu") == 300 * 2**20
    assert kv_budget(True, 0, "cpu") >= MIN_KV_BUDGET
    assert available_memory() > 0
