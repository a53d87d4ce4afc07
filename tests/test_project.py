"""Context from other modules of the workspace: imports read, definitions found and rendered, budget kept."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pygls.workspace import TextDocument

from phils.config import Settings
from phils.lsp import project
from phils.lsp.completion import build_prompt
from phils.lsp.documents import cursor_context

UTIL = '''
import os


def parse_row(line: str, sep: str = ",") -> list[str]:
    """Split one CSV line into its fields.

    Quotes are not handled.
    """
    return line.split(sep)


class Table:
    """Rows with named columns."""

    def __init__(self, columns: list[str]):
        self.columns = columns

    def add(self, row: list[str]) -> None:
        self.rows.append(row)

    def _private(self):
        pass


def one_liner(x): return x
'''

MAIN = '''from .util import parse_row, Table
from . import helpers as h
import os


def load(path):
    table = Table(["a", "b"])
    for line in open(path):
        h.clean(line)
'''


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from .util import parse_row as parse\n")
    (package / "util.py").write_text(UTIL)
    (package / "helpers.py").write_text('def clean(text: str) -> str:\n    """Strip it."""\n    return text.strip()\n')
    (package / "main.py").write_text(MAIN)
    return tmp_path


def test_imported_functions_and_classes_become_stubs_with_their_docstrings(workspace):
    index = project.ProjectIndex([workspace])
    stubs = index.stubs(workspace / "pkg" / "main.py", MAIN, 8)
    by_name = {stub.name: stub for stub in stubs}
    assert set(by_name) == {"parse_row", "Table", "h.clean"}
    assert by_name["parse_row"].path == "pkg/util.py"
    assert by_name["parse_row"].text == textwrap.dedent('''\
        def parse_row(line: str, sep: str = ",") -> list[str]:
            """Split one CSV line into its fields."""
            ...''')
    table = by_name["Table"].text
    assert "def __init__(self, columns: list[str]): ..." in table and "def add(self, row: list[str]) -> None: ..." in table
    assert "_private" not in table and "self.columns" not in table
    # The cursor's function uses Table and h.clean, not parse_row: they are chosen first...
    assert [stub.name for stub in stubs][-1] == "parse_row"
    # ... but written in import order, so the block does not change as the cursor moves.
    whole = project.block(stubs, lambda text: len(text.split()), 10_000)
    assert whole.index("def parse_row") < whole.index("class Table") < whole.index("def clean")
    elsewhere = project.ProjectIndex([workspace]).stubs(workspace / "pkg" / "main.py", MAIN + "\n\ndef g():\n    parse_row('')\n", 11)
    assert project.block(elsewhere, lambda text: len(text.split()), 10_000) == whole


def test_absolute_imports_re_exports_and_one_line_bodies_resolve(workspace):
    source = "from pkg import parse\nfrom pkg.util import one_liner\n\n\ndef f():\n    return parse('a')\n"
    stubs = project.ProjectIndex([workspace]).stubs(workspace / "app.py", source, 5)
    texts = {stub.name: stub.text for stub in stubs}
    assert texts["parse"].startswith("def parse_row(line: str")  # pkg/__init__ re-exports it
    assert texts["one_liner"] == "def one_liner(x):\n    ..."


def test_what_is_not_in_the_workspace_gives_nothing(workspace):
    source = "import os\nfrom collections import OrderedDict\nfrom .missing import thing\nfrom .util import nothing_here\n"
    assert project.ProjectIndex([workspace]).stubs(workspace / "pkg" / "main.py", source, 3) == []
    assert project.ProjectIndex([workspace]).stubs(None, MAIN, 3) == []


def test_half_typed_code_and_a_broken_module_do_not_break_it(workspace):
    (workspace / "pkg" / "broken.py").write_text("def oops(:\n")
    source = "from .util import parse_row\nfrom .broken import oops\nfrom .helpers import (\n    clean,\n)\n\ndef f(:\n    x = parse_row('\n"
    names = [stub.name for stub in project.ProjectIndex([workspace]).stubs(workspace / "pkg" / "main.py", source, 7)]
    assert names == ["parse_row", "clean"]


def test_the_editor_text_of_an_open_module_wins_over_the_disk(workspace):
    edited = 'def clean(text: str, keep_case: bool = False) -> str:\n    """Strip it, maybe lower it."""\n'
    index = project.ProjectIndex([workspace], lambda path: edited if path.name == "helpers.py" else None)
    stub = next(s for s in index.stubs(workspace / "pkg" / "main.py", MAIN, 8) if s.name == "h.clean")
    assert "keep_case: bool = False" in stub.text


def test_the_block_keeps_to_its_budget_and_groups_by_module(workspace):
    stubs = project.ProjectIndex([workspace]).stubs(workspace / "pkg" / "main.py", MAIN, 8)
    words = lambda text: len(text.split())  # noqa: E731
    whole = project.block(stubs, words, 10_000)
    assert whole.startswith(project.HEADER) and whole.count("# pkg/util.py") == 1
    small = project.block(stubs, words, words(whole) - 1)
    assert words(small) < words(whole) and small.startswith(project.HEADER)
    assert project.block(stubs, words, 3) == ""


class _Backend:
    context_tokens = 2048

    @staticmethod
    def count_tokens(text: str) -> int:
        return len(text) // 3


def test_the_prompt_starts_with_the_block_and_ends_with_the_code_before_the_cursor(workspace):
    path = workspace / "pkg" / "main.py"
    text = MAIN + "        table.add("
    lines = text.split("\n")
    ctx = cursor_context(TextDocument(path.as_uri(), text), len(lines) - 1, len(lines[-1]))
    index = project.ProjectIndex([workspace])
    on = Settings()
    on.completion.project_context = True  # off by default (it did not pay on any model measured)
    built = build_prompt(_Backend(), ctx, on, {}, index)
    assert built.text.startswith(project.HEADER) and built.text.endswith(ctx.prefix)
    assert "def parse_row(line: str" in built.text
    off = Settings()
    off.completion.project_context = False
    assert build_prompt(_Backend(), ctx, off, {}, index).text == ctx.prefix


async def test_the_server_reads_the_workspace_and_the_editor_text_of_open_modules(tiny_model, workspace):
    from conftest import inline, open_doc, phils_server

    log = workspace / "phils.log"
    main = workspace / "pkg" / "main.py"
    helpers = workspace / "pkg" / "helpers.py"
    async with phils_server("--model", str(tiny_model), "--set", "engine.backend=local",
                            "--set", "engine.max_new_tokens=4", "--set", "log.buffer_text=true",
                            "--set", "completion.project_context=true",
                            "--log-file", str(log), root=workspace) as client:
        # An unsaved edit in another open module is what the editor has: a function not on disk yet.
        open_doc(client, helpers.as_uri(), "def scrub(text: str) -> str:\n    ...\n")
        text = MAIN.replace("h.clean", "h.scrub") + "        "
        open_doc(client, main.as_uri(), text)
        lines = text.split("\n")
        await inline(client, main.as_uri(), len(lines) - 1, len(lines[-1]))
    logged = [line for line in log.read_text().splitlines() if "project context:" in line]
    assert logged and set(logged[-1].split("project context: ")[1].split(", ")) == {"Table", "h.scrub", "parse_row"}


def test_lines_are_counted_as_lsp_counts_them(workspace):
    # "\r" ends a line for LSP (and in the cursor's position) but not for str.split("\n").
    source = "from .util import parse_row\r\r\rdef f():\r    return parse_row('a')\r"
    stubs = project.ProjectIndex([workspace]).stubs(workspace / "pkg" / "main.py", source, 4)
    assert [stub.name for stub in stubs] == ["parse_row"]
    assert "parse_row" in project.names_near(source, 4) and project.names_near(source, 99) is not None


def test_a_block_that_cannot_hold_every_stub_keeps_its_choice_while_the_user_types(workspace):
    index = project.ProjectIndex([workspace])
    path = workspace / "pkg" / "main.py"
    words = lambda text: len(text.split())  # noqa: E731
    full = project.block(index.stubs(path, MAIN, 8), words, 10_000)
    budget = words(full) - 5  # room for all but one
    first = index.context(path, MAIN, 8, words, budget)
    assert first and "def parse_row" not in first  # the cursor's function uses Table and h.clean
    typed = MAIN + "        parse_row(line)\n"  # now it uses parse_row too: the block stays as it was
    assert index.context(path, typed, 9, words, budget) == first
    assert set(index.chosen(path)) == {"Table", "h.clean"}
