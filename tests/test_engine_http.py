"""The engine's HTTP surface as an OpenAI client sees it: plain and streamed completions,
bad requests answered 400, models, health and Prometheus metrics."""

from __future__ import annotations

import json
import urllib.request

import pytest

from phils.engine.serving.http_server import BadRequest, parse_job
from test_shared_engine import _wait_ready, spawn_tcp_engine


class FakeService:
    class settings:
        max_new_tokens = 64


@pytest.mark.parametrize("body, problem", [
    ([], "JSON object"),
    ({}, "prompt"),
    ({"prompt": 3}, "prompt"),
    ({"prompt": "x", "max_tokens": -1}, "max_tokens"),
    ({"prompt": "x", "max_tokens": True}, "max_tokens"),
    ({"prompt": "x", "stop": [1]}, "stop"),
    ({"prompt": "x", "phils": []}, "phils"),
    ({"prompt": "x", "phils": {"shape": {"single_line": True}}}, "stop rule"),
    ({"prompt": "x", "phils": {"deadline_ms": -5}}, "deadline_ms"),
    ({"prompt": "x", "phils": {"define": "result"}}, "define"),
    ({"prompt": "x", "phils": {"define": ["a b"]}}, "define"),
    ({"prompt": "x", "phils": {"samples": -1}}, "samples"),
])
def test_bad_requests_are_named(body, problem):
    with pytest.raises(BadRequest, match=problem):
        parse_job(body, FakeService())


def test_an_openai_request_becomes_a_job():
    job, stream = parse_job({"prompt": ["def f():"], "max_tokens": 8, "stop": "\n", "stream": True,
                             "phils": {"document": "file:///a.py", "window": "w1", "heal": False,
                                       "fit_suffix": "\n    return x", "define": ["x", "y", "z", "u", "v"], "samples": 99,
                                       "shape": {"single_line": True, "min_indent": 0, "line_prefix": "", "max_lines": 1}}},
                            FakeService())
    assert stream and job.prompt == "def f():" and job.max_new_tokens == 8 and job.stop_strings == ("\n",)
    assert job.key == "w1\x1ffile:///a.py" and not job.heal and job.shape.single_line
    assert job.fit_suffix == "\n    return x" and job.define == ("x", "y", "z", "u")  # at most MAX_DEFINE
    assert job.samples == 8  # at most MAX_SAMPLES


@pytest.fixture(scope="module")
def engine(tiny_model, tmp_path_factory):
    token_file = tmp_path_factory.mktemp("engine") / "token"
    process, port = spawn_tcp_engine(tiny_model, token_file)
    token = token_file.read_text().strip()
    _wait_ready(port, token)
    yield port, token
    process.terminate()
    process.wait(30)


def call(port: int, token: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"},
                                     data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_plain_and_streamed_completions_agree(engine):
    port, token = engine
    body = {"prompt": "def add(a, b):\n    return", "max_tokens": 6, "temperature": 0}
    status, plain = call(port, token, "/v1/completions", body)
    assert status == 200
    answer = json.loads(plain)
    assert answer["object"] == "text_completion" and answer["choices"][0]["finish_reason"] in ("stop", "length")
    assert answer["usage"]["completion_tokens"] <= 6
    status, streamed = call(port, token, "/v1/completions", {**body, "stream": True})
    events = [line[6:] for line in streamed.decode().split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]) == answer["choices"][0]["text"]


def test_a_bad_request_is_a_400_with_a_message(engine):
    port, token = engine
    status, body = call(port, token, "/v1/completions", {"prompt": 5})
    assert status == 400 and "prompt" in json.loads(body)["error"]["message"]


def test_models_health_tokenize_and_metrics(engine, tiny_model):
    port, token = engine
    status, body = call(port, token, "/v1/models")
    assert json.loads(body)["data"][0]["id"] == str(tiny_model)
    status, body = call(port, token, "/health")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["version"]
    status, body = call(port, token, "/tokenize", {"prompt": "def add(a, b):"})
    assert status == 200 and json.loads(body)["count"] > 0
    call(port, token, "/v1/completions", {"prompt": "x = ", "max_tokens": 2})
    status, body = call(port, token, "/metrics")
    text = body.decode()
    assert "phils_requests_total" in text and "phils_kv_cache_bytes" in text and "phils_windows_attached" in text


def test_a_client_that_closes_its_stream_at_once_is_no_error(tiny_model, tmp_path):
    """A superseded request is the normal case: the engine logs no error and serves the next one."""
    import socket

    log = tmp_path / "engine.log"
    process, port = spawn_tcp_engine(tiny_model, tmp_path / "token", "--log-file", str(log))
    try:
        token = (tmp_path / "token").read_text().strip()
        _wait_ready(port, token)
        body = json.dumps({"prompt": "def add(a, b):\n", "max_tokens": 64, "stream": True}).encode()
        for _ in range(6):
            with socket.create_connection(("127.0.0.1", port)) as raw:
                raw.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        status, answer = call(port, token, "/v1/completions", {"prompt": "x = ", "max_tokens": 2})
        assert status == 200 and json.loads(answer)["choices"]
    finally:
        process.terminate()
        process.wait(30)
    written = log.read_text() if log.exists() else ""
    assert "Error handling request" not in written and "Traceback" not in written, written[-2000:]


def test_budget_cuts_are_exported_by_what_they_cut():
    from types import SimpleNamespace

    from phils.engine.serving.metrics import EngineMetrics
    from phils.protocol import EngineJob, GenerationResult

    service = SimpleNamespace(cache_report=lambda: {"bytes": 0, "budget_bytes": 0}, state="ready")
    metrics = EngineMetrics(service)
    job = EngineJob(document="d", prompt="x", max_new_tokens=4, deadline_ms=1500)
    metrics.record(job, GenerationResult(text="x", reason="stop", cut="judging"), 10.0)
    metrics.record(job, GenerationResult(text="x", reason="deadline", cut="answer"), 10.0)
    metrics.record(job, GenerationResult(text="x", reason="stop"), 10.0)
    text = metrics.exposition().decode()
    assert 'phils_budget_cuts_total{stage="judging"} 1.0' in text
    assert 'phils_budget_cuts_total{stage="answer"} 1.0' in text and "phils_budget_seconds 1.5" in text
