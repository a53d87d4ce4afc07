"""``phils bench memory``: what loading a model costs in memory, at its peak and once ready.

Each run loads the model the given settings choose in a fresh process (so
its peak is its own), decodes once across the KV buffer's old doubling point
(1 024 tokens: the slowest decode step against the median shows a stall), and
reads /proc: resident memory once ready (anonymous and file-backed), the peak
while loading and running, against the checkpoint's size. Linux only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..machine import MEMORY_DETAIL, PROCESS_FIELDS, process_figures


def status_mb() -> dict[str, float]:
    return process_figures(fields={**PROCESS_FIELDS, **MEMORY_DETAIL})


def child(engine_json: str, prompt_tokens: int, new_tokens: int) -> None:
    """In the measured process: load, note memory, generate once, note memory again; print JSON."""
    from ..config import EngineSettings
    from ..engine import Engine, GenerationRequest, load_model
    from ..engine.serving.service import kv_budget

    import torch  # noqa: F401  (the runtime's own memory, before any weight: the baseline)
    import transformers  # noqa: F401

    settings = EngineSettings(**json.loads(engine_json))
    baseline = status_mb()
    started = time.monotonic()
    loaded = load_model(settings)
    ready = {"load_s": round(time.monotonic() - started, 1), **status_mb()}
    engine = Engine(loaded, settings.context_tokens, kv_budget(settings.kv_cache, settings.kv_cache_mb, loaded.device))
    words = " ".join(f"value_{i} = compute({i})" for i in range(prompt_tokens))
    ids = loaded.tokenizer(words).input_ids[:prompt_tokens]
    prompt = loaded.tokenizer.decode(ids)
    steps: list[float] = []
    started = time.monotonic()
    result = engine.generate(GenerationRequest("doc", prompt, max_new_tokens=new_tokens, heal=False, ignore_stops=True,
                                               on_token=lambda count: steps.append(time.monotonic())))
    timed = [(b - a) * 1000 for a, b in zip(steps, steps[1:])]  # step i: the forward of new token i + 1
    gaps = sorted(timed)
    after = {"generate_s": round(time.monotonic() - started, 1), "prompt_tokens": result.prompt_tokens,
             "new_tokens": result.new_tokens, "step_ms_p50": round(gaps[len(gaps) // 2], 1) if gaps else None,
             "step_ms_max": round(gaps[-1], 1) if gaps else None,
             "slowest_steps": sorted(((round(ms, 1), result.prompt_tokens + i + 1) for i, ms in enumerate(timed)),
                                     reverse=True)[:3],  # (ms, tokens in the cache after it)
             **status_mb()}
    print(json.dumps({"precision": loaded.dtype, "baseline": baseline, "ready": ready, "after_generate": after}))


def run(args: Any, settings: Any) -> int:
    import dataclasses

    command = [sys.executable, "-c", "import sys; from phils.tools.bench_memory import child; "
               "child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))", json.dumps(dataclasses.asdict(settings.engine)),
               str(args.prompt_tokens), str(args.new_tokens)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stderr[-4000:], file=sys.stderr)
        return 1
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    weights = _checkpoint_mb(settings.engine.model)
    report = {"command": "phils " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d %H:%M"),
              "model": settings.engine.model, "quantize": settings.engine.quantize,
              "cpu_kernels": settings.engine.cpu_kernels, "checkpoint_mb": weights, **measured}
    # Net of the runtime (Python, torch, transformers before any weight is read).
    base = measured["baseline"]["rss_mb"]
    if weights:
        report["ready_over_checkpoint"] = round((measured["ready"]["rss_mb"] - base) / weights, 2)
    after = measured["after_generate"]
    report["peak_over_resident"] = round((after["peak_mb"] - base) / max(after["rss_mb"] - base, 1), 2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or Path(settings.engine.model).name
    (out / f"memory-{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "memory.md").write_text(table(out))
    print(json.dumps(report, indent=2))
    return 0


def _checkpoint_mb(model: str) -> float | None:
    files = list(Path(model).glob("*.safetensors")) if Path(model).is_dir() else []
    return round(sum(f.stat().st_size for f in files) / 2**20, 1) if files else None


def table(directory: Path) -> str:
    rows = ["| date | model | precision | checkpoint MB | runtime alone MB | resident when ready MB (anon / file) "
            "| ÷ checkpoint | resident after a generation MB | peak MB | peak ÷ resident "
            "| decode step p50 / max ms | command |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for path in sorted(directory.glob("memory-*.json")):
        r = json.loads(path.read_text())
        ready, after = r["ready"], r["after_generate"]
        rows.append(f"| {r['date']} | {Path(r['model']).name} | {r['precision']} | {r['checkpoint_mb']} "
                    f"| {r['baseline']['rss_mb']} | {ready['rss_mb']} ({ready['anon_mb']} / {ready['file_mb']}) | {r.get('ready_over_checkpoint')} "
                    f"| {after['rss_mb']} | {after['peak_mb']} | {r['peak_over_resident']} "
                    f"| {after.get('step_ms_p50')} / {after.get('step_ms_max')} | `{r['command']}`"
                    + (f" {r['note']}" if r.get("note") else "") + " |")
    return ("# Memory: loading a model and one generation, each in a fresh process\n\n"
            "Resident = VmRSS, peak = VmHWM (the high-water mark over loading and the generation), from /proc; "
            "the ratios are net of the runtime alone (Python, torch and transformers imported, no weights).\n\n"
            + "\n".join(rows) + "\n")
