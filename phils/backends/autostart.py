"""Find the user's shared engine for these model settings, or start one (``engine.backend = "auto"``).

Like gopls' ``-remote=auto``: the front looks for the engine's socket, and
when nothing answers there it takes a lock, looks again, and only then
starts ``phils engine serve`` detached, so five windows opening at once
start exactly one engine. A socket left by a dead engine is removed. The
socket's name carries phils' version and the settings' hash, and the
engine's ``/health`` must say the same.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
from filelock import FileLock, Timeout

from .. import __version__
from ..config import EngineSettings
from ..runtime import log_path, settings_hash, socket_path

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0  # from spawning the engine to its socket answering (the model loads after)


class EngineStartError(RuntimeError):
    pass


async def probe(path: Path, settings: EngineSettings) -> dict | None:
    """The engine's /health at ``path`` (any state), or None when nothing answers there."""
    if not path.exists():
        return None
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path)),
                                         timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.get("http://phils/health") as response:
                health = await response.json(content_type=None)
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError):
        return None
    if health.get("version") != __version__ or health.get("settings_hash") != settings_hash(settings):
        raise EngineStartError(
            f"the engine at {path} is phils {health.get('version')} with settings {health.get('settings_hash')}, "
            f"not {__version__} with {settings_hash(settings)}: stop it with `phils engine stop`"
        )
    return health


async def ensure_engine(settings: EngineSettings, log_level: str = "info") -> Path:
    """The socket of a live engine for ``settings``, started here if need be."""
    path = socket_path(settings)
    if await probe(path, settings) is not None:
        return path
    lock = FileLock(f"{path}.lock")
    try:
        await asyncio.to_thread(lock.acquire, timeout=START_TIMEOUT_S)
    except Timeout:
        raise EngineStartError(f"another window has been starting the engine for {START_TIMEOUT_S:.0f} s") from None
    try:
        if await probe(path, settings) is not None:  # another window started it while we waited
            return path
        process = spawn_engine(settings, path, log_level)
        deadline = time.monotonic() + START_TIMEOUT_S
        while await probe(path, settings) is None:
            if (code := process.poll()) is not None:
                raise EngineStartError(f"the engine exited with code {code} before it answered: {_log_tail(path)}")
            if time.monotonic() > deadline:
                process.kill()
                raise EngineStartError(f"the engine did not answer within {START_TIMEOUT_S:.0f} s: {_log_tail(path)}")
            await asyncio.sleep(0.05)
        log.info("started the shared engine (pid %d) on %s", process.pid, path)
        return path
    finally:
        lock.release()


def spawn_engine(settings: EngineSettings, path: Path, log_level: str = "info") -> subprocess.Popen:
    """Start ``phils engine serve`` detached from this process's session, logging beside its socket."""
    command = [sys.executable, "-m", "phils", "engine", "serve", "--socket", str(path),
               "--engine-json", json.dumps(dataclasses.asdict(settings)),
               "--log-file", str(log_path(path)), "--log-level", log_level]
    with open(os.devnull, "rb") as stdin, open(log_path(path), "ab") as stderr:
        process = subprocess.Popen(command, stdin=stdin, stdout=subprocess.DEVNULL, stderr=stderr,
                                   start_new_session=True, close_fds=True)
    # Reap it when it exits, so that a long-lived front leaves no zombie behind.
    threading.Thread(target=process.wait, name="phils-engine-reaper", daemon=True).start()
    return process


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = log_path(path).read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return f"no log at {log_path(path)}"
    return " | ".join(text[-lines:]) or f"the log {log_path(path)} is empty"
