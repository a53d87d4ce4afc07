"""Safe defaults and memory bounds, checked on a running server."""

from __future__ import annotations

from conftest import inline, open_doc, phils_server, stats

SECRET = "payroll_password_hunter2"


async def test_a_hundred_open_documents_keep_the_kv_cache_within_its_budget(tiny_model):
    async with phils_server("--model", str(tiny_model), "--set", "engine.kv_cache_mb=1",
                            "--set", "engine.max_new_tokens=4", "--set", "completion.warmup_ms=0") as client:
        for n in range(100):
            uri = f"file:///many/doc{n}.py"
            open_doc(client, uri, f"import os\n\n\ndef handler_{n}(event, context):\n" + "    x = 1\n" * 40 + "    ")
            await inline(client, uri, 44, 4)
        report = await stats(client)
        cache = report["cache"]
        assert report["process"]["rss_mb"] > report["process"]["anon_mb"] > 0  # the server's memory, for editors
        assert cache["budget_bytes"] == 2**20
        assert 0 < cache["bytes"] <= cache["budget_bytes"]
        assert cache["evictions"] > 0 and cache["documents"] < 100


async def _completion_logged(tiny_model, tmp_path, *extra: str) -> str:
    log_file = tmp_path / "server.log"
    async with phils_server("--model", str(tiny_model), "--log-level", "debug", "--log-file", str(log_file),
                            "--set", "engine.max_new_tokens=6", "--set", "engine.ignore_stops=true", "--set", "completion.python_syntax=false", *extra) as client:
        uri = "file:///private/settings.py"
        open_doc(client, uri, f'PASSWORD = "{SECRET}"\n\ndef login(user):\n    return')
        answer = await inline(client, uri, 3, 10)
        assert answer.items
    return log_file.read_text()


async def test_the_log_holds_no_buffer_text_unless_asked(tiny_model, tmp_path):
    log = await _completion_logged(tiny_model, tmp_path)  # debug: the most verbose level
    assert "completion settings.py:3:10" in log  # the request is logged, by file name and position
    assert SECRET not in log and "PASSWORD" not in log
    asked = await _completion_logged(tiny_model, tmp_path, "--set", "log.buffer_text=true")
    assert "prompt tail" in asked and "login(user)" in asked  # the switch really logs text
