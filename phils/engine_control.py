"""``phils engine serve|start|status|stop``: running and managing the shared engine by hand."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from .config import Settings, merge
from .runtime import read_or_make_token, running_engines, socket_path


def _settings_for(args: argparse.Namespace, settings: Settings) -> Settings:
    if getattr(args, "engine_json", None):  # a front passes the settings it resolved
        settings, problems = merge(settings, {"engine": json.loads(args.engine_json)}, "--engine-json")
        for problem in problems:
            print(f"warning: {problem}", file=sys.stderr)
    return settings


def serve(args: argparse.Namespace, settings: Settings) -> int:
    from .engine.serving.http_server import serve as serve_http

    engine = _settings_for(args, settings).engine
    if args.tcp:
        token = read_or_make_token(Path(args.token_file) if args.token_file else None)
        return serve_http(engine, None, args.host, args.port, token)
    return serve_http(engine, Path(args.socket) if args.socket else socket_path(engine))


def start(args: argparse.Namespace, settings: Settings) -> int:
    """Start the engine for these settings (detached) unless it runs; print its socket."""
    from .backends.autostart import EngineStartError, ensure_engine

    engine = _settings_for(args, settings).engine
    try:
        path = asyncio.run(ensure_engine(engine, settings.log.level))
    except EngineStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


def status(args: argparse.Namespace, settings: Settings) -> int:
    """Every engine socket of this user, with its /health (or "stale")."""
    rows = [dict(entry, **(asyncio.run(_health(Path(entry["socket"]))) or {"state": "stale"}))
            for entry in running_engines()]
    print(json.dumps(rows, indent=2))
    return 0


def stop(args: argparse.Namespace, settings: Settings) -> int:
    """Stop the engine for these settings (or every engine with --all)."""
    if args.all:
        targets = [Path(entry["socket"]) for entry in running_engines()]
    else:
        targets = [Path(args.socket) if args.socket else socket_path(_settings_for(args, settings).engine)]
    stopped = 0
    for path in targets:
        answer = asyncio.run(_post(path, "/phils/v1/shutdown"))
        if answer is not None:
            stopped += 1
            print(f"stopped the engine on {path} (pid {answer.get('pid')})", file=sys.stderr)
        elif path.exists():
            path.unlink(missing_ok=True)
            print(f"removed the stale socket {path}", file=sys.stderr)
    if not stopped and not args.all:
        print("no engine was running for these settings", file=sys.stderr)
    return 0


async def _health(path: Path) -> dict[str, Any] | None:
    return await _request(path, "GET", "/health")


async def _post(path: Path, route: str) -> dict[str, Any] | None:
    return await _request(path, "POST", route)


async def _request(path: Path, method: str, route: str) -> dict[str, Any] | None:
    import aiohttp

    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path)),
                                         timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.request(method, f"http://phils{route}") as response:
                return await response.json(content_type=None)
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError):
        return None
