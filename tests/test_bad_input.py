"""Nonsense from a client gets an error response or an empty result, never a crash,
and never costs an edit: after each bad input the server still answers, and
still holds the document as the editor last sent it."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawlsp import RawServer

DOC = "file:///work/sample.py"
TEXT = "import os\n\ndef add(a, b):\n    return a + b\n"
METHODS = [
    "textDocument/inlineCompletion", "textDocument/completion", "textDocument/didOpen",
    "textDocument/didChange", "textDocument/didClose", "$/cancelRequest", "phils/stats",
    "workspace/didChangeConfiguration", "textDocument/hover", "no/such/method",
]


@pytest.fixture(scope="module")
def server(tiny_model):
    srv = RawServer("--model", str(tiny_model), "--set", "engine.ignore_stops=true", "--set", "completion.python_syntax=false",
                    "--set", "engine.max_new_tokens=4", "--set", "engine.threads=1")
    srv.initialize()
    srv.open(DOC, TEXT)
    yield srv
    assert srv.close() == 0


def still_serves(server: RawServer) -> None:
    """The server answers, and its copy of the document is the editor's (same suggestion as a fresh copy)."""
    assert server.alive()
    fresh = f"file:///work/fresh-{random.random()}.py"
    server.open(fresh, TEXT)
    a = server.inline(DOC, 3, len("    return a + b"))
    b = server.inline(fresh, 3, len("    return a + b"))
    assert "result" in a and a["result"]["items"] == b["result"]["items"]
    server.notify("textDocument/didClose", {"textDocument": {"uri": fresh}})


def test_malformed_frames_are_skipped(server):
    server.send_bytes(b"Content-Length: 9\r\n\r\n{not json")
    server.send_bytes(b'Content-Length: 2\r\n\r\n[]')
    server.send_bytes(b'Content-Length: 17\r\n\r\n{"jsonrpc":"2.0"}')
    server.send_bytes(b'Content-Length: 28\r\n\r\n{"jsonrpc":"2.0","id":[1,2]}')
    still_serves(server)


def test_unknown_methods_get_method_not_found(server):
    answer = server.request("no/such/method", {"x": 1})
    assert answer["error"]["code"] == -32601
    server.notify("no/such/notification", {"x": 1})  # notifications get no answer, and no crash
    still_serves(server)


@pytest.mark.parametrize("params", [
    None,
    "a string",
    {"textDocument": {"uri": DOC}},
    {"textDocument": {"uri": DOC}, "position": {"line": "three", "character": 0}},
    {"textDocument": {"uri": 42}, "position": {"line": 0, "character": 0}},
    {"textDocument": {"uri": DOC}, "position": {"line": -1, "character": -5}},
    {"textDocument": {"uri": DOC}, "position": {"line": 2**40, "character": 2**40}},
])
def test_wrong_parameters_get_an_error_or_nothing(server, params):
    answer = server.request("textDocument/inlineCompletion", params)
    assert "error" in answer or answer["result"] in (None, {"items": []})
    still_serves(server)


def test_unknown_documents_and_changes_to_unopened_ones(server):
    assert server.inline("file:///nowhere.py", 0, 0)["result"] == {"items": []}
    server.notify("textDocument/didChange", {
        "textDocument": {"uri": "file:///never-opened.py", "version": 2},
        "contentChanges": [{"range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 0}},
                            "text": "x"}]})
    server.notify("textDocument/didClose", {"textDocument": {"uri": "file:///never-opened.py"}})
    still_serves(server)


def test_out_of_range_edits_do_not_lose_the_document(server):
    # An edit past the end of the document is clamped by the editor's rules, not a crash.
    uri = "file:///work/clamp.py"
    server.open(uri, "x = 1\n")
    server.notify("textDocument/didChange", {
        "textDocument": {"uri": uri, "version": 2},
        "contentChanges": [{"range": {"start": {"line": 99, "character": 0}, "end": {"line": 99, "character": 5}},
                            "text": "y = 2\n"}]})
    assert "result" in server.inline(uri, 0, 0)
    still_serves(server)


def test_nul_binary_and_huge_documents(server):
    binary = bytes(random.Random(1).randrange(256) for _ in range(20_000)).decode("latin-1")
    server.open("file:///work/binary.py", binary)
    assert "result" in server.inline("file:///work/binary.py", 0, 3)
    server.open("file:///work/nul.py", "def f():\x00\n    ret\x00urn 1\n")
    assert "result" in server.inline("file:///work/nul.py", 1, 7)
    huge = "x = 1  # padding padding padding padding padding\n" * 200_000  # 10 MB
    server.open("file:///work/huge.py", huge)
    answer = server.inline("file:///work/huge.py", 200_000, 0, timeout=120)
    assert "result" in answer
    server.notify("textDocument/didClose", {"textDocument": {"uri": "file:///work/huge.py"}})
    still_serves(server)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
        ["textDocument", "uri", "position", "line", "character", "context", "triggerKind", "version",
         "contentChanges", "range", "start", "end", "text", "settings", "id", "x"]), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(METHODS), params=JSON, as_request=st.booleans())
def test_fuzzed_json_rpc_never_takes_the_server_down(server, method, params, as_request):
    if method == "textDocument/didClose" or method == "textDocument/didOpen":
        params = {"x": params}  # keep the test's own document open and unchanged
    if method == "textDocument/didChange" and isinstance(params, dict):
        params.pop("textDocument", None)
    if as_request:
        answer = server.request(method, params, timeout=10)
        assert ("result" in answer) != ("error" in answer), json.dumps(answer)[:300]
    else:
        server.notify(method, params)
    assert server.alive()


def test_after_the_fuzzing_the_document_is_intact(server):
    still_serves(server)
