"""``phils bench keystrokes``: replay the typing of a real file into a running server.

The server is started as a subprocess and driven over LSP exactly as an
editor would: the first lines of the file are opened, then the rest is typed
one character per ``didChange``, and at every line end (a pause) an inline
completion is requested. Each mode (KV cache off, on, on with warm-up) runs
in a fresh server. Speed does not depend on weight values when a fixed
number of tokens is generated, so the benchmark forces exactly
``--new-tokens`` per request (``engine.ignore_stops``).
"""

from __future__ import annotations

import asyncio
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .lsp_client import start_server, stop_server
from ..machine import usable_cores
from .lsp_client import stats as server_stats

MODES = {
    "cache-off": ["engine.kv_cache=false", "completion.warmup_ms=0"],
    "cache-on": ["engine.kv_cache=true", "completion.warmup_ms=0"],
    "cache-on+warmup": ["engine.kv_cache=true"],  # completion.warmup_ms from --warmup-ms
}


@dataclass
class Replay:
    path: Path  # the file replayed: opened at its own path, so the project's other modules are found
    opened: str  # the document as opened
    typed: str  # what is then typed, character by character
    pauses: int  # completion requests to make (one per typed line)


def plan_replay(path: Path, source: str, prompt_lines: int, pauses: int) -> Replay:
    lines = source.splitlines(keepends=True)
    opened = "".join(lines[:prompt_lines])
    typed = "".join(lines[prompt_lines : prompt_lines + pauses])
    return Replay(path.resolve(), opened, typed, pauses)


async def run_mode(
    mode: str, model: str, replay: Replay, new_tokens: int, extra: list[str], requests: int, typing_ms: float,
    warmup_ms: int = 100, on_done: Any = None,
) -> dict[str, Any]:
    """Replay the typing in a fresh server; ``on_done(client)`` is called before the server stops."""
    from lsprotocol import types

    warmup = [f"completion.warmup_ms={warmup_ms}"] if mode == "cache-on+warmup" else []
    # In-process by default: each mode's model is loaded fresh and let go at the end (two shared
    # engines of Phi-2's shape would hold 22 GB); --set engine.backend=auto measures through one.
    settings = ["engine.backend=local", *extra, *MODES[mode], *warmup, "engine.ignore_stops=true",
                f"engine.max_new_tokens={new_tokens}"]
    command = ["--model", model, "--log-level", "warning"]
    for item in settings:
        command += ["--set", item]
    client = await start_server(command, root=Path.cwd())

    uri = replay.path.as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(uri=uri, language_id="python", version=1, text=replay.opened))
    )
    line, character, version = replay.opened.count("\n"), len(replay.opened.rsplit("\n", 1)[-1]), 1
    latencies, suggestions, cold = [], [], {}
    for ch in replay.typed:
        version += 1
        here = types.Position(line=line, character=character)
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                content_changes=[types.TextDocumentContentChangePartial(range=types.Range(here, here), text=ch)],
            )
        )
        if ch == "\n":
            line, character = line + 1, 0
        else:
            character += len(ch.encode("utf-16-le")) // 2
        if typing_ms:
            await asyncio.sleep(typing_ms / 1000)
        if ch == "\n" and len(latencies) < requests:
            started = time.monotonic()
            result = await client.text_document_inline_completion_async(
                types.InlineCompletionParams(
                    text_document=types.TextDocumentIdentifier(uri=uri),
                    position=types.Position(line=line, character=character),
                    context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
                )
            )
            latencies.append((time.monotonic() - started) * 1000)
            suggestions.append(result.items[0].insert_text if result and result.items else "")
            if len(latencies) == 1:  # the cold start, left out of the steady-state reuse figure
                cold = await server_stats(client)
    stats = await server_stats(client)
    if on_done is not None:
        on_done(client)
    warm_prompt = stats["prompt_tokens"] - cold["prompt_tokens"]
    warm_reused = stats["reused_tokens"] - cold["reused_tokens"]
    await stop_server(client)
    return {
        "mode": mode,
        "requests": len(latencies),
        "latency_ms": {**_summary(latencies), "first": round(latencies[0], 1) if latencies else None},
        "latencies": [round(x, 1) for x in latencies],
        "first_token_ms": stats["first_token_ms"],
        "reused_fraction": round(warm_reused / warm_prompt, 4) if warm_prompt else None,
        "prompt_tokens_mean": round(stats["prompt_tokens"] / max(stats["requests"], 1)),
        "decode_ms_per_token": stats["decode_ms_per_token"],
        "suggestions": suggestions,
        "server_stats": {k: v for k, v in stats.items() if k != "documents"},
    }


def measure_bandwidth(size_mb: int = 1024, repeats: int = 5, device: str = "cpu") -> float:
    """Best read bandwidth in GB/s over several kernels (a busy machine lowers some more than others)."""
    import torch

    if device == "cuda":
        size_mb *= 4  # several times a GPU's L2
    x = torch.ones(size_mb * 2**20 // 4, dtype=torch.float32, device=device)
    kernels = {"sum": torch.sum, "amax": torch.amax, "dot": lambda t: torch.dot(t, t)}
    best = 0.0
    for kernel in kernels.values():
        kernel(x)
        for _ in range(repeats):
            _sync(device)
            started = time.perf_counter()
            kernel(x)
            _sync(device)
            best = max(best, x.nbytes / (time.perf_counter() - started) / 1e9)
    return best


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def server_device(settings: list[str]) -> str:
    """Where the server under test runs its model: what engine.device says, CUDA when auto finds one."""
    import torch

    wanted = next((item.split("=", 1)[1] for item in reversed(settings) if item.startswith("engine.device=")), "auto")
    return "cuda" if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()) else "cpu"


def weight_bytes(model: str) -> int | None:
    path = Path(model)
    files = list(path.glob("*.safetensors")) if path.is_dir() else []
    return sum(f.stat().st_size for f in files) or None


def machine(device: str = "cpu") -> dict[str, Any]:
    import torch

    facts = {
        "cpu": _cpu_name(),
        "cores": usable_cores(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    if device == "cuda":
        facts["gpu"] = torch.cuda.get_device_name()
    return facts


def run(args: Any) -> int:
    source = Path(args.file).read_text(encoding="utf-8")
    replay = plan_replay(Path(args.file), source, args.prompt_lines, args.requests)
    modes = args.modes.split(",")
    device = server_device(args.set or [])
    bandwidth = measure_bandwidth(device=device)
    results = {}
    for mode in modes:
        started = time.monotonic()
        requests = args.off_requests if mode == "cache-off" and args.off_requests else args.requests
        results[mode] = asyncio.run(
            run_mode(mode, args.model, replay, args.new_tokens, args.set or [], requests, args.typing_ms, args.warmup_ms)
        )
        print(f"{mode}: {json.dumps({k: v for k, v in results[mode].items() if k not in ('suggestions', 'server_stats')})}"
              f" ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    bandwidth = max(bandwidth, measure_bandwidth(device=device))  # the same sitting, before and after
    report = summarize(args, results, bandwidth, device)
    write_report(args.out, f"keystrokes-{args.name or Path(args.model).name}", report, markdown(report))
    return 0


def write_report(out: str | Path, stem: str, report: dict[str, Any], table: str) -> None:
    """A benchmark's results: ``stem``.json (everything) and ``stem``.md (its table, printed too) in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{stem}.md").write_text(table)
    print(table)


def summarize(args: Any, results: dict[str, Any], bandwidth: float, device: str = "cpu") -> dict[str, Any]:
    weights = weight_bytes(args.model)
    floor_ms = weights / (bandwidth * 1e9) * 1000 if weights else None
    modes = list(results)
    identical = None
    if len(modes) > 1:
        common = min(len(results[m]["suggestions"]) for m in modes)
        identical = all(results[m]["suggestions"][:common] == results[modes[0]]["suggestions"][:common] for m in modes)
    report: dict[str, Any] = {
        "command": "phils bench keystrokes " + " ".join(sys.argv[3:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "model": args.model,
        "file": args.file,
        "machine": machine(device),
        "device": device,
        "bandwidth_gb_s": round(bandwidth, 1),
        "weight_bytes": weights,
        "decode_floor_ms": round(floor_ms, 1) if floor_ms else None,
        "suggestions_identical_across_modes": identical,
        "modes": results,
    }
    off, on = results.get("cache-off"), results.get("cache-on")
    if off and on and on["first_token_ms"]["p50"]:
        report["first_token_speedup_p50"] = round(off["first_token_ms"]["p50"] / on["first_token_ms"]["p50"], 1)
    for result in results.values():
        per_token = result["decode_ms_per_token"]
        result["decode_vs_floor"] = round(per_token / floor_ms, 2) if per_token and floor_ms else None
    return report


def markdown(report: dict[str, Any]) -> str:
    rows = [
        "| mode | requests | prompt tokens | reused (after the first) | first token p50 / p95 ms | latency p50 / p95 ms | decode ms/token | × floor |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["modes"].values():
        rows.append(
            f"| {r['mode']} | {r['requests']} | {r['prompt_tokens_mean']} | {r['reused_fraction']} "
            f"| {r['first_token_ms']['p50']} / {r['first_token_ms']['p95']} "
            f"| {r['latency_ms']['p50']} / {r['latency_ms']['p95']} | {r['decode_ms_per_token']} | {r['decode_vs_floor']} |"
        )
    m = report["machine"]
    lines = [
        f"# Keystroke replay: {Path(report['model']).name}",
        "",
        f"`{report['command']}` on {report['date']}: {m['cpu']}, {m['cores']} cores, "
        f"{'the GPU ' + m['gpu'] + ', ' if m.get('gpu') else ''}torch {m['torch']}.",
        f"{'GPU r' if m.get('gpu') else 'R'}ead bandwidth (best of several kernels, same sitting): {report['bandwidth_gb_s']} GB/s; "
        f"weights {report['weight_bytes']} bytes → decode floor {report['decode_floor_ms']} ms/token.",
        "",
        *rows,
        "",
        f"First-token speed-up, cache on vs off (p50): {report.get('first_token_speedup_p50')}×. "
        f"Suggestions identical across modes: {report['suggestions_identical_across_modes']}.",
        "",
    ]
    return "\n".join(lines)


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None}
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered), 1), "p95": round(ordered[min(int(0.95 * len(ordered)), len(ordered) - 1)], 1)}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
