"""One sitting: two int4 builds of the same model (phils' ONNX folders), their speed and their agreement.

    .venv/bin/python scripts/compare-int4-builds.py NAME OLD_DIR NEW_DIR [--rounds 2] [--tokens 768]

Each build is loaded in turn (rounds alternate, so the machine's drift lands on both): a prompt of
``--tokens`` random ids prefilled as 256 then the rest (the way the engine chunks a fresh prompt),
then 20 one-token decode steps, each asking for the last row's logits (as the engine does). Then both read the same 600 tokens of real Python (asyncio's
queues.py) and their logits are compared: top-1 agreement, the largest difference, and each one's
next-token accuracy on the text. ONNX Runtime's per-operator profile of the new build's prefill
says where its time goes. Writes bench/results/int4-builds-NAME.{md,json}. Not part of the tests.
"""

from __future__ import annotations

import argparse
import collections
import glob
import inspect
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
THREADS = 2


def load(folder: str, profile: str | None = None):
    import onnxruntime_genai as og

    library = sorted(glob.glob(os.path.join(folder, "phils-q4-*.so")), key=os.path.getmtime)
    options = {"intra_op_num_threads": THREADS, "inter_op_num_threads": 1}
    if library:  # the newest copy: the one the engine last loaded with this build
        options["custom_ops_library"] = library[-1]
    if profile:
        options["enable_profiling"] = profile
    config = og.Config(folder)
    config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
    model = og.Model(config)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=2048)
    return og, model, params


def speed(folder: str, tokens: int) -> dict[str, float]:
    og, model, params = load(folder)
    ids = np.random.default_rng(0).integers(100, 30000, tokens).astype(np.int32)
    generator = og.Generator(model, params)
    generator.append_tokens(ids[:64])  # the first run of a session pays for its set-up
    generator = og.Generator(model, params)
    record = Path(folder) / "phils-build.json"
    if record.is_file() and json.loads(record.read_text()).get("logits_on_demand"):
        keep = np.ones(1, dtype=np.int64)  # alive while the generator runs: set_model_input wraps it, no copy
        generator.set_model_input("num_logits_to_keep", keep)  # as the engine runs it
    started = time.perf_counter()
    generator.append_tokens(ids[:256])
    generator.append_tokens(ids[256:])
    prefill = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(20):
        generator.append_tokens(ids[i:i + 1])
    return {"prefill_tokens_per_s": round(tokens / prefill, 1), "decode_ms_per_token": round((time.perf_counter() - started) / 20 * 1000, 1)}


def logits_on_code(folder: str) -> tuple[np.ndarray, np.ndarray]:
    import asyncio.queues
    from tokenizers import Tokenizer

    ids = np.array(Tokenizer.from_file(os.path.join(folder, "tokenizer.json")).encode(
        inspect.getsource(asyncio.queues)).ids[:600], dtype=np.int32)
    og, model, params = load(folder)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    return ids, np.array(generator.get_output("logits"), dtype=np.float32).reshape(len(ids), -1)


def where_the_time_goes(folder: str, tokens: int) -> dict[str, float]:
    """Shares of the new build's prefill by operator (the head apart). ONNX Runtime writes its profile
    when the process ends: the prefill runs in a child."""
    import subprocess

    prefix = f"/tmp/phils-int4-profile-{os.getpid()}"
    subprocess.run([sys.executable, __file__, "--profile", prefix, "profile", folder, folder, f"--tokens={tokens}"], check=True)
    path = sorted(glob.glob(prefix + "*.json"))[-1]
    events = json.loads(Path(path).read_text())
    os.unlink(path)
    run = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"][-1]
    totals: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and run["ts"] <= event["ts"] <= run["ts"] + run["dur"]:
            name = event["name"]
            kind = event["args"].get("op_name", "?") + (" (head)" if "lm_head" in name else "")
            totals[kind] += event["dur"]
    whole = sum(totals.values()) or 1
    return {kind: round(value / whole, 3) for kind, value in totals.most_common(6)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")  # (the child: the profile's path prefix)
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=768)
    parser.add_argument("--profile", help=argparse.SUPPRESS)  # the child that prefills with profiling on
    args = parser.parse_args()
    if args.profile:
        og, model, params = load(args.old, args.profile)
        generator = og.Generator(model, params)
        if json.loads((Path(args.old) / "phils-build.json").read_text()).get("logits_on_demand"):
            keep = np.ones(1, dtype=np.int64)  # alive while the generator runs (wrapped, not copied)
            generator.set_model_input("num_logits_to_keep", keep)
        generator.append_tokens(np.random.default_rng(0).integers(100, 30000, args.tokens).astype(np.int32))
        return 0
    rows: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for _ in range(args.rounds):
        for label in ("old", "new"):
            rows[label].append(speed(getattr(args, label), args.tokens))
            print(label, rows[label][-1], file=sys.stderr)
    (ids, old), (_, new) = logits_on_code(args.old), logits_on_code(args.new)
    agreement = {"top1_agreement": round(float((old.argmax(-1) == new.argmax(-1)).mean()), 4),
                 "largest_difference_of_largest_logit": round(float(np.abs(old - new).max() / np.abs(old).max()), 4),
                 "next_token_accuracy_old": round(float((old[:-1].argmax(-1) == ids[1:]).mean()), 4),
                 "next_token_accuracy_new": round(float((new[:-1].argmax(-1) == ids[1:]).mean()), 4)}
    shares = where_the_time_goes(args.new, args.tokens)
    median = lambda label, key: float(np.median([r[key] for r in rows[label]]))  # noqa: E731
    ratios = {"prefill_new_over_old": round(median("new", "prefill_tokens_per_s") / median("old", "prefill_tokens_per_s"), 3),
              "decode_new_over_old": round(median("new", "decode_ms_per_token") / median("old", "decode_ms_per_token"), 3)}
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    report = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M"), "threads": THREADS, "old": args.old,
              "new": args.new, "rounds": rows, "ratios": ratios, "agreement": agreement, "new_prefill_shares": shares}
    out = ROOT / "bench/results" / f"int4-builds-{args.name}"  # names hold dots ("1.5b"): no with_suffix
    Path(f"{out}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# Two int4 builds, one sitting: {args.name}", "", f"`{command}` on {report['date']}, {THREADS} threads.",
             f"Old: `{Path(args.old).name}`; new: `{Path(args.new).name}`.", "",
             f"| build | prefill tokens/s ({args.tokens} tokens, 256 then the rest), each round | decode ms/token, each round |",
             "| --- | --- | --- |"]
    lines += [f"| {label} | {' / '.join(str(r['prefill_tokens_per_s']) for r in rows[label])} | "
              f"{' / '.join(str(r['decode_ms_per_token']) for r in rows[label])} |" for label in ("old", "new")]
    lines += ["", f"Medians new ÷ old: prefill rate {ratios['prefill_new_over_old']}×, decode time {ratios['decode_new_over_old']}×.",
              "", "On 600 tokens of asyncio/queues.py: " + ", ".join(f"{k} {v}" for k, v in agreement.items()) + ".",
              "", "The new build's prefill by operator: " + ", ".join(f"{k} {v:.1%}" for k, v in shares.items()) + "."]
    Path(f"{out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
