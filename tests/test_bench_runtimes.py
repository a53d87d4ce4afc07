"""``phils bench runtimes`` on a tiny model: each runtime in a fresh server, warm latency, memory, the floor."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, server_env


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads memory from /proc (Linux)")
def test_bench_runtimes_replays_the_same_typing_on_each_runtime(tiny80_model, tmp_path):
    command = [sys.executable, "-m", "phils", "bench", "runtimes", "--model", str(tiny80_model),
               "--file", str(ROOT / "phils" / "lsp" / "stats.py"), "--runtimes", "int4,fp32", "--prompt-lines", "20",
               "--requests", "3", "--new-tokens", "4", "--typing-ms", "0", "--set", "engine.threads=1",
               "--out", str(tmp_path), "--name", "tiny80"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=server_env(tmp_path / "cache"),
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "runtimes-tiny80.json").read_text())
    int4, fp32 = report["runtimes"]["int4"], report["runtimes"]["fp32"]
    for result in (int4, fp32):
        assert result["requests"] == 3 and result["warm_latency_ms"]["p50"] > 0
        assert result["memory"]["peak_mb"] >= result["memory"]["rss_mb"] > 0
        assert result["decode_floor_ms"] > 0
    assert int4["weight_bytes"] < fp32["weight_bytes"]  # the floor counts what each runtime reads
    assert "| int4 |" in (tmp_path / "runtimes-tiny80.md").read_text()


def test_llama_cpp_needs_its_files():
    done = subprocess.run([sys.executable, "-m", "phils", "bench", "runtimes", "--model", "x", "--file", __file__,
                           "--runtimes", "int4,llama.cpp"], capture_output=True, text=True, timeout=120, env=server_env())
    assert done.returncode != 0 and "needs --gguf and --llama-server" in done.stderr
