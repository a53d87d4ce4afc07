"""What a judging pass costs, and whether an exact bound could skip passes (engine/decoding/fitting.py).

    .venv/bin/python scripts/judge-cost.py --profile qwen-coder --set engine.quantize=int4 \
        --log bench/results/judged-infill-qwen-coder-int4-codeformat-first80.jsonl --out bench/results

1. One forward pass of T tokens on a document's cache of ``--context`` tokens (a
   module's source), T from 1 to 128: whether scoring several candidates in one
   batched pass could save much (it saves only what a pass costs beyond its tokens).
2. Replayed on recorded judgements (``PHILS_JUDGE_LOG``, each suffix token's
   log-probability): every log-probability is at most 0, so a candidate whose
   log P(answer) plus its first k suffix tokens' is already below the best whole
   score so far cannot win; scoring the first k tokens, stopping there when so, and
   going on in the same cache otherwise gives the same choice. The cost model
   (a pass's fixed cost and its cost a token) comes from part 1.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path

LENGTHS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 128)
STAGES = ((), (4,), (8,), (12,), (8, 16), (4, 8, 16))
ANSWER_TOKENS = 3  # an answer's tokens not yet in the cache when it is scored (a typical line end's)


def measure(args: argparse.Namespace) -> list[tuple[int, float]]:
    from phils.cli import resolve_settings
    from phils.engine import load_model

    options = argparse.Namespace(profile=args.profile, config=None, set=args.set, model=None, device=None,
                                 log_file=None, log_level=None)
    settings, warnings = resolve_settings(options)
    for warning in warnings:
        print(warning, file=sys.stderr)
    loaded = load_model(settings.engine)
    runtime, tokenizer = loaded.runtime, loaded.tokenizer
    source = Path(inspect.getsourcefile(argparse)).read_text()
    ids = tokenizer(source)["input_ids"]
    context, extra = ids[: args.context], ids[args.context : args.context + max(LENGTHS)]
    kv = runtime.new_kv(args.context + max(LENGTHS) + 64)
    for start in range(0, len(context), 256):
        runtime.forward(context[start : start + 256], kv, 1)
    base = kv.get_seq_length()
    rows = []
    for length in LENGTHS:
        times = []
        for _ in range(3):
            started = time.monotonic()
            runtime.forward(extra[:length], kv, length)  # every row's logits, as a score needs
            times.append((time.monotonic() - started) * 1000)
            kv.crop(base - kv.get_seq_length())
        rows.append((length, min(times)))
        print(f"{length} tokens: {min(times):.1f} ms", flush=True)
    return rows


def replay(path: str, fixed_ms: float, per_token_ms: float) -> list[tuple[tuple[int, ...], float, int]]:
    """Per staging of the bound: the modelled judging cost against scoring every candidate whole, and how many
    judgements chose another answer (0 by construction; counted as a check)."""
    records = [json.loads(line) for line in open(path)]
    records = [r for r in records if r["judged"] and all(c.get("tokens") for c in r["judged"])]
    results = []
    for stages in STAGES:
        whole = bounded = 0.0
        changed = 0
        for record in records:
            best, chosen = float("-inf"), None
            for candidate in record["judged"]:
                suffix = [token[0] for token in candidate["tokens"]]
                whole += fixed_ms + per_token_ms * (ANSWER_TOKENS + len(suffix))
                done, skipped = 0, False
                for stage in (*stages, len(suffix)):
                    stage = min(stage, len(suffix))
                    if stage <= done:
                        continue
                    bounded += fixed_ms + per_token_ms * ((ANSWER_TOKENS if done == 0 else 0) + stage - done)
                    done = stage
                    if stage < len(suffix) and candidate["written"] + sum(suffix[:stage]) <= best:
                        skipped = True
                        break
                if not skipped and candidate["written"] + sum(suffix) > best:
                    best, chosen = candidate["written"] + sum(suffix), candidate["text"]
            full = max(record["judged"], key=lambda c: c["written"] + sum(t[0] for t in c["tokens"]))["text"]
            changed += chosen != full
        results.append((stages, bounded / whole, changed))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="qwen-coder")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--context", type=int, default=1500, help="tokens in the cache before each pass")
    parser.add_argument("--log", action="append", default=[], help="a judgement log (PHILS_JUDGE_LOG) to replay")
    parser.add_argument("--out", type=Path, default=None, help="a folder for judge-cost-<profile>.md")
    args = parser.parse_args()
    rows = measure(args)
    # A pass's cost beyond its tokens, and a token's, from the passes long enough to be compute-bound.
    (short, short_ms), (long, long_ms) = rows[3], rows[-1]
    per_token = (long_ms - short_ms) / (long - short)
    fixed = rows[0][1] - per_token
    lines = [f"# What a judging pass costs: profile {args.profile}", "",
             f"`{' '.join(['.venv/bin/python scripts/judge-cost.py', *sys.argv[1:]])}` on "
             f"{time.strftime('%Y-%m-%d %H:%M')}; a cache of {args.context} tokens (argparse's source).", "",
             "| tokens in the pass | ms |", "| --- | --- |", *[f"| {n} | {ms:.1f} |" for n, ms in rows], "",
             f"Beyond {short} tokens a pass costs {per_token:.2f} ms a token; what it costs beyond its tokens: "
             f"{fixed:.1f} ms (one token's pass {rows[0][1]:.1f} ms).", ""]
    for path in args.log:
        lines += [f"Exact bound replayed on `{path}` (cost against scoring every candidate whole):", "",
                  "| bound checked after suffix tokens | judging cost | choices changed |", "| --- | --- | --- |"]
        lines += [f"| {', '.join(map(str, s)) or 'never (as now)'} | {ratio:.3f}x | {changed} |"
                  for s, ratio, changed in replay(path, fixed, per_token)]
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.out:
        name = args.profile + "".join("-" + item.split("=")[-1] for item in args.set)
        (args.out / f"judge-cost-{name}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
