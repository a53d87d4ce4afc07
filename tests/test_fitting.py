"""Answers judged by the code after the cursor: which cursors get candidates, and the engine's choice."""

from __future__ import annotations

import json
import time
import threading
from dataclasses import replace

import pytest
import torch
from pygls.workspace import TextDocument

from phils.config import EngineSettings
from phils.engine import Engine, GenerationRequest, load_model
from phils.engine.decoding import fitting
from phils.engine.decoding.fitting import line_ends
from phils.lsp import postprocess
from phils.lsp.documents import cursor_context
from phils.stoprule import Shape, leaves_open, stop_index

torch.set_num_threads(1)
CURSOR = "█"


def context(marked: str):
    before, after = marked.split(CURSOR)
    lines = before.split("\n")
    return cursor_context(TextDocument("file:///t.py", before + after), len(lines) - 1, len(lines[-1]))


def fitted(marked: str):
    ctx = context(marked)
    return postprocess.fitted(ctx, postprocess.shape_of(ctx))


def test_a_blank_line_inside_a_body_gets_candidates_of_a_few_lines_judged_by_the_next_three():
    shape, judged = fitted(
        "def f(xs):\n    total = 0\n    █\n    for x in xs:\n        total += x\n    return total\n\n\nprint(f([1]))\n")
    assert judged == "\n    for x in xs:\n        total += x\n    return total"
    assert not shape.statement and not shape.single_line and shape.max_lines == postprocess.FIT_LINES
    assert shape.resume == "for x in xs:"


def test_the_last_line_of_a_branch_before_its_else_gets_candidates():
    shape, judged = fitted("def f(x):\n    if x:\n        y = 1\n        █\n    else:\n        y = 2\n    return y\n")
    assert judged.split("\n")[1:] == ["    else:", "        y = 2", "    return y"]


def test_an_answer_may_close_the_cursors_block_but_not_leave_the_function():
    shape, judged = fitted("class A:\n    def fib(self, n):\n        if n == 0:\n            █\n        return n\n")
    assert judged and shape.min_indent == 5 and postprocess.shape_of(context(  # deeper than the def
        "class A:\n    def fib(self, n):\n        if n == 0:\n            █\n        return n\n")).min_indent == 12
    answer = "return 0\n        if n == 1:\n            return 1\n    def other(self):\n"
    assert stop_index(answer, shape) == len("return 0\n        if n == 1:\n            return 1")


def test_an_empty_body_before_the_next_function_is_a_whole_block():
    ctx = context('def f(x):\n    """Double x."""\n    █\n\n\ndef g():\n    pass\n')
    shape = postprocess.shape_of(ctx)
    fit, judged = postprocess.fitted(ctx, shape)
    assert judged == "" and fit.max_lines == shape.max_lines and not fit.single_line
    assert stop_index("return 2 * x\n\n\ndef h():\n", fit) == len("return 2 * x")


def test_the_end_of_a_nested_function_is_a_block_down_to_its_body_not_one_branch():
    # HumanEval/39: `return False` in the loop's branch, and the function still needs `return True`.
    marked = ("def prime_fib(n):\n    def is_prime(p):\n        for k in range(2, p):\n            if p % k == 0:\n"
              "                █\n    f = [0, 1]\n    return f\n")
    shape, judged = fitted(marked)
    assert judged == "" and not shape.single_line and shape.max_lines > 1
    assert shape.min_indent == 5 and postprocess.shape_of(context(marked)).min_indent == 16
    answer = "return False\n        return True\n    f = [0, 1]\n"
    assert stop_index(answer, shape) == len("return False\n        return True")


def test_nothing_below_the_cursor_is_a_whole_block():
    ctx = context('def f(x):\n    """Double x."""\n    █')
    shape = postprocess.shape_of(ctx)
    assert postprocess.fitted(ctx, shape) == (shape, "")


def test_text_after_the_cursor_keeps_one_line_and_is_judged_with_the_rest_of_it():
    shape, judged = fitted("def f(x):\n    return g(█)\n\n\nprint(f(2))\n")
    assert shape.single_line
    assert judged.startswith(")\n")


def test_the_end_of_a_line_being_typed_gets_the_plain_rest_of_the_line_unjudged():
    ctx = context("def f(xs):\n    total = su█\n    return total\n")
    shape = postprocess.shape_of(ctx)
    assert postprocess.fitted(ctx, shape) == (shape, "")
    assert shape.statement  # one statement: the rest of the line (or a compound statement's header and body)


def test_an_answer_may_end_at_any_of_its_non_blank_lines():
    assert line_ends("a = 1\n\n    if a:\n        b\n") == ["a = 1", "a = 1\n\n    if a:", "a = 1\n\n    if a:\n        b"]
    assert line_ends("") == []


# --- the engine's choice, on the tiny random Phi --------------------------------

# The random model writes noise, at any indentation: the block may hold any of it.
def test_a_python_line_of_its_own_asks_for_the_names_only_it_can_define():
    def define(marked, uri="file:///t.py"):
        before, after = marked.split(CURSOR)
        lines = before.split("\n")
        ctx = cursor_context(TextDocument(uri, before + after), len(lines) - 1, len(lines[-1]))
        return postprocess.names_to_define(ctx, postprocess.shape_of(ctx))

    nested = "def f(xs):\n    for x in xs:\n        █\n        seen.add(x)\n    return seen, other\n\n\ndef g():\n    return more\n"
    assert define(nested) == ("seen", "other")  # the whole function below, not the next one
    assert define(nested, "file:///t.js") == ()  # Python only
    assert define("def f(xs):\n    y = █\n    return z\n") == ()  # after code on the line: not a line of its own
    assert define("x = 1\n█\nprint(y)\n") == ("y",)  # module level


PROMPT = 'import os\n\n\ndef add(a, b):\n    """Return the sum of a and b."""\n    total = a + b\n    '
SUFFIX = "\n    return total\n\n\nprint(add(1, 2))"
BLOCK = Shape(single_line=False, min_indent=0, line_prefix="    ", max_lines=4)


@pytest.fixture(scope="module")
def loaded(tiny_model):
    return load_model(EngineSettings(model=str(tiny_model), threads=1))


def fresh(loaded, cache_bytes=2**30) -> Engine:
    return Engine(loaded, context_tokens=2048, cache_bytes=cache_bytes)


def request(key: str, prompt: str = PROMPT, **fields) -> GenerationRequest:
    return GenerationRequest(key, prompt, max_new_tokens=48, stop=lambda text: stop_index(text, BLOCK), heal=False,
                             **fields)


def document_logprob(engine: Engine, prompt: str, answer: str, suffix: str) -> float:
    """log P(answer, suffix | prompt), computed from scratch in one forward pass."""
    prompt_ids = engine.encode(prompt)
    ids = prompt_ids + engine.encode_plain(answer) + engine.encode_plain(suffix)
    with torch.inference_mode():
        logits = engine.loaded.model(input_ids=torch.tensor([ids])).logits[0]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return float(sum(logprobs[i - 1, ids[i]] for i in range(len(prompt_ids), len(ids))))


def test_the_chosen_answer_is_the_line_end_that_makes_the_document_most_likely(loaded):
    engine = fresh(loaded)
    greedy = fresh(loaded).generate(request("plain"))
    chosen = engine.generate(request("fit", fit_suffix=SUFFIX))
    answers = line_ends(greedy.text)
    if greedy.reason == "length":
        answers.pop()  # an unfinished last line is no answer
    assert chosen.candidates == len(answers) >= 2  # a real choice
    assert chosen.text in answers
    scores = {answer: document_logprob(engine, PROMPT, answer, SUFFIX) for answer in answers}
    assert scores[chosen.text] >= max(scores.values()) - 1e-3, scores


def test_more_candidates_are_judged_and_the_cache_stays_exact_afterwards(loaded):
    cached, uncached = fresh(loaded), fresh(loaded, cache_bytes=0)
    one = fresh(loaded).generate(request("one", fit_suffix=SUFFIX, candidates=1))
    three = cached.generate(request("doc", fit_suffix=SUFFIX, candidates=3))
    assert three.candidates > one.candidates
    assert three.new_tokens > one.new_tokens
    # The document's cache holds the prompt again: the next keystroke reuses it and answers as a fresh engine does.
    typed = PROMPT + "    total"
    after = cached.generate(request("doc", typed))
    assert after.reused_tokens > 0
    assert after.text == uncached.generate(request("doc", typed)).text


def test_the_other_first_tokens_offer_one_line_each_and_every_judgement_can_be_recorded(loaded, tmp_path, monkeypatch):
    log = tmp_path / "judged.jsonl"
    monkeypatch.setenv(fitting.JUDGE_LOG, str(log))
    greedy = fresh(loaded).generate(request("plain"))
    three = fresh(loaded).generate(request("doc", fit_suffix=SUFFIX, candidates=3))
    record = json.loads(log.read_text().splitlines()[-1])
    assert record["suffix"] == SUFFIX and record["greedy"] == greedy.text
    judged = record["judged"]
    assert len(judged) == three.candidates and three.text in [j["text"] for j in judged]
    others = [j for j in judged if j["origin"] > 0]
    assert others and all("\n" not in j["text"].strip() for j in others)
    assert [j["text"] for j in judged if j["origin"] == 0] == [a for a in line_ends(greedy.text)][: len(judged) - len(others)]


def test_outside_python_only_answers_that_close_the_brackets_they_open_are_judged(loaded, tmp_path, monkeypatch):
    log = tmp_path / "judged.jsonl"
    monkeypatch.setenv(fitting.JUDGE_LOG, str(log))
    greedy = fresh(loaded).generate(request("plain"))
    ends = line_ends(greedy.text)
    if greedy.reason == "length":
        ends.pop()
    assert any(leaves_open(end) for end in ends)  # the random model's answer opens a bracket it leaves open
    result = fresh(loaded).generate(request("doc", fit_suffix=SUFFIX, candidates=1, closes_brackets=True))
    judged = [j["text"] for j in json.loads(log.read_text().splitlines()[-1])["judged"]]
    assert judged == [end for end in ends if not leaves_open(end)]
    assert result.candidates == len(judged)
    if not judged:  # none to judge: the greedy answer, for the front's own rule
        assert result.text == greedy.text
    assert all(leaves_open(end) for end in ends) or not leaves_open(result.text)


def test_a_judgement_log_that_cannot_be_written_does_not_fail_the_completion(loaded, tmp_path, monkeypatch):
    monkeypatch.setenv(fitting.JUDGE_LOG, str(tmp_path / "missing-folder" / "judged.jsonl"))
    result = fresh(loaded).generate(request("doc", fit_suffix=SUFFIX))
    assert result.candidates >= 1 and result.reason != "error"


def test_an_alternative_first_token_is_written_to_the_end_of_its_first_line_of_code():
    one_line = fitting._FirstLine(lambda text: None)
    assert one_line("x = 1") is None and not one_line.line_ended  # not yet
    assert one_line("x = 1\n    y = 2") == len("x = 1") and one_line.line_ended and not one_line.rule_ended
    assert one_line("\n    x = 1\n    y") == len("\n    x = 1")  # blank lines first are not a line of code
    by_rule = fitting._FirstLine(lambda text: 2)
    assert by_rule("x = 1\n") == 2 and by_rule.rule_ended and not by_rule.line_ended  # the block's own rule applies
    both = fitting._FirstLine(lambda text: 5)
    assert both("x = 1\n") == 5 and both.rule_ended and both.line_ended


def test_a_cancelled_choice_stops_and_says_so(loaded):
    cancel = threading.Event()
    cancel.set()
    result = fresh(loaded).generate(request("doc", fit_suffix=SUFFIX, candidates=3, cancel=cancel))
    assert result.reason == "cancelled" and result.new_tokens == 0


def test_past_its_deadline_the_greedy_answer_is_not_judged(loaded):
    import time

    result = fresh(loaded).generate(request("doc", fit_suffix=SUFFIX, deadline=time.monotonic(),
                                            finish_first_line=False))
    assert result.reason == "deadline" and result.candidates == 0 and result.new_tokens == 1 and result.cut == "answer"


def test_a_name_the_code_below_needs_gets_answers_that_begin_by_defining_it(loaded, tmp_path, monkeypatch):
    log = tmp_path / "judged.jsonl"
    monkeypatch.setenv(fitting.JUDGE_LOG, str(log))
    prompt = 'def add(a, b):\n    """Return the sum of a and b."""\n    '
    suffix = "\n    return total\n"
    without = fresh(loaded).generate(request("doc", prompt, fit_suffix=suffix, candidates=1))
    cached, uncached = fresh(loaded), fresh(loaded, cache_bytes=0)
    defined = cached.generate(request("doc", prompt, fit_suffix=suffix, candidates=1, define=("total",)))
    judged = json.loads(log.read_text().splitlines()[-1])["judged"]
    forced = [j for j in judged if j["origin"] > 0]
    assert forced and all(j["text"].startswith("total") for j in forced)
    assert defined.candidates == without.candidates + len(forced)
    assert defined.new_tokens > without.new_tokens
    # Every judged answer kept its own log-probability: the forced tokens' cost included.
    chosen = max(judged, key=lambda j: j["written"] + j["suffix"])
    assert defined.text == chosen["text"]
    # The cache is exact afterwards.
    typed = prompt + "t"
    assert cached.generate(request("doc", typed)).text == uncached.generate(request("doc", typed)).text


def test_a_name_is_forced_only_where_the_tokenizer_spells_it_alone(loaded):
    engine = fresh(loaded)
    tokens = fitting._spelled(engine, "", "total")
    assert tokens and engine.tokenizer.decode(tokens) == "total"
    assert engine.tokenizer.decode(fitting._spelled(engine, "  ", "total")) == "  total"


def test_sampled_answers_are_judged_too_and_the_same_text_gets_the_same_answer(loaded, tmp_path, monkeypatch):
    log = tmp_path / "judged.jsonl"
    monkeypatch.setenv(fitting.JUDGE_LOG, str(log))
    plain = fresh(loaded).generate(request("doc", fit_suffix=SUFFIX, candidates=1))
    cached, uncached = fresh(loaded), fresh(loaded, cache_bytes=0)
    first = cached.generate(request("doc", fit_suffix=SUFFIX, candidates=1, samples=3))
    judged = json.loads(log.read_text().splitlines()[-1])["judged"]
    assert {j["origin"] for j in judged} - {0}  # some sampled answer wrote a line the greedy one did not
    assert first.new_tokens > plain.new_tokens and first.candidates >= plain.candidates
    again = fresh(loaded).generate(request("doc", fit_suffix=SUFFIX, candidates=1, samples=3))
    assert again.text == first.text
    typed = PROMPT + "    total"
    assert cached.generate(request("doc", typed)).text == uncached.generate(request("doc", typed)).text


def test_when_the_budget_runs_out_while_judging_the_best_answer_judged_so_far_is_shown(loaded, monkeypatch):
    """The budget cut after the first judgement: that answer comes back, and the cut is reported."""
    score = fitting._Judge.score
    calls = []

    def score_then_run_out(self, text, **options):
        calls.append(text)
        outcome = score(self, text, **options)
        holder["request"].deadline = time.monotonic()  # the budget is spent from here on
        return outcome

    holder = {}
    monkeypatch.setattr(fitting._Judge, "score", score_then_run_out)
    cut = request("doc", fit_suffix=SUFFIX, candidates=3, skip_when_followed=False)
    holder["request"] = cut
    result = fresh(loaded).generate(cut)
    assert len(calls) == 1 and result.candidates == 1 and result.cut == "judging"
    assert result.text and result.text == calls[0]  # the greedy answer's first line end: never nothing


def test_no_request_runs_past_its_budget_by_more_than_one_pass(loaded, monkeypatch):
    """Every forward pass made slow (0.1 s): a 0.5 s budget, counted once the prompt is computed, ends
    within one more pass, with an answer."""
    engine = fresh(loaded)
    forward = engine.runtime.forward

    def slow(ids, kv, keep):
        time.sleep(PASS_S)
        return forward(ids, kv, keep)

    monkeypatch.setattr(engine.runtime, "forward", slow)
    started = time.monotonic()
    result = engine.generate(request("doc", fit_suffix=SUFFIX, candidates=3, skip_when_followed=False,
                                     budget_ms=500, finish_first_line=False))
    waited = time.monotonic() - started - result.first_token_ms / 1000  # the prompt's pass is not budgeted
    assert 0.5 <= waited <= 0.5 + PASS_S + 0.15, waited
    assert result.cut in ("answer", "judging") and result.text


PASS_S = 0.1


def test_where_the_greedy_first_line_fits_no_other_candidate_is_written(loaded, monkeypatch, tmp_path):
    """Early accept: once the code below's first line is likely after the greedy answer's first line, only
    the greedy answer's own line ends are judged; asked to judge everything, the same engine writes more."""
    log = tmp_path / "judged.jsonl"
    monkeypatch.setenv(fitting.JUDGE_LOG, str(log))
    score = fitting._Judge.score
    monkeypatch.setattr(fitting._Judge, "score", lambda self, text, **kw: (score(self, text, **kw)[0], True))
    shown = fresh(loaded).generate(request("a", fit_suffix=SUFFIX, candidates=3, define=("total",)))
    judged = json.loads(log.read_text().splitlines()[-1])["judged"]
    every = fresh(loaded).generate(request("a", fit_suffix=SUFFIX, candidates=3, define=("total",),
                                           skip_when_followed=False))
    assert judged and {j["origin"] for j in judged} == {0} and shown.candidates == len(judged)
    assert every.candidates > shown.candidates and every.new_tokens > shown.new_tokens and shown.text


def test_the_code_below_s_first_line_is_counted_in_its_own_tokens(loaded):
    engine = fresh(loaded)
    ids = engine.encode_plain(SUFFIX)
    count = fitting._first_line_tokens(engine, ids, SUFFIX)
    written = engine.tokenizer.decode(ids[:count])
    assert "return total" in written and "print" not in written
    assert "return total" not in engine.tokenizer.decode(ids[: count - 1])
    assert fitting._first_line_tokens(engine, engine.encode_plain("\n\n"), "\n\n") == 0


def test_the_budget_lets_the_first_line_end_but_nothing_after_it():
    from phils.engine.decoding.generate import _holds_a_line

    assert not _holds_a_line("self.initial_") and not _holds_a_line("\n    ") and not _holds_a_line("")
    assert _holds_a_line("x = 1\n    y") and _holds_a_line("\n    x = 1\n")


MID_LINE = PROMPT + "total"  # the cursor after code on its line


def test_mid_line_a_first_line_that_fits_is_the_answer_without_writing_further_lines(loaded, monkeypatch, tmp_path):
    """Mid-line, the greedy answer is written to the end of the line being typed and judged by the code
    below's first line alone; when that fits, no further line is written. The cache is exact afterwards."""
    log = tmp_path / "judged.jsonl"
    monkeypatch.setenv(fitting.JUDGE_LOG, str(log))
    score, fed = fitting._Judge.score, []

    def always_fits(self, text, first_line_only=False, bound=None):
        fed.append(first_line_only)
        return score(self, text, first_line_only, bound)[0], True

    monkeypatch.setattr(fitting._Judge, "score", always_fits)
    whole = fresh(loaded).generate(request("a", MID_LINE, fit_suffix=SUFFIX, candidates=3))
    cached, uncached = fresh(loaded), fresh(loaded, cache_bytes=0)
    line = cached.generate(request("a", MID_LINE, fit_suffix=SUFFIX, candidates=3, line_first=True))
    greedy = fresh(loaded).generate(request("p", MID_LINE))
    assert len(line_ends(greedy.text)) > 1  # the greedy answer goes on past the line being typed
    assert line.text.rstrip() == line_ends(greedy.text)[0] and line.candidates == 1 and fed[-1] is True
    assert line.new_tokens < whole.new_tokens
    record = json.loads(log.read_text().splitlines()[-1])
    assert record["judged"][0]["first_line_only"] and len(record["judged"]) == 1
    typed = MID_LINE + line.text[:3]
    assert cached.generate(request("a", typed)).text == uncached.generate(request("a", typed)).text


def test_mid_line_a_first_line_that_does_not_fit_is_judged_as_without_line_first(loaded, monkeypatch):
    """Where the first line does not fit, the greedy answer is written on from where it stopped: the same
    candidates and the same choice as judging everything at once, and an exact cache."""
    score = fitting._Judge.score
    monkeypatch.setattr(fitting._Judge, "score", lambda self, text, first_line_only=False, bound=None: (
        score(self, text, first_line_only, bound)[0], False))
    whole = fresh(loaded).generate(request("a", MID_LINE, fit_suffix=SUFFIX, candidates=3))
    cached, uncached = fresh(loaded), fresh(loaded, cache_bytes=0)
    resumed = cached.generate(request("a", MID_LINE, fit_suffix=SUFFIX, candidates=3, line_first=True))
    assert (resumed.text, resumed.candidates) == (whole.text, whole.candidates) and whole.candidates > 1
    assert resumed.new_tokens == whole.new_tokens
    typed = MID_LINE + "_x"
    assert cached.generate(request("a", typed)).text == uncached.generate(request("a", typed)).text


def test_mid_line_a_first_line_that_opens_a_block_is_no_answer_alone_where_the_code_below_is_not_its_body(
        loaded, monkeypatch):
    """`if (this.` + `count > 0) {`: fitting the `}` below (the method's end), the line alone would take
    that `}` for its own and leave the method unclosed. In brace languages it is written on and judged as
    without line first, unless the code below is indented as its body (the shape allows one line)."""
    score = fitting._Judge.score
    monkeypatch.setattr(fitting._Judge, "score", lambda self, text, first_line_only=False, bound=None: (
        score(self, text, first_line_only, bound)[0], True))
    monkeypatch.setattr(fitting, "leaves_open", lambda text, comment="": "\n" not in text.strip())
    braces = {"fit_suffix": SUFFIX, "candidates": 3, "line_first": True, "closes_brackets": True, "comment": "//"}
    greedy = fresh(loaded).generate(request("p", MID_LINE))
    body = fresh(loaded).generate(request("a", MID_LINE, shape=replace(BLOCK, max_lines=1), **braces))
    assert body.text.rstrip() == line_ends(greedy.text)[0] and body.candidates == 1
    below = fresh(loaded).generate(request("a", MID_LINE, shape=BLOCK, **braces))
    assert below.text.rstrip() != body.text.rstrip() and below.new_tokens > body.new_tokens  # written on


def test_the_engine_judges_the_line_first_only_where_code_precedes_the_cursor_on_its_line():
    from phils.engine.serving.service import CancelFlag, generation_request
    from phils.protocol import EngineJob

    def asked(line_prefix: str | None, early_accept: bool = True) -> GenerationRequest:
        shape = None if line_prefix is None else Shape(single_line=False, min_indent=0, line_prefix=line_prefix,
                                                       max_lines=4)
        job = EngineJob(document="d", prompt="p", max_new_tokens=8, shape=shape, fit_suffix="\n    x", early_accept=early_accept)
        return generation_request(job, CancelFlag())

    assert asked("    total").line_first and asked("    total").skip_when_followed
    assert not asked("    ").line_first and not asked("").line_first and not asked(None).line_first
    assert not asked("    total", early_accept=False).skip_when_followed  # judged-all: every candidate, always


def test_another_first_line_is_written_only_from_a_token_near_the_greedy_ones_probability():
    from types import SimpleNamespace

    from phils.engine.decoding.branch import Branch

    words = {0: "x", 1: " y", 2: " z", 3: " w"}
    engine = SimpleNamespace(_torch=torch, eos_ids=set(), tokenizer=SimpleNamespace(
        decode=lambda ids, skip_special_tokens=True: "".join(words[i] for i in ids)))
    gap = fitting.ALTERNATIVE_MAX_GAP
    # Greedy `x`; `y` 1 below it; `z` just inside the gap; `w` past it (under e^-gap of x's probability).
    logits = torch.tensor([10.0, 9.0, 10.0 - gap + 0.1, 10.0 - gap - 0.1])
    branch = Branch(generated=[], scores=[], pending="", logits=logits, kv_length=0)
    assert fitting._alternatives(engine, branch, 3, greedy_token=0) == [1, 2]
    assert fitting._alternatives(engine, branch, 1, greedy_token=0) == [1]


@torch.inference_mode()
def test_a_candidate_that_cannot_beat_the_best_stops_being_scored_and_the_rest_stays_exact(loaded, monkeypatch):
    """Log-probabilities are at most 0: once an answer's first suffix tokens put it at or below the best so far,
    the rest of the suffix cannot lift it. The partial score is returned, and the cache stays exact."""
    monkeypatch.setenv(fitting.JUDGE_LOG, "/dev/null")  # (per-token detail kept for the comparison)
    engine = fresh(loaded)
    suffix = SUFFIX + "\nprint(add(3, 4))\nprint(add(5, 6))\n"
    ids = engine.encode(PROMPT)

    def judge():
        kv = engine.runtime.new_kv(4096)
        engine._forward(ids, kv)
        return fitting._Judge(engine, kv, len(ids), "", suffix)

    whole = judge()
    assert len(whole.suffix_ids) > fitting.BOUND_TOKENS + 4
    first, _ = whole.score("total += 1")
    head = sum(p for p, _ in whole.detail[: fitting.BOUND_TOKENS])
    second, _ = whole.score("return total")

    bounded = judge()
    partial, followed = bounded.score("total += 1", bound=0.0)  # nothing is above 0: stops after the head
    assert bounded.pruned and not followed and partial == pytest.approx(head, abs=1e-3)
    assert bounded.score("return total")[0] == pytest.approx(second, abs=1e-3)  # after a pruned one: exact
    assert not bounded.pruned
    unbeaten, _ = bounded.score("total += 1", bound=-1e9)  # far below: scored whole, in two passes
    assert not bounded.pruned and unbeaten == pytest.approx(first, abs=1e-3)


def test_with_the_bound_the_same_answer_is_chosen(loaded, monkeypatch):
    suffix = SUFFIX + "\nprint(add(3, 4))\nprint(add(5, 6))\n"
    bounded = fresh(loaded).generate(request("a", fit_suffix=suffix, candidates=3))
    score = fitting._Judge.score
    monkeypatch.setattr(fitting._Judge, "score", lambda self, text, first_line_only=False, bound=None: score(
        self, text, first_line_only))
    whole = fresh(loaded).generate(request("a", fit_suffix=suffix, candidates=3))
    assert (bounded.text, bounded.candidates) == (whole.text, whole.candidates) and whole.candidates > 1


def test_an_explicit_request_gets_the_best_judged_answer_of_each_other_first_line(loaded, tmp_path, monkeypatch):
    """The judged candidates that lost are the alternatives to cycle through: by score, one per first line."""
    from phils.engine.decoding.second_choice import first_line_key

    log = tmp_path / "judged.jsonl"
    monkeypatch.setenv(fitting.JUDGE_LOG, str(log))
    asked = fresh(loaded).generate(request("doc", fit_suffix=SUFFIX, candidates=3, skip_when_followed=False,
                                           alternatives=2))
    judged = json.loads(log.read_text().splitlines()[-1])["judged"]
    plain = fresh(loaded).generate(request("doc", fit_suffix=SUFFIX, candidates=3, skip_when_followed=False))
    assert asked.text == plain.text and not plain.alternatives
    assert asked.alternatives  # the tiny model's other first tokens give other first lines
    keys = [first_line_key(text) for text in (asked.text, *asked.alternatives)]
    assert len(set(keys)) == len(keys)
    score = {j["text"]: j["written"] + j["suffix"] for j in judged}
    for text in asked.alternatives:  # each the best of the judged answers with its first line
        assert score[text] == max(s for t, s in score.items() if first_line_key(t) == first_line_key(text)
                                  and not t.rstrip().endswith(fitting.OPENS_A_BLOCK))
    assert [score[t] for t in asked.alternatives] == sorted((score[t] for t in asked.alternatives), reverse=True)
