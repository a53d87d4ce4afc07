"""A raw JSON-RPC client over a phils server's stdio: frames no real client
sends (tests), and precise timing under load (the flood and soak benchmarks).
Every message read is stamped with its arrival time (``_received``)."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from typing import Any


class RawServer:
    def __init__(self, *args: str, env: dict[str, str] | None = None, cwd: str | None = None):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "phils", "serve", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd,
        )
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stderr: list[bytes] = []
        self.notifications: list[dict[str, Any]] = []
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.process.stderr), daemon=True).start()

    def _read(self) -> None:
        out = self.process.stdout
        while True:
            headers = {}
            while (line := out.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            if not headers:
                return  # stdout closed
            message = json.loads(out.read(int(headers["content-length"])))
            message["_received"] = time.monotonic()
            self.messages.put(message)

    def send_bytes(self, data: bytes) -> None:
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def send(self, message: dict[str, Any]) -> None:
        body = json.dumps(message).encode()
        self.send_bytes(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    def notify(self, method: str, params: Any) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def request(self, method: str, params: Any, timeout: float = 60) -> dict[str, Any]:
        """Send a request and wait for its response (result or error)."""
        msg_id = self.next_id()
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return self.response(msg_id, timeout)

    def next_response(self, timeout: float) -> dict[str, Any] | None:
        """The next response to one of our requests, or None after ``timeout`` s.

        Meanwhile, requests from the server are accepted (answered with null)
        and notifications are kept in ``notifications``.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self.messages.get(timeout=max(0.0, min(0.2, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    return None
                continue
            if "method" not in message:
                return message
            if "id" in message:
                self.send({"jsonrpc": "2.0", "id": message["id"], "result": None})
            else:
                self.notifications.append(message)

    def response(self, msg_id: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.next_response(0.2)
            if message is None:
                if self.process.poll() is not None:
                    raise AssertionError(f"server exited with {self.process.returncode}: {self.stderr_text()[-2000:]}")
            elif message.get("id") == msg_id:
                return message
        raise AssertionError(f"no response to request {msg_id} within {timeout} s")

    def initialize(self, wait_ready: bool = True) -> dict[str, Any]:
        answer = self.request("initialize", {"processId": None, "rootUri": None, "capabilities": {}})
        self.notify("initialized", {})
        if wait_ready:
            self.wait_status("ready", "error")
        return answer

    def wait_status(self, *states: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for note in self.notifications:
                if note["method"] == "phils/status" and note["params"]["state"] in states:
                    return note["params"]
            self.next_response(0.2)  # no request of ours is waiting: only notifications matter here
        raise AssertionError(f"no status in {states} within {timeout} s")

    def open(self, uri: str, text: str) -> None:
        self.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": text}})

    def inline(self, uri: str, line: int, character: int, timeout: float = 60) -> dict[str, Any]:
        return self.request("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": {"line": line, "character": character},
            "context": {"triggerKind": 2}}, timeout)

    def stderr_text(self) -> str:
        return b"".join(self.stderr).decode(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> int:
        if self.alive():
            try:
                self.request("shutdown", None, timeout=20)
                self.notify("exit", None)
            except Exception:
                pass
        try:
            return self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
