"""A notebook cell's prompt has the cells around it (LSP 3.17 notebook sync, as VS Code sends Jupyter notebooks)."""

from __future__ import annotations

import asyncio

from lsprotocol import types
from pygls.workspace import Workspace

from phils.config import Settings
from phils.lsp.completion import CompletionService
from phils.lsp.notebooks import surroundings

from test_pipeline import ScriptedEngine

NOTEBOOK = "file:///work/analysis.ipynb"


def cell_uri(n: int) -> str:
    return f"vscode-notebook-cell:/work/analysis.ipynb#W{n}sZmlsZQ%3D%3D"


def notebook(*cells: tuple[str, str]) -> Workspace:
    """A workspace holding one notebook of (language, text) cells; markdown cells are markup."""
    workspace = Workspace(None)
    kinds = {"markdown": types.NotebookCellKind.Markup}
    workspace.put_notebook_document(types.DidOpenNotebookDocumentParams(
        notebook_document=types.NotebookDocument(
            uri=NOTEBOOK, notebook_type="jupyter-notebook", version=1,
            cells=[types.NotebookCell(kind=kinds.get(language, types.NotebookCellKind.Code), document=cell_uri(n))
                   for n, (language, _) in enumerate(cells)]),
        cell_text_documents=[types.TextDocumentItem(uri=cell_uri(n), language_id=language, version=1, text=text)
                             for n, (language, text) in enumerate(cells)]))
    return workspace


CELLS = (("markdown", "# Sales\nLoad the sales table."), ("python", "import pandas as pd\n\ndf = pd.read_csv('sales.csv')\n"),
         ("python", "df."), ("r", "summary(df)"), ("python", "df.plot()\n"))


def test_the_cells_above_are_the_code_before_and_markdown_is_comments():
    before, after, uri = surroundings(notebook(*CELLS), cell_uri(2), "#")
    assert uri == NOTEBOOK
    assert before == "# # Sales\n# Load the sales table.\n\nimport pandas as pd\n\ndf = pd.read_csv('sales.csv')\n\n"
    assert after == "\n\ndf.plot()"  # the R cell is another language's code: left out


def test_no_surroundings_for_a_document_that_is_no_cell():
    workspace = notebook(*CELLS)
    assert surroundings(workspace, "file:///work/other.py", "#") is None
    assert surroundings(Workspace(None), cell_uri(2), "#") is None


def test_a_request_in_a_cell_reads_the_cells_above_it():
    workspace = notebook(*CELLS)

    async def scenario():
        service = CompletionService(Settings())
        engine = ScriptedEngine("groupby('region').sum()")
        service.backend, service.state = engine, "ready"
        service.surroundings = lambda uri, comment: surroundings(workspace, uri, comment)
        suggestion = await service.complete(workspace.text_documents[cell_uri(2).replace("%3D", "=")], 0, 3)
        service.cancel_all()
        return suggestion, engine.jobs[0]

    suggestion, job = asyncio.run(scenario())
    assert "df = pd.read_csv('sales.csv')\n\ndf." in job.prompt
    assert job.document == NOTEBOOK  # one KV cache for the notebook: another cell reuses the cells above
    assert (suggestion.line, suggestion.character, suggestion.text) == (0, 3, "groupby('region').sum()")
