"""The near window: a document whose prompt is mostly not computed is answered from a short prompt
around the cursor, and its whole prompt is computed in idle time after."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

import pytest
import torch
from pygls.workspace import TextDocument

from phils.config import EngineSettings, Settings
from phils.engine import Engine, GenerationRequest, load_model
from phils.engine.serving.service import EngineService
from phils.lsp.completion import near_window, run_pipeline
from phils.lsp.documents import cursor_context
from phils.lsp.prompt import Prompt
from phils.protocol import EngineJob, near_key

from conftest import inline, open_doc, phils_server, server_env, stats, wait_until
from test_pipeline import ScriptedEngine

torch.set_num_threads(1)
LINES = [f"value_{n} = compute({n}, 'item {n}')\n" for n in range(80)]
WHOLE = "".join(LINES) + "def add(a, b):\n    return "
NEAR = "".join(LINES[-6:]) + "def add(a, b):\n    return "


@pytest.fixture(scope="module")
def loaded(tiny_model):
    return load_model(EngineSettings(model=str(tiny_model), threads=1))


def fresh(loaded, cache_bytes: int = 2**30) -> Engine:
    return Engine(loaded, context_tokens=2048, cache_bytes=cache_bytes)


def ask(engine: Engine, prompt: str, near: str = "", key: str = "doc"):
    return engine.generate(GenerationRequest(key, prompt, max_new_tokens=12, heal=False, near_prompt=near))


def test_a_document_not_computed_yet_is_answered_from_the_near_window(loaded):
    engine = fresh(loaded)
    whole, near = engine.encode(WHOLE), engine.encode(NEAR)
    assert len(whole) > len(near) + 256, "the whole prompt must be worth sparing"

    answer = ask(engine, WHOLE, NEAR)

    assert answer.window == "near"
    assert answer.prompt_tokens == len(near) and answer.prefill_tokens == len(near)
    assert answer.text == ask(fresh(loaded), NEAR).text  # the same answer as the near prompt alone
    assert engine.cache.shared(near_key("doc"), near) == len(near)  # kept for the next keystroke
    assert engine.cache.shared("doc", whole) == 0  # the whole prompt's entry is not touched


def test_once_the_whole_prompt_is_computed_it_answers(loaded):
    engine = fresh(loaded)
    ask(engine, WHOLE, NEAR)  # cold: near
    engine.prefill("doc", WHOLE, threading.Event(), 12)  # what the idle warm-up does

    answer = ask(engine, WHOLE + "a", NEAR + "a")

    assert answer.window == ""
    assert answer.reused_tokens >= len(engine.encode(WHOLE)) - 2
    assert answer.text == ask(fresh(loaded), WHOLE + "a").text


def test_a_near_window_that_spares_little_is_not_used(loaded):
    engine = fresh(loaded)
    # The whole prompt computed but for its last lines: what is left is less than the near window.
    engine.prefill("doc", "".join(LINES[:70]), threading.Event(), 12)
    assert ask(engine, WHOLE, NEAR).window == ""


def test_an_engine_fast_enough_to_compute_the_whole_prompt_does_not_use_the_near_window(loaded):
    engine = fresh(loaded)
    engine.prefill_rate = 100_000.0  # tokens a second: a GPU computes the whole prompt at once
    assert ask(engine, WHOLE, NEAR).window == ""
    slow = fresh(loaded)
    slow.prefill_rate = 50.0  # a slow CPU: the spared tokens are seconds
    assert ask(slow, WHOLE, NEAR).window == "near"


def test_the_engine_measures_its_prefill_speed_from_requests(loaded):
    engine = fresh(loaded)
    assert engine.prefill_rate is None
    answer = ask(engine, WHOLE)
    assert engine.prefill_rate == pytest.approx(answer.prefill_tokens * 1000 / answer.prefill_ms)


def test_while_the_whole_prompt_is_still_computed_typing_reads_the_near_window_it_has(loaded):
    engine = fresh(loaded)
    near = "".join(LINES[-45:]) + "def add(a, b):\n    return "
    whole_ids = engine.encode(WHOLE)
    engine.prefill("doc\x1fnear", near, threading.Event(), 12)  # computed at the resting cursor
    left = next(n for n in range(len(LINES)) if len(whole_ids) - len(engine.encode("".join(LINES[:n]))) < 300)
    engine.prefill("doc", "".join(LINES[:left]), threading.Event(), 12)  # the idle work, cut short
    to_compute = len(whole_ids) - engine.cache.shared("doc", whole_ids)
    assert 256 < to_compute < len(engine.encode(near)), "more than the saving, less than the whole near window"
    answer = ask(engine, WHOLE + "x", near + "x")
    assert answer.window == "near" and answer.prefill_tokens <= 3


def test_a_file_another_window_computed_is_not_answered_from_a_near_window(loaded):
    engine = fresh(loaded)
    engine.prefill("window-1\x1fdoc", WHOLE, threading.Event(), 12)
    answer = ask(engine, WHOLE, NEAR, key="window-2\x1fdoc")  # the same file, just opened in a second window
    assert answer.window == "" and answer.prefill_tokens <= 2


def test_without_a_kv_cache_there_is_no_near_window(loaded):
    # Nothing is kept, so nothing is computed ahead either: every request reads its whole prompt.
    assert ask(fresh(loaded, cache_bytes=0), WHOLE, NEAR).window == ""


def test_after_a_near_answer_the_engine_computes_the_whole_prompt_when_idle(tiny_model):
    service = EngineService(EngineSettings(model=str(tiny_model), threads=1))
    try:
        service.load().result(timeout=120)
        job = EngineJob(document="file:///a.py", prompt=WHOLE, max_new_tokens=12, heal=False, near_prompt=NEAR)
        assert service.submit(job).result(timeout=60).window == "near"
        whole = service.engine.encode(WHOLE)
        deadline = time.monotonic() + 60
        while service.engine.cache.shared(job.key, whole) < len(whole) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert service.engine.cache.shared(job.key, whole) == len(whole)
        assert b"phils_near_windows_total 1.0" in service.metrics.exposition()
        # The next keystroke reads the whole prompt from the cache.
        after = service.submit(EngineJob(document="file:///a.py", prompt=WHOLE + "a", max_new_tokens=12, heal=False,
                                         near_prompt=NEAR + "a")).result(timeout=60)
        assert after.window == "" and after.prefill_tokens <= 2
        service.forget("", "file:///a.py")
        service.submit(EngineJob(document="x", prompt="x", max_new_tokens=1)).result(timeout=60)  # after the drop
        assert len(service.engine.cache) == 1  # only x's: both of a.py's entries went with it
    finally:
        service.close()


# --- the front -------------------------------------------------------------------------------------


def ctx_at_end(text: str):
    lines = text.split("\n")
    return cursor_context(TextDocument("file:///t.py", text), len(lines) - 1, len(lines[-1]))


def test_the_near_window_keeps_the_cursors_lines_and_leaves_out_the_far_ones():
    settings = Settings()
    settings.completion.near_window_tokens = 64
    engine = ScriptedEngine("x")
    ctx = ctx_at_end(WHOLE)
    whole = asyncio.run(run_pipeline(engine, ctx, settings)) and engine.jobs[0]
    assert whole.near_prompt and len(whole.near_prompt) < len(whole.prompt) / 4
    assert whole.near_prompt.endswith("def add(a, b):\n    return ")
    assert "value_0 " not in whole.near_prompt and "value_79 " in whole.near_prompt


@pytest.mark.parametrize("change", [{"near_window_tokens": 0}, {"kv_cache": False}, {"text": "def f():\n    "}])
def test_no_near_window_when_off_without_a_cache_or_for_a_short_prompt(change):
    settings = Settings()
    settings.completion.near_window_tokens = change.get("near_window_tokens", 64)
    settings.engine.kv_cache = change.get("kv_cache", True)
    engine = ScriptedEngine("x")
    asyncio.run(run_pipeline(engine, ctx_at_end(change.get("text", WHOLE)), settings))
    assert engine.jobs[0].near_prompt == ""


def test_an_engine_that_does_not_warm_gets_no_near_window():
    settings = Settings()
    settings.completion.near_window_tokens = 64
    engine = ScriptedEngine("x")
    engine.warms = False  # llama-server, vLLM: they keep no cache phils can steer
    ctx = ctx_at_end(WHOLE)
    assert near_window(engine, ctx, settings, {}, Prompt(WHOLE)) is None


# --- end to end ---------------------------------------------------------------------------------------


async def test_the_first_request_in_an_opened_file_is_answered_near_the_cursor_then_the_whole_file(tiny_model):
    uri = "file:///work/long.py"
    async with phils_server("--model", str(tiny_model), "--set", "completion.warmup_ms=0",
                            "--set", "completion.near_window_tokens=64", "--set", "completion.python_syntax=false",
                            "--set", "engine.max_new_tokens=4") as client:
        open_doc(client, uri, WHOLE)
        line = len(LINES) + 1
        await inline(client, uri, line, 11)
        first = await stats(client)
        assert first["requests"] == 1 and first["near_windows"] == 1
        assert first["prompt_tokens"] < 120  # the near window, not the whole file
        await wait_until(client, lambda s: not s["busy"])
        await inline(client, uri, line - 1, 14)  # the end of `def add(a, b):`: its prompt is in the whole file's
        second = await stats(client)
        assert second["near_windows"] == first["near_windows"]  # the whole file was computed while idle
        assert second["prompt_tokens"] - first["prompt_tokens"] > 200
        assert second["prefill_tokens"] - first["prefill_tokens"] <= 2


async def test_a_near_suggestion_computed_where_the_cursor_rests_is_computed_again_whole(tiny_model, tmp_path):
    """The suggestion at a resting cursor (phils/didMoveCursor) comes from the near window in a file just
    opened; then it is computed again from the whole prompt, and the request there gets that one."""
    uri = "file:///work/long.py"
    line, character = len(LINES) + 1, 11
    answers = []
    # An engine of its own: one that earlier tests' requests ran on has measured the tiny model's prefill,
    # at which a near window never pays; the pause long enough for the cursor's notification to supersede
    # the opening pre-fill, which would otherwise (on a loaded machine) compute the file first.
    tmp_path.chmod(0o700)
    env = {**server_env(), "XDG_RUNTIME_DIR": str(tmp_path)}
    try:
        for near in (64, 0):
            async with phils_server("--model", str(tiny_model), "--set", "completion.warmup_ms=300",
                                    "--set", f"completion.near_window_tokens={near}", "--set", "completion.python_syntax=false",
                                    "--set", "engine.max_new_tokens=6", env=env) as client:
                open_doc(client, uri, WHOLE)
                client.protocol.notify("phils/didMoveCursor", {"textDocument": {"uri": uri},
                                                               "position": {"line": line, "character": character}})
                done = await wait_until(client, lambda s: s["ahead_computed"] >= 1 and not s["busy"]
                                        and (not near or s["near_upgrades"] >= 1))
                answer = await inline(client, uri, line, character)
                after = await stats(client)
                assert after["ahead"] == 1 and after["prefill_tokens"] == 0  # answered from the work done ahead
                assert done["near_upgrades"] == (1 if near else 0)
                answers.append(answer.items[0].insert_text if answer.items else "")
    finally:
        subprocess.run([sys.executable, "-m", "phils", "engine", "stop", "--all"], env=env, capture_output=True, timeout=60)
    assert answers[0] == answers[1]  # the whole prompt's suggestion, as without the near window


def test_a_window_that_leaves_takes_the_engines_idle_work_for_it_along(tiny_model):
    service = EngineService(EngineSettings(model=str(tiny_model), threads=1))
    try:
        service.load().result(timeout=120)
        started, stopped = threading.Event(), threading.Event()

        def slow_prefill(key, prompt, cancel, max_new_tokens):  # the whole prompt, as long as a big one takes
            started.set()
            if cancel.wait(10):
                stopped.set()
            return 0, cancel.is_set()

        service.engine.prefill = slow_prefill
        job = EngineJob(document="file:///a.py", window="w1", prompt=WHOLE, max_new_tokens=12, heal=False,
                        near_prompt=NEAR)
        assert service.submit(job).result(timeout=60).window == "near"  # then the whole prompt, idle
        assert started.wait(10)
        service.window_left("w1")
        assert stopped.wait(5)  # cancelled with the window's other work, not computed for nobody
    finally:
        service.close()
