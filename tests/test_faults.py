"""Faults: a model that cannot load, an exception inside generation, running
out of memory in a prefill, the client going away. Each ends in an error the
editor can show, and a server that still serves."""

from __future__ import annotations

import json
import resource
import shutil
import sys

import pytest

from rawlsp import RawServer


def broken_tokenizer_model(tiny_model, tmp_path):
    """A model whose tokenizer knows a word the model's embedding has no row for
    (a mismatched tokenizer): generating from text with that word raises."""
    model = tmp_path / "mismatched"
    shutil.copytree(tiny_model, model)
    path = model / "tokenizer.json"
    tokenizer = json.loads(path.read_text())
    tokenizer["added_tokens"].append({"id": 50_000, "content": "KABOOM", "single_word": False, "lstrip": False,
                                      "rstrip": False, "normalized": False, "special": False})
    path.write_text(json.dumps(tokenizer))
    return model


def statuses(server: RawServer) -> list[str]:
    return [n["params"]["state"] for n in server.notifications if n["method"] == "phils/status"]


def test_an_exception_in_generation_is_an_error_status_and_the_next_request_works(tiny_model, tmp_path):
    server = RawServer("--model", str(broken_tokenizer_model(tiny_model, tmp_path)),
                       "--set", "engine.ignore_stops=true", "--set", "completion.python_syntax=false", "--set", "engine.max_new_tokens=4",
                       "--set", "completion.warmup_ms=0")
    try:
        server.initialize()
        server.open("file:///bad.py", "x = KABOOM")
        assert server.inline("file:///bad.py", 0, 10)["result"] == {"items": []}
        error = server.wait_status("error", timeout=10)
        assert "failed: IndexError" in error["message"]
        server.open("file:///good.py", "def add(a, b):\n    return")
        assert server.inline("file:///good.py", 1, 10)["result"]["items"]
        assert statuses(server)[-1] == "ready"  # the editor's error clears
    finally:
        assert server.close() == 0


def test_a_corrupt_model_is_an_error_and_a_good_one_can_follow(tiny_model, tmp_path):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_model, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 1000)
    server = RawServer("--model", str(corrupt))
    try:
        server.initialize()
        error = server.wait_status("error")
        assert "corrupt" in error["message"] or "cannot load" in error["message"], error
        server.open("file:///a.py", "x = 1\n")
        assert server.inline("file:///a.py", 1, 0)["result"] == {"items": []}
        server.notify("workspace/didChangeConfiguration", {"settings": {"engine": {"model": str(tiny_model)}}})
        server.notifications.clear()
        server.wait_status("ready")
        assert "result" in server.inline("file:///a.py", 1, 0)
    finally:
        assert server.close() == 0


def test_running_out_of_memory_in_a_prefill_is_survived(tmp_path):
    """The server's address space is capped after loading; a long prompt's KV cache
    (8 KB a token on the small shape) then cannot grow, and a short one afterwards works."""
    from phils.tools.testmodel import make_test_model

    long_window = make_test_model(tmp_path / "long-window", shape="small")
    config = json.loads((long_window / "config.json").read_text())
    config["max_position_embeddings"] = 131072  # rotary positions: the weights do not change
    (long_window / "config.json").write_text(json.dumps(config))
    server = RawServer("--model", str(long_window), "--set", "engine.context_tokens=131072",
                       "--set", "engine.max_new_tokens=4", "--set", "completion.warmup_ms=0",
                       "--set", "engine.threads=1")
    try:
        server.initialize()
        long_text = "".join(f"value_{i} = compute({i}, 'text {i}')\n" for i in range(12_000))
        server.open("file:///long.py", long_text)
        stats = server.request("phils/stats", {})["result"]  # the document is in: only the prefill is left
        pid = stats["engine"]["pid"]  # the shared engine, where the model runs
        assert pid != server.process.pid
        with open(f"/proc/{pid}/status") as status:
            vm_size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
        resource.prlimit(pid, resource.RLIMIT_AS, (vm_size + 256 * 2**20, resource.RLIM_INFINITY))
        assert server.inline("file:///long.py", 12_000, 0, timeout=300)["result"] == {"items": []}
        error = server.wait_status("error", timeout=10)
        assert "memory" in error["message"].lower(), error
        server.open("file:///short.py", "def add(a, b):\n    return")
        assert "result" in server.inline("file:///short.py", 1, 10)
        assert server.alive()
    finally:
        if "pid" in locals():
            resource.prlimit(pid, resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        server.close()


def test_closing_stdin_ends_the_server_cleanly(tiny_model):
    server = RawServer("--model", str(tiny_model))
    server.initialize()
    server.process.stdin.close()
    assert server.process.wait(30) == 0


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip(reason="uses /proc and prlimit (Linux)")
