"""A hub model on a machine with no network: the cached copy loads at once, a missing one fails at once.

The "hub" here is a loopback port nobody listens on (HF_ENDPOINT), so the
tests never reach a real hub; HF_HUB_OFFLINE, which every other test sets,
is removed so that phils has to notice by itself.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys

import pytest

from conftest import server_env

from phils.engine.loading.sources import cached_from_hub, hub_reachable


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def no_network_env(hf_home) -> dict[str, str]:
    env = server_env()
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(name, None)
    env.update(HF_HOME=str(hf_home), HF_HUB_CACHE=str(hf_home / "hub"), HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}")
    return env


def cache_as_hub_model(model_dir, hf_home, repo: str) -> None:
    """Lay out ``model_dir`` as huggingface_hub's cache holds a downloaded ``repo``."""
    revision = "0" * 40
    root = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for path in model_dir.iterdir():
        shutil.copy(path, snapshot / path.name)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(revision)


def complete(source, env, *args: str) -> subprocess.CompletedProcess:
    # Without the check, huggingface_hub retries each file for about 23 s: this
    # timeout is what fails the test then.
    return subprocess.run(
        [sys.executable, "-m", "phils", "complete", str(source), "--line", "2", "--col", "4",
         "--set", "engine.backend=local", "--set", "engine.max_new_tokens=4", *args],
        capture_output=True, text=True, timeout=60, env=env,
    )


def test_an_unreachable_hub_is_seen_at_once(monkeypatch):
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.delenv("ALL_PROXY", raising=False)
    monkeypatch.delenv("all_proxy", raising=False)
    assert not hub_reachable(f"http://127.0.0.1:{closed_port()}")
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        assert hub_reachable(f"http://127.0.0.1:{listening.getsockname()[1]}")


def test_a_proxy_is_trusted_to_reach_the_hub(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert hub_reachable(f"https://127.0.0.1:{closed_port()}")


def test_a_cached_hub_model_loads_without_waiting_for_the_network(tiny_model, tmp_path):
    cache_as_hub_model(tiny_model, tmp_path / "hf", "acme/tiny-phi")
    source = tmp_path / "add.py"
    source.write_text('def add(a, b):\n    """Sum."""\n    \n')
    done = complete(source, no_network_env(tmp_path / "hf"), "--model", "acme/tiny-phi")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "cannot be reached: loading from the local cache only" in done.stderr
    assert json.loads(done.stdout)["range"]["start"] == {"line": 2, "character": 4}


def test_a_hub_model_that_is_not_cached_fails_with_a_way_out(tmp_path):
    source = tmp_path / "add.py"
    source.write_text('def add(a, b):\n    """Sum."""\n    \n')
    done = complete(source, no_network_env(tmp_path / "hf"), "--model", "acme/not-downloaded")
    assert done.returncode == 1 and done.stdout == ""
    assert "acme/not-downloaded is not in the local model cache and the hub cannot be reached" in done.stderr
    assert "set engine.model to a local directory" in done.stderr


def test_loading_keeps_the_users_hub_cache_when_gptqmodel_is_imported(tiny_model, tmp_path):
    # gptqmodel's tokenicer sets an unset HF_HOME to /tmp/tokenicer_hf_home when imported.
    pytest.importorskip("gptqmodel", reason="needs the GPTQ extra (phils[gptq])")
    env = server_env()
    for name in ("HF_HOME", "HF_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_MODULES_CACHE"):
        env.pop(name, None)
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    script = (f"from phils.config import EngineSettings; from phils.engine.loading.loader import load_model; "
              f"load_model(EngineSettings(model={str(tiny_model)!r}, threads=1)); import gptqmodel, os; "
              "print(os.environ['HF_HOME'])")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == str(tmp_path / "cache" / "huggingface")


def test_a_first_start_knows_it_will_download(tiny_model, tmp_path):
    # The editor's status then says "downloading microsoft/phi-2 ..." instead of "loading the tokenizer".
    cache_as_hub_model(tiny_model, tmp_path / "hf", "acme/tiny-phi")
    assert cached_from_hub("acme/tiny-phi", cache_dir=str(tmp_path / "hf" / "hub"))
    assert not cached_from_hub("acme/other", cache_dir=str(tmp_path / "hf" / "hub"))
    assert not cached_from_hub("acme/tiny-phi", revision="v2", cache_dir=str(tmp_path / "hf" / "hub"))


def test_hf_hub_offline_in_the_environment_means_no_probe(monkeypatch):
    from phils.engine.loading.sources import hub_offline_by_env

    for value, offline in (("1", True), ("true", True), ("ON", True), ("0", False), ("", False), ("false", False)):
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        assert hub_offline_by_env() is offline, value
