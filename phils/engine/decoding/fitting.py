"""Answer with the candidate that the code after the cursor follows best.

Phi-2 has no fill-in-the-middle tokens, so the text after the cursor cannot
be in the prompt; it can still judge the answers. Mid-code, the engine writes
the greedy answer (up to a few lines) and, at the step where it starts
writing code, the best other first tokens, each continued greedily to the end
of its line; answers forced to begin with a name the code below reads and
nothing defines (the front finds them: ``lsp/unbound.py``); and, if asked,
answers sampled from the model. Every line end of every candidate is a
possible answer, and the one under which the whole document is most likely
wins: log P(answer | prefix) + log P(next
lines | prefix, answer), the second from one forward pass over the answer's
tokens not yet in the KV cache and the suffix's, on the prompt's KV cache.
The same judgement picks between a line and the lines until the code below
resumes, which a rule on indentation alone cannot.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable

from ...protocol import GenerationResult
from ...stoprule import leaves_open
from ..limits import MAX_SUFFIX_TOKENS
from .branch import Branch, add_counts
from .prefix_cache import common_prefix, crop
from .second_choice import first_line_key

if TYPE_CHECKING:
    from .generate import Engine, GenerationRequest

log = logging.getLogger(__name__)

JUDGE_LOG = "PHILS_JUDGE_LOG"  # a file to append every judgement to (buffer text: for tuning only, asked for)
TOP_TOKENS = 64  # alternatives are looked for among this many of the best first tokens
SAMPLE_TEMPERATURE, SAMPLE_TOP_K = 0.7, 40  # sampled answers (completion.samples)
# Early accept: no other candidate is written when, after the greedy answer's first line, the code below's
# first line has at least this mean log-probability a token (about 0.6 each). On 102 judgements of the
# infill eval (Qwen2.5-Coder 1.5B int4, every candidate judged, `scripts/judge-rules.py`-style replay),
# 16 met it and the best of the greedy answer's own line ends was the overall choice in all of them;
# at -0.7, 25 met it and 2 choices changed; accepting the first line alone (without its further line
# ends) changed 3 at -0.7 and lost 2 spans in the eval.
EARLY_ACCEPT_LOGPROB = -0.5
# Another first line is written only from a first token at most this far (natural log) below the greedy one's:
# e^-5, under 1 % of its probability. On 102 judgements of the infill eval in code format (Qwen2.5-Coder 1.5B
# int4, first 80, 2026-12-05, each candidate's first token recorded) 12 alternatives won, 11 of them within 3.7
# of the greedy token; at 5, 44 of 167 alternatives go unwritten and the replayed choices pass as many tests.
ALTERNATIVE_MAX_GAP = 5.0
# A candidate's score is checked against the best so far after this many suffix tokens (a pass of its own),
# where the suffix has over 4 more. On this project's 2-core machine a pass costs ~24 ms beyond
# its tokens and ~9 ms a token (Qwen2.5-Coder 1.5B int4, a 1 500-token cache); replayed on 102 judgements of
# the infill eval and 40 of the mid-code bench, checking after 8 costs 0.87x and 0.95x of scoring whole,
# 4 or 12 less well, two checks (8, 16) no better (scripts/judge-cost.py, bench/results/judge-cost-*.md).
BOUND_TOKENS = 8
OPENS_A_BLOCK = (":", "{", "(", "[")  # a line end after these is no alternative to show (its body is missing)


class CannotRewind(Exception):
    """The KV cache cannot be cut back (sliding-window layers past their window)."""


def choose(engine: "Engine", logits: Any, kv: Any, prompt_length: int, request: "GenerationRequest",
           result: GenerationResult, max_new: int) -> None:
    """Decode the candidates and leave the best-fitting one in ``result`` (``result.candidates`` = texts judged).

    Each candidate is judged as soon as it is written, the greedy answer first,
    so a request that runs out of time (``request.deadline``) answers with the
    best judged so far (``result.cut`` says what the budget cut). Where the
    greedy answer's first line already fits the code below, no other candidate
    is written (``request.skip_when_followed``). When the KV
    cache cannot be rewound, ``result`` holds the greedy answer and
    ``result.candidates`` stays 0: the front then applies its own rule.
    """
    started = time.monotonic()
    branches: list[Branch] = []
    scores: list[tuple[int, float]] = []
    judge = _Judge(engine, kv, prompt_length, result.healed, request.fit_suffix)
    timing = {"greedy_ms": 0.0, "others_ms": 0.0, "judge_ms": 0.0}
    line_first = request.line_first and request.skip_when_followed and judge.first_line > 0
    first_line = _FirstLine(request.stop) if line_first else None
    generated = engine._decode(logits, kv, replace(request, stop=first_line) if first_line else request, result,
                               max_new, on_branch=branches.append, scores=scores)
    if _cut_short(result):
        return  # no time to judge: the front applies its own rule
    if first_line is not None and first_line.line_ended and result.text.strip():
        # Mid-line: the line being typed, closed by the greedy answer, is the answer when the code below's
        # first line follows it; no further line is written (the line's own pass decides, ~10 tokens).
        clock = time.monotonic()
        judge.held = generated[: kv.get_seq_length() - prompt_length]
        try:
            logprob, followed = judge.score(result.text, first_line_only=True)
        except CannotRewind as exc:
            log.debug("candidates not judged: %s", exc)
            result.candidates = 0
            return
        timing["judge_ms"] = (time.monotonic() - clock) * 1000
        # (A line that opens a block, `if (x) {`, is no answer on its own where the code below is not its body:
        # the `}` below closes the enclosing block, which would then have none.)
        if followed and not (request.closes_brackets and leaves_open(result.text, request.comment)
                             and (request.shape is None or request.shape.max_lines > 1)):
            result.candidates = 1
            timing["greedy_ms"] = (clock - started) * 1000
            _record(request, result.text, [{"text": result.text, "suffix": logprob, "origin": 0, "fits": True,
                                             "first_line_only": True, "tokens": judge.detail}],
                    lambda: [engine.tokenizer.decode([t]) for t in judge.suffix_ids], timing)
            return
        if not first_line.rule_ended:  # it does not fit: write the greedy answer on, as far as the request's rule goes
            resumed = Branch(generated, scores, "", judge.resume(generated), kv.get_seq_length())
            generated = engine._decode(resumed.logits, kv, request, result, max_new, start=resumed, scores=scores)
            if _cut_short(result):
                return
    greedy_text, greedy_reason = result.text, result.reason
    timing["greedy_ms"] = (time.monotonic() - started) * 1000 - timing["judge_ms"]
    best: tuple[float, str] | None = None
    judged: list[dict] = []
    seen: set[str] = set()

    def out_of_time(ahead_ms: float = 0.0) -> bool:
        """Cancelled, or the budget would run out ``ahead_ms`` from now (the next step's expected cost)."""
        if request.cancel.is_set():
            return True
        if request.deadline is not None and time.monotonic() + ahead_ms / 1000 >= request.deadline:
            result.cut = result.cut or "judging"
            return True
        return False

    def consider(text: str, reason: str, token_scores: list[tuple[int, float]], origin: int) -> None:
        """Judge each answer ``text`` offers (one per line end) that no earlier candidate offered."""
        nonlocal best
        clock = time.monotonic()
        ends = line_ends(text)
        if reason in ("length", "deadline") and (len(ends) > 1 or origin):
            ends.pop()  # its last line was cut short
        for answer in ends:
            if answer in seen or request.closes_brackets and leaves_open(answer, request.comment):
                continue  # (`if (x) {` alone: no answer)
            if out_of_time(timing.get("last_score_ms", 0.0)):  # a score is one pass over the suffix: don't start
                break  # one that would end past the budget
            scored = time.monotonic()
            seen.add(answer)
            end = len(result.healed) + len(answer)
            written_logprob = sum(logprob for after, logprob in token_scores if after <= end)
            # The whole document's likelihood with this answer in the hole: log P(answer) + log P(suffix | answer).
            suffix_logprob, followed = judge.score(answer, bound=None if best is None else best[0] - written_logprob)
            if not judge.pruned:  # (a pruned score took part of a pass: no estimate of the next one)
                timing["last_score_ms"] = (time.monotonic() - scored) * 1000
            score = written_logprob + suffix_logprob
            judged.append({"text": answer, "written": written_logprob, "suffix": suffix_logprob, "origin": origin,
                           "fits": followed, "tokens": judge.detail, **({"pruned": True} if judge.pruned else {})})
            result.candidates += 1
            if best is None or score > best[0]:
                best = (score, answer)
        timing["judge_ms"] += (time.monotonic() - clock) * 1000

    try:
        judge.held = generated[: kv.get_seq_length() - prompt_length]
        consider(greedy_text, greedy_reason, scores, 0)
        origin = 0

        def write(branch: Branch, how: "GenerationRequest", force: list[int] | None = None,
                  pick: Callable[[Any], int] | None = None) -> None:
            """Another candidate from ``branch`` (its first tokens ``force``d, then ``pick``'s: greedy), judged."""
            nonlocal origin
            clock = time.monotonic()
            if first_logprobs is not None and force:
                first_of[origin + 1] = float(first_logprobs[force[0]])
            judge.rewind(branch.generated)
            other = GenerationResult(text="", reason="", healed=result.healed)
            how = replace(how, finish_first_line=False)  # an alternative cut short is dropped, never waited for
            other_scores = list(branch.scores)
            tokens = engine._decode(branch.logits, kv, how, other, max_new, start=branch, force=force,
                                    scores=other_scores, pick=pick)
            add_counts(result, other)
            judge.held = tokens[: kv.get_seq_length() - prompt_length]
            timing["others_ms"] += (time.monotonic() - clock) * 1000
            origin += 1
            if other.reason == "deadline":
                result.cut = result.cut or "judging"
            consider(other.text, other.reason, other_scores, origin)

        branch = branches[-1] if branches else None  # where the answer's code starts
        greedy_token = generated[len(branch.generated)] if branch and len(generated) > len(branch.generated) else None
        # For the judgement log: each candidate's first token's log-probability at the branch, by origin.
        first_of: dict[int, float] = {}
        first_logprobs = None
        if branch is not None and os.environ.get(JUDGE_LOG):
            first_logprobs = engine._torch.log_softmax(branch.logits.float(), -1)
            if greedy_token is not None:
                first_of[0] = float(first_logprobs[greedy_token])
        # The greedy answer already fits when, after its first line, the code below's first line is likely:
        # its own line ends are judged, and another first line rarely wins then (EARLY_ACCEPT_LOGPROB).
        others = branch is not None and not (judged and judged[0]["fits"] and request.skip_when_followed)
        if others and request.candidates > 1:
            # The other first tokens offer another first line; how far to go on is the greedy answer's
            # question. Measured on the infill eval (Gemma 3 270M, 3 candidates): as many lines passed
            # with the alternatives cut at their first line as with 4 lines each (41 vs 40), for
            # about half the text to decode and judge.
            one_line = replace(request, stop=_FirstLine(request.stop))
            for token in _alternatives(engine, branch, request.candidates - 1, greedy_token):
                if out_of_time():
                    break
                write(branch, one_line, force=[token])
        # Answers that begin by defining a name the code below reads and nothing above defines
        # (``result = []`` for a ``return result`` below), written as far as the greedy answer goes.
        for name in request.define if others else ():
            if out_of_time():
                break
            forced = _spelled(engine, branch.pending, name)
            if forced and not greedy_text.lstrip().startswith(name):  # else the greedy answer is one
                write(branch, request, force=forced)
        if request.samples and others:
            # Answers sampled from the model: where the greedy answer's second line goes wrong, one of
            # them sometimes does not. Seeded by the text, so the same keystroke gets the same answer.
            sampled = _sampler(engine, zlib.crc32((request.prompt[-4000:] + request.fit_suffix).encode()))
            for _ in range(request.samples):
                if out_of_time():
                    break
                write(branch, request, pick=sampled)
        for entry in judged if first_of else ():
            entry["first"] = first_of.get(entry["origin"])
        _record(request, greedy_text, judged, lambda: [engine.tokenizer.decode([t]) for t in judge.suffix_ids], timing)
    except CannotRewind as exc:
        log.debug("candidates not judged: %s", exc)
        result.text, result.reason, result.candidates, result.cut = greedy_text, greedy_reason, 0, ""
        return
    log.debug("judged %d answers: greedy %.0f ms, other candidates %.0f ms, judging %.0f ms (%d suffix tokens)%s",
              result.candidates, timing["greedy_ms"], timing["others_ms"], timing["judge_ms"], len(judge.suffix_ids),
              f", cut in {result.cut}" if result.cut else "")
    if request.cancel.is_set():
        result.reason = "cancelled"
    if best is None:  # the budget ran out before any answer was judged: the greedy one, by the front's rule
        result.text, result.reason, result.candidates = greedy_text, greedy_reason, 0
        return
    result.text = best[1]
    if best[1] != greedy_text:
        result.reason = "stop"
    if request.alternatives:  # the best of each other first line judged, by score
        first_lines = {first_line_key(best[1])}
        for entry in sorted(judged, key=lambda entry: entry["written"] + entry["suffix"], reverse=True):
            if len(result.alternatives) < request.alternatives and entry["text"].strip() \
                    and not entry["text"].rstrip().endswith(OPENS_A_BLOCK) \
                    and first_line_key(entry["text"]) not in first_lines:  # (a header without its body: no answer)
                first_lines.add(first_line_key(entry["text"]))
                result.alternatives.append(entry["text"])


def _cut_short(result: GenerationResult) -> bool:
    """Whether the greedy answer was cancelled or ran out of time (then ``result.cut`` says so)."""
    if result.reason not in ("cancelled", "deadline"):
        return False
    result.cut = "answer" if result.reason == "deadline" else ""
    return True


def _sampler(engine: "Engine", seed: int) -> Callable[[Any], int]:
    torch = engine._torch
    generator = torch.Generator().manual_seed(seed)

    def pick(logits: Any) -> int:
        top = logits.float().topk(SAMPLE_TOP_K)
        probs = torch.softmax(top.values / SAMPLE_TEMPERATURE, -1).cpu()
        return int(top.indices[int(torch.multinomial(probs, 1, generator=generator))])
    return pick


def _spelled(engine: "Engine", pending: str, name: str) -> list[int]:
    """Tokens that write ``pending`` (healing's text still owed) and then ``name``; [] when the
    tokenizer cannot spell them on their own (a leading space it would add, say)."""
    tokens = engine.encode_plain(pending + name)
    return tokens if engine.tokenizer.decode(tokens, skip_special_tokens=True) == pending + name else []


class _FirstLine:
    """A stop rule: ``stop``, and also the end of the first line that holds code. After each call,
    ``line_ended`` tells whether that line's end ends the text, ``rule_ended`` whether ``stop`` does (both
    where they cut at the same place)."""

    def __init__(self, stop: Callable[[str], int | None]):
        self.stop, self.line_ended, self.rule_ended = stop, False, False

    def __call__(self, text: str) -> int | None:
        rule = self.stop(text)
        start = len(text) - len(text.lstrip())
        end = text.find("\n", start) if text.strip() else -1
        self.rule_ended = rule is not None and (end < 0 or rule <= end)
        self.line_ended = end >= 0 and (rule is None or end <= rule)
        return rule if self.rule_ended else (end if end >= 0 else None)


def _record(request: "GenerationRequest", greedy: str, judged: list[dict], pieces: Callable[[], list[str]],
            timing: dict[str, float]) -> None:
    path = os.environ.get(JUDGE_LOG)
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as file:
            file.write(json.dumps({"suffix": request.fit_suffix, "greedy": greedy, "judged": judged,
                                   "suffix_tokens": pieces(), **{k: round(v, 1) for k, v in timing.items()}}) + "\n")
    except OSError as exc:  # a tuning aid: never the reason a completion fails
        log.warning("cannot record the judgement in %s: %s", path, exc)


def _first_line_tokens(engine: "Engine", ids: list[int], suffix: str) -> int:
    """How many of ``ids`` (the suffix's tokens) it takes to write the suffix's first line of code; 0 if none."""
    start = len(suffix) - len(suffix.lstrip())
    if start == len(suffix):
        return 0
    end = suffix.find("\n", start)
    end = len(suffix) if end < 0 else end
    for count in range(1, len(ids) + 1):
        if len(engine.tokenizer.decode(ids[:count], skip_special_tokens=True)) >= end:
            return count
    return 0  # cut off by MAX_SUFFIX_TOKENS: not all of it is judged


def line_ends(text: str) -> list[str]:
    """The answers a candidate offers: its text up to the end of each non-blank line."""
    ends, offset = [], 0
    for line in text.split("\n"):
        offset += len(line)
        if line.strip():
            ends.append(text[:offset].rstrip())
        offset += 1
    return ends


def _alternatives(engine: "Engine", branch: Branch, count: int, greedy_token: int | None) -> list[int]:
    """The best tokens at the branch other than the greedy one that write code (healing respected), none
    less likely than ``ALTERNATIVE_MAX_GAP`` below the greedy one."""
    torch = engine._torch
    logits = branch.logits
    floor = float(logits[greedy_token]) - ALTERNATIVE_MAX_GAP if greedy_token is not None else None
    if branch.pending:
        allowed = engine.vocabulary.allowed(branch.pending)
        index = torch.tensor(allowed, device=logits.device)
        values = logits.index_select(0, index)
        order = [allowed[int(i)] for i in values.topk(min(TOP_TOKENS, len(allowed))).indices]
    else:
        order = [int(i) for i in logits.topk(min(TOP_TOKENS, logits.shape[-1])).indices]
    chosen: list[int] = []
    for token in order:
        if floor is not None and float(logits[token]) < floor:
            break  # (logits differ by what log-probabilities do: the same softmax divides them)
        if token == greedy_token or token in engine.eos_ids:
            continue
        text = engine.tokenizer.decode([token], skip_special_tokens=True)
        if branch.pending:
            text = text[len(branch.pending):] if text.startswith(branch.pending) else ""
        if text.strip() and "\ufffd" not in text:
            chosen.append(token)
            if len(chosen) == count:
                break
    return chosen


def _logprobs_of(torch: Any, logits: Any, tokens: list[int]) -> Any:
    """Each of ``tokens``' log-probability under the row of ``logits`` that predicts it."""
    target = torch.tensor(tokens, device=logits.device)
    return torch.log_softmax(logits.float(), dim=-1).gather(1, target[:, None])[:, 0]


class _Judge:
    """Scores answers by the log-likelihood of the suffix after them, keeping track of the KV cache."""

    def __init__(self, engine: "Engine", kv: Any, prompt_length: int, healed: str, suffix: str):
        self.engine, self.kv, self.prompt_length, self.healed = engine, kv, prompt_length, healed
        self.suffix_ids = engine.encode_plain(suffix)[:MAX_SUFFIX_TOKENS]
        self.first_line = _first_line_tokens(engine, self.suffix_ids, suffix)  # the code below's first line
        self.held: list[int] = []  # the tokens in the KV cache after the prompt
        self.detail: list[list] = []  # the last score's tokens, for the judgement log
        self.pruned = False  # the last score stopped at the bound (a partial score, at most what it bounds)

    def rewind(self, tokens: list[int]) -> None:
        """Make the KV cache hold the prompt and then ``tokens``."""
        self._cut(common_prefix(self.held, tokens))
        if len(self.held) < len(tokens):
            self.engine._forward(tokens[len(self.held):], self.kv)
            self.held = list(tokens)

    def resume(self, tokens: list[int]) -> Any:
        """Make the KV cache hold the prompt and then ``tokens``; the logits after them."""
        self._cut(min(common_prefix(self.held, tokens), len(tokens) - 1))
        logits = self.engine._forward(tokens[len(self.held):], self.kv)
        self.held = list(tokens)
        return logits

    def score(self, text: str, first_line_only: bool = False, bound: float | None = None) -> tuple[float, bool]:
        """log P(suffix | prompt, answer), and whether the suffix's first line is likely enough next to accept
        the answer at once (``EARLY_ACCEPT_LOGPROB``); ``first_line_only``: of the suffix's first line alone.

        ``bound``: the score the answer must beat to matter. Every log-probability is at most 0, so once the
        suffix's first ``BOUND_TOKENS`` make it ``bound`` or less, the rest cannot lift it: that partial score
        is returned (``self.pruned``) and the rest goes unscored; else the pass goes on in the same cache.
        """
        torch = self.engine._torch
        answer = self.engine.encode_plain(self.healed + text)
        suffix = self.suffix_ids[: self.first_line] if first_line_only else self.suffix_ids
        self.pruned = False
        if not answer or not suffix:
            return 0.0, False
        # Run at least the answer's last token: its logits predict the suffix's first.
        self._cut(min(common_prefix(self.held, answer), len(answer) - 1))
        feed = answer[len(self.held):]
        staged = bound is not None and len(suffix) > BOUND_TOKENS + 4  # (a second pass of a few tokens at least)
        head = suffix[:BOUND_TOKENS] if staged else suffix
        rows = self.engine._forward_keep(feed + head, self.kv, len(head) + 1)  # the last predicts what follows
        self.held = answer + head
        per_token = _logprobs_of(torch, rows[:-1], head)
        if staged:
            if float(per_token.sum()) <= bound:
                self.pruned, self.detail = True, []
                return float(per_token.sum()), False
            rest = suffix[len(head):]  # after the head already in the cache
            rows = torch.cat([rows, self.engine._forward_keep(rest, self.kv, len(rest))])
            per_token = torch.cat([per_token, _logprobs_of(torch, rows[len(head):-1], rest)])
            self.held = answer + suffix
        if os.environ.get(JUDGE_LOG):  # per suffix token: its log-probability, and whether greedy would write it
            greedy = rows[:-1].argmax(-1) == torch.tensor(suffix, device=rows.device)
            self.detail = [[round(float(p), 3), bool(g)] for p, g in zip(per_token, greedy)]
        followed = bool(self.first_line) and float(per_token[: self.first_line].mean()) >= EARLY_ACCEPT_LOGPROB
        return float(per_token.sum()), followed

    def _cut(self, keep: int) -> None:
        if not crop(self.kv, self.prompt_length + keep):
            raise CannotRewind(f"cannot cut the KV cache back to {self.prompt_length + keep} tokens")
        self.held = self.held[:keep]
