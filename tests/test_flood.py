"""A flood of edits over stdio: 1 000 didChange a second for 10 s into one
document, with completion requests (every 25th edit, half of them cancelled)
and phils/stats probes interleaved, against the tiny model generating 64
tokens per request. Prints the figures."""

from __future__ import annotations

import json

from conftest import ROOT, server_env
from phils.tools.bench_load import run_flood


def test_a_flood_of_edits_never_waits_behind_generation(tiny_model):
    # Drafts off: the random model's loops would let them write 64 tokens in a few passes, and this
    # test needs a generation that keeps the model busy.
    result = run_flood(["--model", str(tiny_model), "--set", "engine.ignore_stops=true", "--set", "completion.python_syntax=false",
                        "--set", "engine.max_new_tokens=64", "--set", "engine.threads=1",
                        "--set", "engine.draft_tokens=0"],
                       seconds=10, edits_per_s=1000, env=server_env(), cwd=str(ROOT))
    print("flood:", json.dumps(result))
    assert result["server_alive"] and result["in_sync"]
    assert result["unanswered"] == 0 and result["errors"] == 0
    assert result["cancelled"] > 0 and result["completion_requests"] > 300
    # Messages are read while the model generates: a probe sent behind a burst of
    # edits waits a small fraction of one generation, not for it to end.
    assert result["probe_ms"]["p50"] * 4 < result["server_completion_ms"]["p50"], result
    assert result["threads"]["ready"] == result["threads"]["end"] == result["threads"]["settled"]
    assert result["rss_mb"]["settled"] - result["rss_mb"]["ready"] < 100
