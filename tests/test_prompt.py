from __future__ import annotations

from pygls.workspace import TextDocument

from phils.lsp import prompt
from phils.lsp.documents import cursor_context


def words(text: str) -> int:
    """A stand-in tokenizer: one token per whitespace-separated word and per line break."""
    return len(text.split()) + text.count("\n")


def at_end(text: str):
    lines = text.split("\n")
    return cursor_context(TextDocument("file:///t.py", text), len(lines) - 1, len(lines[-1]))


def long_module(functions: int = 200) -> str:
    head = "import os\nimport sys\nfrom pathlib import Path\n\n\n"
    body = "".join(f"def f{i}(x):\n    return x + {i}\n\n\n" for i in range(functions))
    target = 'class Store:\n    """Keeps things."""\n\n    def put(self, key, value):\n        """Store value under key."""\n'
    filler = "".join(f"        v{i} = value * {i}\n" for i in range(60))
    return head + body + target + filler + "        "


def test_a_short_file_is_the_whole_prefix():
    ctx = at_end("import os\n\ndef f():\n    return 1")
    built = prompt.build(ctx, words, budget=1000)
    assert built.text == ctx.prefix and not built.trimmed


def test_indentation_typed_on_the_cursor_line_is_held_back():
    built = prompt.build(at_end("def f():\n    "), words, budget=1000)
    assert built.text == "def f():\n"
    assert built.held_back == "    "
    assert prompt.heal("    return 1", built.held_back) == "return 1"
    assert prompt.heal("  x", built.held_back) == "x"  # the model indented less than the user


def test_a_long_file_keeps_imports_and_the_enclosing_headers_within_budget():
    ctx = at_end(long_module())
    budget = 300
    built = prompt.build(ctx, words, budget)
    assert built.trimmed
    assert words(built.text) <= budget
    assert built.text.startswith("import os\nimport sys\nfrom pathlib import Path\n")
    assert "class Store:\n" in built.text
    assert '    def put(self, key, value):\n        """Store value under key."""\n' in built.text
    assert built.text.endswith("        v59 = value * 59\n")
    assert "def f0(x)" not in built.text


def test_the_prompt_start_stays_put_while_the_user_types():
    text, previous, start, moves = long_module(), None, None, 0
    for i in range(40):
        text += f"w{i} = {i}\n        "
        built = prompt.build(at_end(text), words, budget=300, keep_start=start)
        assert words(built.text) <= 300
        if previous is not None and not built.text.startswith(previous):
            moves += 1
        previous, start = built.text, built.tail_start
    # Forty new lines of 4 "tokens" move the start once: each move leaves a third of the budget free.
    assert moves <= 1


def test_without_a_previous_start_the_tail_leaves_room_to_grow():
    built = prompt.build(at_end(long_module()), words, budget=300)
    assert 150 < words(built.text) <= 300 * 0.75


def test_one_enormous_line_is_cut_to_its_end():
    ctx = at_end("x = " + "1 + " * 5000)
    built = prompt.build(ctx, words, budget=100)
    assert 0 < words(built.text) <= 100
    assert ctx.prefix.endswith(built.text)


def test_an_empty_body_after_a_docstring_forces_its_indentation():
    built = prompt.build(at_end('import os\n\n\ndef f(x):\n    """Double x."""\n'), words, budget=1000)
    assert built.forced == "    "
    assert built.text.endswith('"""Double x."""\n    ')
    # Not when the user is at module level after finished code.
    assert prompt.build(at_end("def f(x):\n    return x\n\n\n"), words, budget=1000).forced == ""


MARKERS = {"prefix": "<PRE>", "suffix": "<SUF>", "middle": "<MID>"}


def at_marker(text: str):
    before, after = text.split("█")
    lines = before.split("\n")
    return cursor_context(TextDocument("file:///t.py", before + after), len(lines) - 1, len(lines[-1]))


def test_fim_puts_the_code_below_between_the_markers_and_the_cursors_line_last():
    built = prompt.build_fim(at_marker("def f(x):\n    y = g(█)\n    return y\n"), words, 1000, MARKERS)
    assert built.text == "<PRE>def f(x):\n<SUF>)\n    return y\n<MID>    y = g("
    assert built.fim and not built.held_back and not built.forced


def test_fim_keeps_whole_lines_of_the_code_below_within_its_share_and_trims_the_middle_above():
    below = "".join(f"    z{i} = {i}\n" for i in range(400))
    ctx = at_marker(long_module().rstrip(" ") + "        █\n" + below)
    budget = 400
    built = prompt.build_fim(ctx, words, budget, MARKERS)
    after = built.text.split("<SUF>")[1].split("<MID>")[0]
    assert words(after) <= budget * prompt.FIM_SUFFIX_SHARE and after.endswith("\n") and after.startswith("\n    z0 = 0")
    assert words(built.text) <= budget and built.trimmed
    assert built.text.startswith("<PRE>import os\n") and "        v59 = value * 59\n<SUF>" in built.text


def test_fim_code_below_is_capped_in_tokens_too():
    below = "".join(f"    z{i} = {i}\n" for i in range(50))
    built = prompt.build_fim(at_marker("def f():\n    █\n" + below), words, 4000, MARKERS, suffix_tokens=20)
    after = built.text.split("<SUF>")[1].split("<MID>")[0]
    assert 0 < words(after) <= 20 and after.endswith("\n")


def test_the_opening_prefill_is_how_the_fim_prompt_at_any_line_begins():
    lines = [f"    step_{n}()\n" for n in range(12)]
    opening = prompt.fim_opening(at_marker("def f():\n" + "".join(lines) + "█"), words, 1000, MARKERS)
    for cursor in range(12):
        source = "def f():\n" + "".join(lines[:cursor]) + "    █" + "".join(lines[cursor + 1:])
        built = prompt.build_fim(at_marker(source), words, 1000, MARKERS)
        above = "<PRE>def f():\n" + "".join(lines[:cursor])
        assert built.text.startswith(above) and opening.text.startswith(above)
