"""Counting prompt tokens without torch: the prompt builder's budget needs it.

A window on phils' shared engine asks the engine (``POST /tokenize``), so it
holds no tokenizer of its own (Gemma 3's takes 400 MB); in-process models
use a copy of their own tokenizer; for other engines the user may name a
tokenizer.json file or hub id; otherwise a character estimate that errs on
the side of more tokens (a shorter prompt).
"""

from __future__ import annotations

import logging
import math
from typing import Callable

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 3.0  # code in GPT-2-style BPE runs 3-4 characters a token: count high


def estimate(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def from_json(text: str | None) -> Callable[[str], int]:
    """A counter from tokenizer.json text (None: the estimate)."""
    if not text:
        return estimate
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(text)
    return lambda s: len(tokenizer.encode(s, add_special_tokens=True).ids)


def from_setting(name: str, offline: bool = False) -> Callable[[str], int]:
    """A counter from ``engine.tokenizer``: a tokenizer.json path, a directory holding one, or a hub id."""
    if not name:
        return estimate
    from pathlib import Path

    from tokenizers import Tokenizer

    path = Path(name).expanduser()
    try:
        if path.is_dir():
            path = path / "tokenizer.json"
        if path.is_file():
            tokenizer = Tokenizer.from_file(str(path))
        elif offline:
            raise OSError("offline: not fetching it from the hub")
        else:
            tokenizer = Tokenizer.from_pretrained(name)
    except Exception as exc:  # a bad setting costs precision, never the server
        log.warning("engine.tokenizer %s: %s; estimating token counts from characters", name, exc)
        return estimate
    return lambda s: len(tokenizer.encode(s, add_special_tokens=True).ids)


class RemoteCounter:
    """Counts through an engine's ``POST /tokenize`` (synchronous: the prompt builder runs in a thread).

    One keep-alive connection, a small cache (the prompt's head repeats at every
    keystroke), and the estimate when the engine cannot answer.
    """

    def __init__(self, socket_path: str | None, url: str = "", headers: dict[str, str] | None = None):
        import threading
        from functools import lru_cache

        self._socket_path, self._url, self._headers = socket_path, url, dict(headers or {})
        self._headers["Content-Type"] = "application/json"
        self._lock = threading.Lock()
        self._connection = None
        self.count = lru_cache(maxsize=64)(self._count)

    def __call__(self, text: str) -> int:
        return self.count(text)

    def _connect(self):
        import http.client
        import socket
        from urllib.parse import urlsplit

        if self._socket_path is not None:
            path = self._socket_path

            class UnixConnection(http.client.HTTPConnection):
                def connect(self) -> None:
                    self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    self.sock.settimeout(self.timeout)
                    self.sock.connect(path)

            return UnixConnection("phils", timeout=10)
        parts = urlsplit(self._url)
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        return kind(parts.hostname or "127.0.0.1", parts.port, timeout=10)

    def _count(self, text: str) -> int:
        import http.client
        import json

        body = json.dumps({"prompt": text})
        with self._lock:
            for _ in range(2):  # a keep-alive connection the engine closed: once more on a new one
                try:
                    if self._connection is None:
                        self._connection = self._connect()
                    self._connection.request("POST", "/tokenize", body=body, headers=self._headers)
                    response = self._connection.getresponse()
                    data = response.read()
                    if response.status == 200:
                        return int(json.loads(data)["count"])
                    break
                except (OSError, http.client.HTTPException, ValueError, KeyError):
                    if self._connection is not None:
                        self._connection.close()
                    self._connection = None
        return estimate(text)
