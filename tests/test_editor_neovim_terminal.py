"""The Neovim plugin in a real terminal: two Neovims in tmux, 256 colours, no termguicolors.

What a user sees on screen: each window shows the suggestion after the
cursor in a grey (cterm 244) that typed code does not have, and both windows
are served by one shared engine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from conftest import server_env
from test_editor_neovim import NVIM, PLUGIN
from test_shared_engine import _reads

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (Debian package tmux)")

SETUP = """
vim.opt.rtp:prepend(os.getenv("PHILS_PLUGIN"))
vim.o.termguicolors = false  -- a 256-colour terminal, as in tmux without Tc
require("phils").setup{
  cmd = { os.getenv("PHILS_PYTHON"), "-m", "phils", "serve", "--model", os.getenv("PHILS_MODEL"),
          "--set", "engine.ignore_stops=true", "--set", "completion.python_syntax=false", "--set", "completion.multiline=false",
          "--set", "engine.kv_cache_mb=47" },
  max_tokens = 6,
}
vim.o.laststatus = 2
vim.o.statusline = "%f %{v:lua.require'phils'.status_line()}"
"""
GREY = "\x1b[38;5;244m"


def tmux(socket: str, *args: str) -> str:
    return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, check=True).stdout


def screen(socket: str, session: str) -> str:
    return tmux(socket, "capture-pane", "-e", "-p", "-t", session)


def wait_for(fn, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := fn():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def grey_text(captured: str) -> str:
    """The text drawn in colour 244 on the line with `return`."""
    line = next(l for l in captured.splitlines() if "return" in l)
    return "".join(re.findall(re.escape(GREY) + r"(?:\x1b\[[0-9;]*m)*([^\x1b]*)", line))


def test_two_neovims_in_a_terminal_show_grey_ghost_text_from_one_engine(tiny_model, tmp_path, private_runtime_dir):
    socket = f"phils-test-{os.getpid()}"
    setup = tmp_path / "setup.lua"
    setup.write_text(SETUP)
    env = {**server_env(), "PHILS_PLUGIN": str(PLUGIN), "PHILS_PYTHON": sys.executable, "PHILS_MODEL": str(tiny_model),
           "TERM": "screen-256color", "COLORTERM": ""}
    for k in ("CONFIG", "DATA", "STATE", "CACHE"):
        env[f"XDG_{k}_HOME"] = str(tmp_path / k.lower())
    sessions = ["one", "two"]
    try:
        for name in sessions:
            source = tmp_path / f"{name}.py"
            source.write_text("def add(a, b):\n    return\n")
            command = f"{NVIM} --clean -c 'luafile {setup}' {source}"
            subprocess.run(["tmux", "-L", socket, "-f", "/dev/null", "new-session", "-d", "-s", name, "-x", "100",
                            "-y", "20", command], env=env, check=True)
        for name in sessions:  # the status line says when the server is ready
            wait_for(lambda: "phils: ready" in screen(socket, name), 90, f"Neovim {name}'s server to be ready")
        for name in sessions:  # the end of `return`, insert mode, one more character: the plugin asks
            tmux(socket, "send-keys", "-t", name, "2G", "A", " ", "a")
        shown = {name: wait_for(lambda: grey_text(screen(socket, name)).strip(), 120, f"ghost text in {name}")
                 for name in sessions}
        for name in sessions:
            captured = screen(socket, name)
            code_line = next(l for l in captured.splitlines() if "(a, b):" in l)
            assert GREY not in code_line  # typed code is not grey: the suggestion stands apart
        print(f"\n[neovim in tmux] ghost text: {shown}")
        # Both windows' servers talk to one engine process.
        engines = subprocess.run(["pgrep", "-f", "phils engine serve"], capture_output=True, text=True).stdout.split()
        ours = [pid for pid in engines if _reads(pid, '"kv_cache_mb": 47', str(private_runtime_dir))]
        assert len(ours) == 1, ours
        fronts = subprocess.run(["pgrep", "-f", "phils serve --model"], capture_output=True, text=True).stdout.split()
        assert len(fronts) >= 2
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)
