"""``phils bench runtimes``: phils' CPU runtimes and llama.cpp on the same weights, one after the other.

Each runtime replays the same typing as ``phils bench keystrokes`` (cache on,
exactly ``--new-tokens`` per request) in a fresh server: phils fp32 / int8 /
int4 in the server's own process, and llama.cpp's llama-server (started here
with the ``--gguf`` file, e.g. a q4_0 of the same checkpoint) behind phils'
llama-server backend, so both pay for the same front. Reported per runtime:
keystroke latency p50/p95 after the first (cold) request, time to the first
line, decode ms/token against the weights' bandwidth floor, and the serving
process's resident memory and peak (VmHWM: its load peak included).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from .bench import Replay, _summary, machine, measure_bandwidth, plan_replay, run_mode, write_report
from ..machine import process_figures, usable_cores

PHILS_RUNTIMES = {
    "fp32": ["engine.quantize=none"],
    "int8": ["engine.quantize=int8"],
    "int4": ["engine.quantize=int4"],  # our kernel where the CPU has AVX-512 VNNI (engine.int4_kernel = auto)
    "int4-mlas": ["engine.quantize=int4", "engine.int4_kernel=mlas"],
    "int4-b128": ["engine.quantize=int4", "engine.int4_block=128"],
    # A GGUF model (engine.int4_gguf): its own 4-bit blocks, the rest 4-bit too; or every weight rounded again.
    "int4-gguf-4bit": ["engine.quantize=int4", "engine.int4_gguf=4bit"],
    "int4-requantize": ["engine.quantize=int4", "engine.int4_gguf=requantize"],
    # A GPTQ checkpoint of the same shape (--gptq-model) on the int4 path: its own blocks (cpu-gptq).
    "gptq": ["engine.quantize=int4"],
}
LLAMA = "llama.cpp"
MEMORY = {"VmRSS:": ("rss_mb", 1024), "VmHWM:": ("peak_mb", 1024)}


def run(args: Any) -> int:
    source = Path(args.file).read_text(encoding="utf-8")
    replay = plan_replay(Path(args.file), source, args.prompt_lines, args.requests)
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    unknown = [r for r in runtimes if r not in PHILS_RUNTIMES and r != LLAMA]
    gptq_missing = "gptq" in runtimes and not getattr(args, "gptq_model", None)
    if unknown or (LLAMA in runtimes and not (args.gguf and args.llama_server)) or gptq_missing:
        raise SystemExit(f"unknown runtimes {unknown}; {LLAMA} needs --gguf and --llama-server, gptq --gptq-model")
    bandwidth = measure_bandwidth()
    results: dict[str, Any] = {}
    for runtime in runtimes:
        started = time.monotonic()
        results[runtime] = asyncio.run(_run_one(runtime, args, replay))
        shown = {k: results[runtime][k] for k in ("latency_ms", "warm_latency_ms", "decode_ms_per_token", "memory")}
        print(f"{runtime}: {json.dumps(shown)} ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    bandwidth = max(bandwidth, measure_bandwidth())
    for runtime, result in results.items():
        weights = _weight_bytes(runtime, args)
        floor = weights / (bandwidth * 1e9) * 1000 if weights else None
        result["weight_bytes"] = weights
        result["decode_floor_ms"] = round(floor, 1) if floor else None
        per_token = result["decode_ms_per_token"]
        result["decode_vs_floor"] = round(per_token / floor, 2) if per_token and floor else None
    report = {"command": "phils bench runtimes " + " ".join(sys.argv[3:]), "date": time.strftime("%Y-%m-%d %H:%M"),
              "model": args.model, "gguf": args.gguf, "file": args.file, "machine": {**machine(), "cpu_flags": _flags()},
              "bandwidth_gb_s": round(bandwidth, 1), "runtimes": results}
    write_report(args.out, f"runtimes-{args.name or Path(args.model).name}", report, markdown(report))
    return 0


async def _run_one(runtime: str, args: Any, replay: Replay) -> dict[str, Any]:
    extra = list(args.set or [])
    server = None
    if runtime == LLAMA:
        server, url = _start_llama_server(args)
        extra += ["engine.backend=llama-server", f"engine.url={url}", f"engine.tokenizer={_tokenizer_file(args)}"]
    else:
        extra += PHILS_RUNTIMES[runtime]
    memory: dict[str, Any] = {}
    try:
        result = await run_mode("cache-on", _model_of(runtime, args), replay, args.new_tokens, extra, args.requests, args.typing_ms,
                                on_done=lambda client: memory.update(_memory_of(server.pid if server else _pid(client))))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    latencies = result.pop("latencies")
    result["warm_latency_ms"] = _summary(latencies[1:])  # the first request fills the cache: other work
    result["first_line_ms"] = result["first_token_ms"]
    result["memory"] = memory
    return result


def _model_of(runtime: str, args: Any) -> str:
    """The model a runtime loads: the GPTQ checkpoint for ``gptq``, else ``--model``."""
    return args.gptq_model if runtime == "gptq" else args.model


def _tokenizer_file(args: Any) -> Path:
    """The tokenizer phils' runtimes count with: the checkpoint's, or that of the GGUF's converted copy."""
    if Path(args.model).is_dir():
        return Path(args.model) / "tokenizer.json"
    from ..engine.loading.sources import cache_root

    converted = sorted((cache_root() / "converted").glob(f"{Path(args.gguf).stem}-*/tokenizer.json"))
    if not converted:
        raise SystemExit(f"no converted copy of {args.gguf} in phils' cache: run a phils runtime of {args.model} first")
    return converted[-1]


def _start_llama_server(args: Any) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [args.llama_server, "-m", args.gguf, "-c", "2048", "--port", str(port), "--host", "127.0.0.1",
               "-t", str(usable_cores()), "-np", "1", "--no-webui"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"llama-server exited with status {server.returncode}: {' '.join(command)}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return server, url
        except OSError:
            time.sleep(0.5)
    server.terminate()
    raise SystemExit("llama-server did not become ready in 10 minutes")


def _pid(client: Any) -> int | None:
    process = getattr(client, "_server", None)
    return getattr(process, "pid", None)


def _memory_of(pid: int | None) -> dict[str, float]:
    return process_figures(pid, MEMORY) if pid else {}


def _weight_bytes(runtime: str, args: Any) -> int | None:
    """The bytes a decode step reads for weights: what the runtime loaded, not the fp32 checkpoint."""
    if runtime == LLAMA:
        return Path(args.gguf).stat().st_size
    if runtime.startswith("int4") or runtime == "gptq":
        from ..config import EngineSettings
        from ..engine.runtimes import q4_kernel
        from ..engine.runtimes.int4_build import variant_name
        from ..engine.loading.sources import cache_root

        default = EngineSettings()  # what the server loads unless the runtime's settings say otherwise
        chosen = dict(s.split("=", 1) for s in PHILS_RUNTIMES[runtime])
        block = int(chosen.get("engine.int4_block", default.int4_block))
        kernel = (q4_kernel.wanted(chosen.get("engine.int4_kernel", default.int4_kernel), block)
                  and q4_kernel.unavailable_reason() is None)
        model = _model_of(runtime, args)
        gguf = chosen.get("engine.int4_gguf", default.int4_gguf) if not Path(model).is_dir() else "requantize"
        variant = variant_name(block, default.int4_head, kernel, gguf, gptq=runtime == "gptq")
        # A checkpoint directory names its builds; a package or .gguf model: the newest build of this variant.
        stem = f"{Path(model).name}-*" if Path(model).is_dir() else "*"
        built = sorted((cache_root() / "onnx-int4").glob(f"{stem}-{variant}/model.onnx.data"),
                       key=lambda p: p.stat().st_mtime)
        return built[-1].stat().st_size if built else None
    files = list(Path(args.model).glob("*.safetensors"))
    total = sum(f.stat().st_size for f in files) or None
    return total // 4 if total and runtime == "int8" else total  # int8: a byte per fp32 weight


def _flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return " ".join(f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "amx", "fma", "f16c")))
    except OSError:
        pass
    return ""


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    rows = ["| runtime | keystroke p50 / p95 ms (after the first) | first request ms | first token p50 ms "
            "| decode ms/token | × floor | resident / peak MB |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in report["runtimes"].items():
        warm, mem = r["warm_latency_ms"], r.get("memory", {})
        rows.append(f"| {name} | {warm['p50']} / {warm['p95']} | {r['latency_ms'].get('first')} "
                    f"| {r['first_token_ms']['p50']} | {r['decode_ms_per_token']} | {r['decode_vs_floor']} "
                    f"| {mem.get('rss_mb')} / {mem.get('peak_mb')} |")
    return "\n".join([
        f"# CPU runtimes, one sitting: {Path(report['model']).name}",
        "",
        f"`{report['command']}` on {report['date']}: {m['cpu']}, {m['cores']} cores ({m['cpu_flags']}).",
        f"Read bandwidth (best of several kernels, same sitting): {report['bandwidth_gb_s']} GB/s. "
        "The floor is the weights each runtime reads per token at that bandwidth.",
        "",
        *rows,
        "",
    ])
