"""Where the shared engine lives: a per-user 0700 runtime directory, socket and log names.

The socket's name carries phils' version and a hash of the model settings,
so an upgraded front never talks to an old engine, and two model
configurations never share one. Used by both processes; imports neither
torch nor pygls.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import tempfile
from pathlib import Path
from typing import Any

from . import __version__
from .config import EngineSettings, model_identity

# sun_path holds 108 bytes on Linux (104 on macOS); leave room for the terminating NUL.
MAX_SOCKET_PATH = 100


class RuntimeDirError(RuntimeError):
    """The runtime directory is not safely ours."""


def runtime_dir() -> Path:
    """``$XDG_RUNTIME_DIR/phils``, else ``<tmp>/phils-<uid>``: created 0700, refused if not ours."""
    base = os.environ.get("XDG_RUNTIME_DIR", "")
    if base and os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK):
        directory = Path(base) / "phils"
    else:
        directory = Path(tempfile.gettempdir()) / f"phils-{os.getuid()}"
    return private_dir(directory)


def private_dir(directory: Path) -> Path:
    try:
        directory.mkdir(mode=0o700, parents=False, exist_ok=True)
    except FileNotFoundError:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.lstat()  # lstat: a symlink planted by someone else is refused, not followed
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise RuntimeDirError(f"{directory} is not a directory owned by this user: refusing to use it")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(directory, 0o700)
    return directory


def settings_hash(engine: EngineSettings) -> str:
    identity = json.dumps(model_identity(engine), sort_keys=True)
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


def engine_name(engine: EngineSettings, version: str = __version__) -> str:
    return f"engine-{version}-{settings_hash(engine)}"


def socket_path(engine: EngineSettings, version: str = __version__) -> Path:
    path = runtime_dir() / f"{engine_name(engine, version)}.sock"
    if len(str(path)) > MAX_SOCKET_PATH:  # a deep XDG_RUNTIME_DIR: fall back to a short private dir
        path = private_dir(Path("/tmp") / f"phils-{os.getuid()}") / f"{engine_name(engine, version)}.sock"
    return path


def log_path(socket: Path) -> Path:
    """The engine's log: beside its socket, so that `phils engine status` can show where it is."""
    return socket.with_suffix(".log")


def token_file() -> Path:
    return runtime_dir() / "engine-token"


def read_or_make_token(path: Path | None = None) -> str:
    """The bearer token for the engine's TCP mode, kept in a 0600 file."""
    path = path or token_file()
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(token + "\n")
        return token


def running_engines() -> list[dict[str, Any]]:
    """Sockets in the runtime directory (live or stale), newest first."""
    directory = runtime_dir()
    sockets = sorted(directory.glob("engine-*.sock"), key=lambda p: p.stat().st_mtime, reverse=True)
    return [{"socket": str(p), "log": str(log_path(p))} for p in sockets]
