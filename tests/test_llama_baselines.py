"""The llama-server baselines send what llama.vim sends and keep what the eval compares (a fake server)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from phils.tools.llama_baselines import complete

DOCUMENT = "def f(xs):\n    total = 0\n    \n    return total\n"
OFFSET = DOCUMENT.index("    \n    return") + 4  # the blank line, at its indentation


@pytest.fixture
def server():
    seen: list[tuple[str, dict]] = []
    replies = {"/completion": "    for x in xs:\n        total += x\n    return total", "/infill": "for x in xs: total += x\n\n"}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, body))
            data = json.dumps({"content": replies[self.path]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}", seen
    httpd.shutdown()


def test_raw_starts_at_the_line_break_and_keeps_the_holes_lines_without_the_models_indentation(server):
    url, seen = server
    one, _ = complete(url, "llama-raw", DOCUMENT, OFFSET, 1, 32)
    two, _ = complete(url, "llama-raw", DOCUMENT, OFFSET, 2, 32)
    assert one == "for x in xs:" and two == "for x in xs:\n        total += x"
    path, body = seen[0]
    assert path == "/completion" and body["prompt"] == "def f(xs):\n    total = 0\n"
    assert body["top_k"] == 1 and body["n_predict"] == 32


def test_mid_line_raw_continues_the_text_before_the_cursor(server):
    url, seen = server
    document = "x = compute(\n"
    complete(url, "llama-raw", document, len("x = comp"), 1, 8)
    assert seen[0][1]["prompt"] == "x = comp"


def test_infill_sends_prefix_line_and_suffix_as_llama_vim_does(server):
    url, seen = server
    text, seconds = complete(url, "llama-infill", DOCUMENT, OFFSET, 1, 32)
    assert text == "for x in xs: total += x" and seconds >= 0
    path, body = seen[0]
    assert path == "/infill"
    assert body["input_prefix"] + body["prompt"] + body["input_suffix"] == DOCUMENT
    assert body["prompt"] == "    " and body["n_indent"] == 4 and body["input_suffix"].startswith("\n    return")


def test_an_unknown_baseline_is_a_clear_error(server):
    with pytest.raises(ValueError, match="llama-infill"):
        complete(server[0], "other", DOCUMENT, OFFSET, 1, 8)


def test_a_continuation_sends_the_prompt_and_its_stop_strings(server):
    from phils.tools.llama_baselines import continuation

    url, seen = server
    text, _ = continuation(url, "def f():\n", 16, ["\ndef "])
    assert text.startswith("    for x in xs:")
    path, body = seen[0]
    assert path == "/completion" and body["prompt"] == "def f():\n" and body["stop"] == ["\ndef "]
