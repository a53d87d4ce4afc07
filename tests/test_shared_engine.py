"""One engine per machine: fronts started by editors share it, start exactly one, survive its death.

Each test uses its own model configuration (a distinct ``engine.kv_cache_mb``)
so that it starts and sees its own shared engine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


from conftest import ROOT, server_env
from rawlsp import RawServer

SOURCE = 'def add(a, b):\n    return'


def front(tiny_model, *extra: str) -> RawServer:
    return RawServer("--model", str(tiny_model), "--set", "engine.max_new_tokens=4",
                     "--set", "engine.ignore_stops=true", "--set", "completion.python_syntax=false", "--set", "completion.warmup_ms=0", *extra)


def engine_of(server: RawServer) -> dict:
    return server.request("phils/stats", {})["result"]["engine"]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def maps_torch(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as f:
        return any("libtorch" in line for line in f)


def engine_sockets(runtime: Path) -> list[Path]:
    return sorted((runtime / "phils").glob("engine-*.sock"))


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{pid}/stat") as f:  # a zombie has exited too
            if f.read().split(") ", 1)[1].startswith("Z"):
                return True
        time.sleep(0.1)
    return False


def _reads(pid: str, *parts: str) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return False
    return all(part in command for part in parts)


def test_two_windows_share_one_engine_and_the_second_needs_no_load(tiny_model, capsys):
    first = front(tiny_model, "--set", "engine.kv_cache_mb=41")
    second = None
    try:
        first.initialize()
        first.open("file:///a.py", SOURCE)
        assert first.inline("file:///a.py", 1, 10)["result"]["items"]
        engine = engine_of(first)
        started = time.monotonic()
        second = front(tiny_model, "--set", "engine.kv_cache_mb=41")
        second.initialize()
        second.open("file:///b.py", SOURCE)
        assert second.inline("file:///b.py", 1, 10)["result"]["items"]
        second_ready_s = time.monotonic() - started
        assert engine_of(second)["pid"] == engine["pid"]
        assert engine_of(second)["windows"] == 2
        # The second window never saw the model load: no progress percentages.
        loading = [n["params"] for n in second.notifications
                   if n["method"] == "phils/status" and n["params"]["state"] == "loading"]
        assert not any("percent" in p for p in loading), loading
        # The fronts run no model: no torch in their address space, a small RSS.
        for server in (first, second):
            assert not maps_torch(server.process.pid)
        assert maps_torch(engine["pid"])
        fronts = [rss_mb(first.process.pid), rss_mb(second.process.pid)]
        with capsys.disabled():
            print(f"\n[shared engine] front RSS {fronts[0]:.0f} / {fronts[1]:.0f} MB, engine "
                  f"{rss_mb(engine['pid']):.0f} MB; second window ready and answered in {second_ready_s:.2f} s")
        assert max(fronts) < 200
    finally:
        for server in (first, second):
            if server is not None:
                server.close()


def test_five_windows_opening_at_once_start_exactly_one_engine(tiny_model, private_runtime_dir):
    before = set(engine_sockets(private_runtime_dir))
    servers = [front(tiny_model, "--set", "engine.kv_cache_mb=42") for _ in range(5)]
    try:
        with ThreadPoolExecutor(5) as pool:
            list(pool.map(lambda s: s.initialize(), servers))
        pids = {engine_of(s)["pid"] for s in servers}
        assert len(pids) == 1
        assert len(set(engine_sockets(private_runtime_dir)) - before) == 1
        engines = subprocess.run(["pgrep", "-f", "phils engine serve"], capture_output=True, text=True).stdout.split()
        assert sum(1 for pid in engines if _reads(pid, '"kv_cache_mb": 42', str(private_runtime_dir))) == 1
    finally:
        for server in servers:
            server.close()


def test_killing_the_engine_shows_loading_then_ready_and_completions_go_on(tiny_model):
    server = front(tiny_model, "--set", "engine.kv_cache_mb=43")
    try:
        server.initialize()
        server.open("file:///a.py", SOURCE)
        assert server.inline("file:///a.py", 1, 10)["result"]["items"]
        old = engine_of(server)["pid"]
        server.notifications.clear()
        os.kill(old, signal.SIGKILL)
        server.wait_status("loading", timeout=30)
        server.wait_status("ready", timeout=60)
        assert server.inline("file:///a.py", 1, 10)["result"]["items"]
        assert engine_of(server)["pid"] != old
        assert server.alive()
    finally:
        server.close()


def test_a_stale_socket_of_a_dead_engine_is_replaced(tiny_model):
    from phils.config import EngineSettings
    from phils.runtime import socket_path

    settings = EngineSettings(model=str(tiny_model), kv_cache_mb=44)
    path = socket_path(settings)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # bound and closed: a file nobody listens on, as a killed engine leaves
    dead.close()
    server = front(tiny_model, "--set", "engine.kv_cache_mb=44")
    try:
        server.initialize()
        server.open("file:///a.py", SOURCE)
        assert server.inline("file:///a.py", 1, 10)["result"]["items"]
    finally:
        server.close()


def test_the_engine_exits_when_its_last_window_has_been_gone_for_idle_exit_s(tiny_model):
    server = front(tiny_model, "--set", "engine.kv_cache_mb=45", "--set", "engine.idle_exit_s=2")
    server.initialize()
    engine = engine_of(server)
    from phils.config import EngineSettings
    from phils.runtime import socket_path

    path = socket_path(EngineSettings(model=str(tiny_model), kv_cache_mb=45))
    assert path.exists()
    time.sleep(3)  # attached: idle time does not count
    assert not wait_gone(engine["pid"], 0.5)
    server.close()
    assert wait_gone(engine["pid"], 15)
    assert not path.exists()


def test_an_engine_of_another_version_is_never_used(tiny_model, tmp_path):
    """Something answers on this version's socket claiming another version: a clear error, no hang."""
    from phils.config import EngineSettings
    from phils.runtime import socket_path

    settings = EngineSettings(model=str(tiny_model), kv_cache_mb=46)
    assert socket_path(settings, "0.0.1") != socket_path(settings)  # an upgrade looks elsewhere
    path = socket_path(settings)
    impostor = subprocess.Popen([sys.executable, "-c", IMPOSTOR, str(path)], env=server_env())
    try:
        deadline = time.monotonic() + 20
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        server = front(tiny_model, "--set", "engine.kv_cache_mb=46")
        try:
            server.initialize(wait_ready=False)
            error = server.wait_status("error", timeout=60)
            assert "0.0.1" in error["message"] and "phils engine stop" in error["message"]
            assert server.alive()
        finally:
            server.close()
    finally:
        impostor.kill()
        impostor.wait()


IMPOSTOR = """
import sys
from aiohttp import web
async def health(request):
    return web.json_response({"version": "0.0.1", "settings_hash": "x", "state": "ready"})
app = web.Application()
app.router.add_get("/health", health)
web.run_app(app, path=sys.argv[1], print=None)
"""


def test_the_runtime_dir_is_private(private_runtime_dir):
    from phils.runtime import runtime_dir

    directory = runtime_dir()
    assert directory == private_runtime_dir / "phils"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    directory.chmod(0o755)  # loosened by someone: tightened again on use
    assert stat.S_IMODE(runtime_dir().stat().st_mode) == 0o700


def test_tcp_mode_wants_the_token(tiny_model, tmp_path):
    token_file = tmp_path / "token"
    engine, port = spawn_tcp_engine(tiny_model, token_file)
    try:
        token = token_file.read_text().strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert _get(port, "/health") == 401
        assert _get(port, "/health", "wrong") == 401
        assert _get(port, "/v1/models", "wrong") == 401
        assert _get(port, "/health", token) in (200, 503)
        assert _get(port, "/v1/models", token) == 200
    finally:
        engine.terminate()
        assert engine.wait(30) == 0


def test_closing_the_stream_stops_decoding_within_one_token(tiny_model, tmp_path):
    """Completions whose connection closes mid-decode: the engine decodes at most one token more each."""
    token_file = tmp_path / "token"
    engine, port = spawn_tcp_engine(tiny_model, token_file, "--set", "engine.threads=1")
    try:
        token = token_file.read_text().strip()
        _wait_ready(port, token)
        body = json.dumps({"prompt": "def f(x):\n    return", "max_tokens": 2000, "stream": True,
                           "phils": {"ignore_stops": True, "document": "a"}}).encode()
        for _ in range(3):
            conn = socket.create_connection(("127.0.0.1", port))
            conn.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            conn.recv(100)  # the stream's headers: the job is queued
            time.sleep(0.3)  # decoding
            conn.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            metrics = _metrics(port, token)
            if metrics.get('phils_requests_total{kind="completion",outcome="cancelled"}', 0) >= 3:
                break
            time.sleep(0.2)
        assert metrics['phils_requests_total{kind="completion",outcome="cancelled"}'] == 3
        decoded = metrics['phils_tokens_total{kind="decode"}']
        after = metrics["phils_tokens_after_cancel_total"]
        print(f"\n[cancel] {decoded:.0f} tokens decoded by 3 cancelled requests, {after:.0f} after their streams closed")
        assert decoded > 3  # they were decoding when closed
        assert after <= 3
    finally:
        engine.terminate()
        engine.wait(30)


def spawn_tcp_engine(model, token_file: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    """``phils engine serve --tcp`` on a free port, once that port listens."""
    port = _free_port()
    engine = subprocess.Popen(
        [sys.executable, "-m", "phils", "engine", "serve", "--tcp", "--port", str(port), "--token-file",
         str(token_file), "--model", str(model), *extra, "--log-level", "warning"], env=server_env(), cwd=str(ROOT))
    _wait_for_port(port)
    return engine, port


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def _get(port: int, path: str, token: str | None = None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _wait_ready(port: int, token: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while _get(port, "/health", token) != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def _metrics(port: int, token: str) -> dict[str, float]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_a_runtime_dir_that_is_not_ours_is_refused_with_an_error(tiny_model, tmp_path):
    from phils.tools.raw_client import RawServer as Raw

    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    (tmp_path / "elsewhere").mkdir()
    (runtime / "phils").symlink_to(tmp_path / "elsewhere")  # planted: not a directory of ours
    server = Raw("--model", str(tiny_model), env={**server_env(), "XDG_RUNTIME_DIR": str(runtime)}, cwd=str(ROOT))
    try:
        server.initialize(wait_ready=False)
        assert "refusing" in server.wait_status("error", timeout=30)["message"]
        assert server.alive()
    finally:
        server.close()
