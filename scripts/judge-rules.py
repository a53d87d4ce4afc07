"""Score selection rules offline on recorded judgements (tuning aid for engine/decoding/fitting.py).

    PHILS_JUDGE_LOG=/tmp/judged.jsonl phils eval infill --profile gemma3 --set engine.backend=local \
        --set completion.candidates=3 --name tuning
    .venv/bin/python scripts/judge-rules.py /tmp/judged.jsonl

Every recorded candidate is run against its problem's tests; then, per kind
(line, span) and per half of HumanEval (even / odd task numbers, so a rule
tuned on one half can be checked on the other), it prints how many cases each
rule passes with the candidates of origin < k, the oracle (any candidate passes) and the
raw baseline from bench/results/infill-gemma3-270m-raw.json.

bench/results/judged-infill-gemma3-270m-candidates3-4lines.jsonl is the record
the current defaults were chosen from (Gemma 3 270M, 3 candidates, each
alternative still written to 4 lines then; `origin` 0 is the greedy answer).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from phils.tools.eval_humaneval import problems
from phils.tools.eval_infill import make_cases, score

RULES = {
    "log P(answer) + log P(suffix)": lambda c: c["written"] + c["suffix"],
    "log P(suffix) only": lambda c: c["suffix"],
    "+1 per line": lambda c: c["written"] + c["suffix"] + c["lines"],
    "0.5 log P(answer) + log P(suffix)": lambda c: 0.5 * c["written"] + c["suffix"],
}


def code_lines(text: str) -> list[str]:
    return [line.strip() for line in text.split("\n") if line.strip()]


def load(path: str) -> list[dict]:
    records = [json.loads(line) for line in open(path)]
    rows, r = [], 0
    for case in make_cases(problems(None)):
        judged = []
        if r < len(records) and code_lines(records[r]["suffix"])[:2] == code_lines(case.document[case.offset:])[:2]:
            judged = records[r]["judged"]
            r += 1
            if any(c.get("pruned") for c in judged):  # a partial score (fitting.BOUND_TOKENS): not every rule's
                print(f"{case.task_id}: candidates scored in part, left out", file=sys.stderr)
                judged = []
            for c in judged:
                c["passed"] = score(case, c["text"])["passed"]
                c["lines"] = len(code_lines(c["text"]))
        rows.append({"task": int(case.task_id.split("/")[1]), "key": [case.task_id, case.kind], "kind": case.kind,
                     "judged": judged})
    print(f"{r} of {len(records)} records matched to cases", file=sys.stderr)
    return rows


def main(path: str) -> None:
    rows = load(path)
    baseline = Path("bench/results/infill-gemma3-270m-raw.json")
    raw = {tuple(x[k] for k in ("task_id", "kind")): x["passed"]
           for x in json.loads(baseline.read_text())["results"]} if baseline.exists() else {}
    most = max((c.get("origin", 0) for d in rows for c in d["judged"]), default=0) + 1
    for k in sorted({1, 2, 3, most}):
        print(f"## candidates with origin < {k} (0: the greedy answer; then each branch's alternatives in order)")
        for half, keep in (("all", lambda t: True), ("even", lambda t: t % 2 == 0), ("odd", lambda t: t % 2 == 1)):
            for kind in ("line", "span"):
                cases = [d for d in rows if d["kind"] == kind and keep(d["task"])]
                pool = [[c for c in d["judged"] if c.get("origin", 0) < k] for d in cases]
                judged = [(d, p) for d, p in zip(cases, pool) if p]
                oracle = sum(any(c["passed"] for c in p) for _, p in judged)
                base = sum(raw.get(tuple(d["key"]), False) for d, _ in judged)
                chosen = {name: sum(max(p, key=rule)["passed"] for _, p in judged) for name, rule in RULES.items()}
                print(f"  {half:4} {kind}: judged {len(judged)}/{len(cases)}, raw {base}, oracle {oracle}, {chosen}")


if __name__ == "__main__":
    main(sys.argv[1])
