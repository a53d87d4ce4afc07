"""A notebook cell's neighbours as the text around it.

Editors that speak LSP 3.17's notebook sync (VS Code's Jupyter notebooks) send
a notebook as cells, each a text document of its own. A cell alone is a poor
prompt: its imports and the data it reads were defined in the cells above. As
Copilot does, the code cells above the cursor's cell are the code before it,
the cells below the code after it, and markdown cells are comments there. The
notebook's URI names the document for the engine (its KV cache) and for the
front's per-document state, so moving to another cell reuses the cells above
it instead of computing them again. pygls owns the notebook and its cells'
text; this module only reads them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from lsprotocol import types

CELL_SEPARATOR = "\n\n"


def surroundings(workspace: Any, uri: str, comment: str) -> tuple[str, str, str] | None:
    """(text before, text after, the notebook's URI) for the cell at ``uri`` from its notebook's other
    cells, or None when it is no cell of an open notebook. Code cells in the cell's language as they are,
    markdown cells as ``comment`` lines (left out without a comment marker), other cells left out."""
    notebook = workspace.get_notebook_document(cell_uri=uri)
    if notebook is None:
        return None
    cells = [unquote(cell.document) for cell in notebook.cells]
    if unquote(uri) not in cells:
        return None
    here = cells.index(unquote(uri))
    language = _language(workspace, cells[here])
    texts = [_as_code(workspace, cell, language, comment) for cell in notebook.cells]
    before = "".join(text + CELL_SEPARATOR for text in texts[:here] if text)
    after = "".join(CELL_SEPARATOR + text for text in texts[here + 1:] if text)
    return before, after, notebook.uri


def _language(workspace: Any, uri: str) -> str | None:
    doc = workspace.text_documents.get(uri)
    return doc.language_id if doc is not None else None


def _as_code(workspace: Any, cell: types.NotebookCell, language: str | None, comment: str) -> str:
    doc = workspace.text_documents.get(unquote(cell.document))
    if doc is None or not doc.source.strip():
        return ""
    text = doc.source.strip("\r\n")
    if cell.kind == types.NotebookCellKind.Markup:
        return "\n".join(f"{comment} {line}".rstrip() for line in text.splitlines()) if comment else ""
    return text if doc.language_id == language else ""
