"""The pipeline with a scripted engine: what the engine is asked, and what the editor is shown."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pygls.workspace import TextDocument

from phils.config import Settings
from phils.lsp.completion import run_pipeline
from phils.lsp.documents import cursor_context
from phils.protocol import EngineJob, GenerationResult
from phils.stoprule import stop_index

CURSOR = "█"


class ScriptedEngine:
    """Answers every job with ``text``, cut by the job's own stop rule, as a real engine would."""

    heals, warms, fits = True, True, True
    context_tokens = 2048

    def __init__(self, text: str):
        self.text = text
        self.jobs: list[EngineJob] = []

    @staticmethod
    def count_tokens(text: str) -> int:
        return len(text) // 3

    async def generate(self, job: EngineJob) -> GenerationResult:
        self.jobs.append(job)
        cut = stop_index(self.text, job.shape) if job.shape is not None else None
        return GenerationResult(text=self.text if cut is None else self.text[:cut], reason="stop")


def complete(marked: str, answer: str, markers: dict[str, str] | None = None,
             **settings) -> tuple[str | None, EngineJob]:
    """The suggestion at the cursor mark, and the job the engine got (``markers``: the engine's FIM markers)."""
    before, after = marked.split(CURSOR)
    lines = before.split("\n")
    ctx = cursor_context(TextDocument("file:///t.py", before + after), len(lines) - 1, len(lines[-1]))
    config = Settings()
    for key, value in settings.items():
        setattr(config.completion, key, value)
    engine = ScriptedEngine(answer)
    engine.fim = markers
    suggestion = asyncio.run(run_pipeline(engine, ctx, config))
    return (suggestion.text if suggestion else None), engine.jobs[0]


@pytest.mark.parametrize("fit", [True, False])
def test_after_code_on_an_indented_line_the_answer_continues_that_line(fit):
    # The model's text follows `header = `, not column 0: the block's indentation rule must not empty it.
    text, job = complete("def f(x):\n    header = █\n    return header\n", "pack(x)\n    return header\n",
                         fit_suffix=fit)
    assert job.shape.line_prefix == "    header = "
    assert text == "pack(x)"


def test_at_an_empty_lines_indentation_the_engine_heals_it_and_the_judged_code_follows():
    text, job = complete("def f(x):\n    y = 1\n    █\n    return y\n", "y += x\n    return y\n")
    assert job.prompt.endswith("    y = 1\n    ") and job.shape.line_prefix == "    "
    assert job.fit_suffix == "\n    return y\n" and job.shape.max_lines == 4
    assert text == "y += x"


def test_at_the_end_of_a_nested_function_the_shown_answer_runs_to_the_end_of_its_body():
    # HumanEval/39: the engine writes `return False` and then the function's `return True`; the
    # editor must be shown both, not the first branch only.
    marked = ("def prime_fib(n):\n    def is_prime(p):\n        for k in range(2, p):\n            if p % k == 0:\n"
              "                █\n    f = [0, 1]\n    return f\n")
    text, job = complete(marked, "return False\n        return True\n    f = [0, 1]\n")
    assert job.fit_suffix == "" and job.shape.min_indent == 5
    assert text == "return False\n        return True"


def test_a_just_opened_file_is_prefilled_as_far_as_one_prompt_reaches():
    from phils.lsp.completion import opening_position

    short = ["def f():\n", "    return 1\n"]
    assert opening_position(short, 2000) == (1, len("    return 1"))  # all of it
    long = [f"line {n:04d} " + "x" * 90 + "\n" for n in range(1000)]
    line, character = opening_position(long, 2000)
    chars = sum(len(text) for text in long[: line + 1])
    assert 0.6 * 2000 * 3 <= chars <= 2000 * 3 and character == len(long[line]) - 1  # within one prompt's reach
    assert opening_position([], 2000) == (0, 0)


MARKERS = {"prefix": "<PRE>", "suffix": "<SUF>", "middle": "<MID>"}


def complete_fim(marked: str, answer: str, **settings) -> tuple[str | None, EngineJob]:
    return complete(marked, answer, markers=MARKERS, **settings)


def test_a_model_with_fim_markers_reads_the_code_below_and_is_not_judged():
    text, job = complete_fim("def f(x):\n    y = 1\n    █\n    return y\n", "y += x\n    return y\n")
    assert job.prompt == "<PRE>def f(x):\n    y = 1\n<SUF>\n    return y\n<MID>    "
    assert job.fit_suffix == "" and job.shape.line_prefix == "    "
    assert text == "y += x"  # the line that resumes the code below is still cut


def test_typing_on_a_line_with_fim_changes_only_the_prompts_end():
    _, first = complete_fim("def f(x):\n    y = █\n    return y\n", "x + 1\n")
    _, second = complete_fim("def f(x):\n    y = x█\n    return y\n", " + 1\n")
    assert second.prompt.startswith(first.prompt) and second.prompt.endswith("<MID>    y = x")


def test_fim_off_keeps_the_code_format_prompt():
    _, job = complete_fim("def f(x):\n    y = 1\n    █\n    return y\n", "y += x\n", fim="off")
    assert "<PRE>" not in job.prompt and job.fit_suffix


def test_with_fim_lines_are_not_computed_ahead_but_the_rest_of_a_line_is():
    """Accepting lines changes the code above the next cursor, where a FIM prompt's code below begins:
    computing that ahead would cut the document's cache back to the cursor's line."""
    from phils.lsp.completion import CompletionService

    before = "def f(x):\n    y = "
    ctx = cursor_context(TextDocument("file:///t.py", before + "\n    return y\n"), 1, len("    y = "))

    async def ahead_started(text: str, markers) -> bool:
        service = CompletionService(Settings())
        engine = ScriptedEngine("1\n")
        engine.fim = markers
        service._compute_ahead(engine, ctx, text)
        started = bool(service._ahead_running)
        service.cancel_all()
        for _, _, task in list(service._ahead_running.values()):
            task.cancel()
        await asyncio.sleep(0)
        return started

    assert not asyncio.run(ahead_started("x + 1\n    z = y", MARKERS))
    assert asyncio.run(ahead_started("x + 1", MARKERS))
    assert asyncio.run(ahead_started("x + 1\n    z = y", None))  # code format: the prompt only grows


def test_with_fim_a_new_line_keeps_the_prompt_up_to_the_middle_so_the_code_below_is_not_computed_again():
    def ask(marked: str, starts: dict) -> EngineJob:
        before, after = marked.split(CURSOR)
        lines = before.split("\n")
        ctx = cursor_context(TextDocument("file:///t.py", before + after), len(lines) - 1, len(lines[-1]))
        engine = ScriptedEngine("1\n")
        engine.fim = MARKERS
        asyncio.run(run_pipeline(engine, ctx, Settings(), tail_starts=starts))
        return engine.jobs[0]

    starts: dict = {}
    below = "\n    return y\n"
    first = ask("def f(x):\n    y = x█" + below, starts)
    second = ask("def f(x):\n    y = x\n    █" + below, starts)  # Enter: the code after the cursor unchanged
    assert second.prompt.startswith(first.prompt) and second.prompt.endswith("<MID>    y = x\n    ")
    # Far from where the middle started, it starts at the cursor's line again.
    many = "".join(f"    y{n} = {n}\n" for n in range(12))
    third = ask("def f(x):\n    y = x\n" + many + "    █" + below, starts)
    assert third.prompt.endswith("<MID>    ") and "y11 = 11\n<SUF>" in third.prompt


def test_with_nothing_below_the_cursor_a_fim_model_gets_the_code_format_prompt():
    _, job = complete_fim('def f(x):\n    """Double x."""\n    █', "return 2 * x\n")
    assert "<PRE>" not in job.prompt and job.prompt.endswith('def f(x):\n    """Double x."""\n    ')


class LineByLineEngine(ScriptedEngine):
    """Nothing more on a line that has code; on a new (indented) line, the next statement."""

    fim = None

    async def generate(self, job: EngineJob) -> GenerationResult:
        self.text = "z = y + 1\n" if not job.prompt.rsplit("\n", 1)[-1].strip() else "\n"
        return await super().generate(job)


def test_where_nothing_follows_on_the_line_the_next_line_is_computed_ahead_for_enter():
    from phils.lsp.completion import CompletionService

    async def scenario() -> tuple[Any, int, int]:
        service = CompletionService(Settings())
        engine = LineByLineEngine("")
        service.backend, service.state = engine, "ready"
        shown_at = cursor_context(TextDocument("file:///t.py", "def f(x):\n    y = \n    return y\n"), 1, 8)
        service._compute_ahead(engine, shown_at, "x")  # `x` shown after `y = `: the line ends with it
        for _ in range(1000):
            await asyncio.sleep(0)
            if len(engine.jobs) == 2 and not service._ahead_running:
                break
        computed = len(engine.jobs)
        # The user types `x`, presses Enter, the editor indents: answered from the work done ahead.
        typed = TextDocument("file:///t.py", "def f(x):\n    y = x\n    \n    return y\n")
        suggestion = await service.complete(typed, 2, 4)
        service.cancel_all()
        return suggestion, computed, len(engine.jobs)

    suggestion, computed, after = asyncio.run(scenario())
    assert computed == 2  # the end of `y = x` (nothing to add), then the line after it
    assert suggestion is not None and suggestion.reason == "ahead" and suggestion.text == "z = y + 1"
    assert after == computed  # the request itself asked the model nothing


def test_with_an_item_selected_in_the_completion_widget_the_suggestion_follows_that_item():
    """VS Code shows an inline suggestion while its completion widget is open only if it extends the
    selected item: the prompt is the document with that item accepted."""
    from phils.lsp.completion import CompletionService

    async def scenario() -> tuple[Any, ScriptedEngine]:
        service = CompletionService(Settings())
        engine = ScriptedEngine(".join(root, name)\n")
        service.backend, service.state = engine, "ready"
        typed = TextDocument("file:///t.py", "import os\n\n\ndef f(root, name):\n    return os.pa\n")
        suggestion = await service.complete(typed, 4, 16, (14, 16, "path"))
        service.cancel_all()
        return suggestion, engine

    suggestion, engine = asyncio.run(scenario())
    assert engine.jobs[0].prompt.endswith("    return os.path")
    assert suggestion.text == ".join(root, name)"
    assert (suggestion.line, suggestion.character) == (4, 18)  # after the item, where the text goes


def test_in_a_crlf_file_the_prompt_reads_newlines_and_the_suggestion_is_sent_with_crlf():
    """Windows files: the model reads the "\n" it was trained on; the editor gets the file's own line breaks
    (an editor that inserts text as it comes would otherwise mix line endings in the file)."""
    from phils.lsp.completion import CompletionService

    async def scenario() -> tuple[Any, ScriptedEngine]:
        service = CompletionService(Settings())
        engine = ScriptedEngine("for name in names:\n        print(name)\n")
        service.backend, service.state = engine, "ready"
        text = "def show(names):\r\n    \r\n    return None\r\n"
        suggestion = await service.complete(TextDocument("file:///t.py", text), 1, 4)
        service.cancel_all()
        return suggestion, engine

    suggestion, engine = asyncio.run(scenario())
    assert "\r" not in engine.jobs[0].prompt and "\r" not in engine.jobs[0].fit_suffix
    assert suggestion.text == "for name in names:\n        print(name)"
    from lsprotocol import types
    from phils.lsp.server import _inline_items

    here = types.Range(start=types.Position(line=1, character=4), end=types.Position(line=1, character=4))
    assert _inline_items(suggestion, "", here)[0].insert_text == "for name in names:\r\n        print(name)"


def test_a_file_just_begun_has_its_name_first_in_the_prompt():
    """A line or two says little of a file's language (Qwen2.5-Coder wrote Java's `com.example.demo;`
    after `package ` in main.go); its name, as a comment, says it. A longer file is its own evidence."""
    from phils.lsp.completion import build_prompt

    def prompt_of(uri: str, text: str, language: str) -> str:
        lines = text.split("\n")
        doc = TextDocument(uri, text, language_id=language)
        ctx = cursor_context(doc, len(lines) - 1, len(lines[-1]))
        return build_prompt(ScriptedEngine(""), ctx, Settings(), {}).text

    assert prompt_of("file:///src/main.go", "package ", "go") == "// main.go\npackage "
    assert prompt_of("file:///src/app.py", "import ", "python") == "# app.py\nimport "
    assert prompt_of("file:///notes/todo.md", "- [ ] ", "markdown") == "- [ ] "  # (no comment to write it in)
    long = "import os\n\n\ndef walk(root):\n    \"\"\"Every file under root, as paths relative to it.\"\"\"\n    "
    assert prompt_of("file:///src/app.py", long, "python").startswith("import os\n")
