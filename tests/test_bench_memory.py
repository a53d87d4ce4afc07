"""``phils bench memory`` on the tiny model: a fresh process, its memory read from /proc, a results table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads memory from /proc (Linux)")
def test_bench_memory_measures_a_fresh_process_and_writes_its_table(tiny_model, tmp_path):
    done = subprocess.run([sys.executable, "-m", "phils", "bench", "memory", "--model", str(tiny_model),
                           "--prompt-tokens", "300", "--new-tokens", "6", "--set", "engine.threads=1",
                           "--out", str(tmp_path), "--name", "tiny"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "memory-tiny.json").read_text())
    after = report["after_generate"]
    assert after["new_tokens"] == 6 and after["step_ms_p50"] > 0 and after["step_ms_max"] >= after["step_ms_p50"]
    assert report["ready"]["rss_mb"] > report["baseline"]["rss_mb"] > 0 and after["peak_mb"] >= after["rss_mb"]
    assert f"| {Path(tiny_model).name} |" in (tmp_path / "memory.md").read_text()
