"""Where the stop rule leaves nothing of the greedy answer, the next best answer at its least certain token."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from phils.config import EngineSettings
from phils.engine import Engine, GenerationRequest, load_model

torch.set_num_threads(1)
PROMPT = "def add(a, b):\n    total = a + b\n    "
REJECTED_TOKENS = 6  # the greedy answer's first tokens, which the stop rule below refuses
MAX_CHARS = 40


@pytest.fixture(scope="module")
def loaded(tiny_model):
    return load_model(EngineSettings(model=str(tiny_model), threads=1))


def fresh(loaded) -> Engine:
    return Engine(loaded, context_tokens=2048, cache_bytes=2**30)


def greedy_tokens(engine: Engine) -> list[int]:
    ids = engine.encode(PROMPT)
    out = []
    with torch.inference_mode():
        for _ in range(REJECTED_TOKENS):
            logits = engine.loaded.model(input_ids=torch.tensor([ids + out])).logits[0, -1]
            out.append(int(logits.argmax()))
    return out


def refusing(rejected: str):
    """A stop rule that leaves nothing of an answer beginning with ``rejected`` (as one that writes the code
    below again does), and ends any other at MAX_CHARS."""
    def stop(text: str) -> int | None:
        if text.startswith(rejected):
            return 0
        return MAX_CHARS if len(text) >= MAX_CHARS else None
    return stop


def ask(engine: Engine, key: str, stop, candidates: int):
    return engine.generate(GenerationRequest(key, PROMPT, max_new_tokens=32, stop=stop, heal=False,
                                             candidates=candidates))


def test_an_answer_the_stop_rule_empties_gives_way_to_the_next_best_at_its_least_certain_token(loaded):
    engine = fresh(loaded)
    tokens = greedy_tokens(engine)
    rejected = engine.tokenizer.decode(tokens, skip_special_tokens=True)
    assert rejected.strip(), "the tiny model writes code first"
    stop = refusing(rejected)

    alone = ask(fresh(loaded), "doc", stop, candidates=1)
    assert alone.text == "" and alone.reason == "stop" and alone.second_choice == ""  # what the editor got before

    answer = ask(engine, "doc", stop, candidates=2)
    assert answer.text.strip() and not answer.text.startswith(rejected) and answer.second_choice == "answered"

    # The place, computed here from one pass of the model over the prompt and the rejected tokens: where the
    # greedy token led the best other token (not EOS, writing text) by the least.
    ids = engine.encode(PROMPT)
    with torch.inference_mode():
        logprobs = torch.log_softmax(engine.loaded.model(input_ids=torch.tensor([ids + tokens])).logits[0].float(), -1)
    margins = []
    for index, token in enumerate(tokens):
        row = logprobs[len(ids) - 1 + index]
        other = next(t for t in row.topk(8).indices.tolist() if t != token and t not in engine.eos_ids
                     and "\ufffd" not in engine.tokenizer.decode([t]) and engine.tokenizer.decode(tokens[:index] + [t]).strip())
        margins.append((float(row[token] - row[other]), index, other))
    _, index, other = min(margins)
    assert answer.text.startswith(engine.tokenizer.decode(tokens[:index] + [other], skip_special_tokens=True))


def test_after_a_second_choice_the_cache_still_answers_as_a_fresh_engine(loaded):
    engine = fresh(loaded)
    rejected = engine.tokenizer.decode(greedy_tokens(engine), skip_special_tokens=True)
    ask(engine, "doc", refusing(rejected), candidates=3)
    typed = ask(engine, "doc", refusing("\x00"), candidates=1)
    assert typed.reused_tokens > 0
    assert typed.text == ask(fresh(loaded), "doc", refusing("\x00"), candidates=1).text


def test_a_request_past_its_deadline_gets_no_second_choice(loaded):
    engine = fresh(loaded)
    rejected = engine.tokenizer.decode(greedy_tokens(engine), skip_special_tokens=True)
    request = GenerationRequest("doc", PROMPT, max_new_tokens=32, stop=refusing(rejected), heal=False, candidates=3,
                                deadline=0.0)
    assert engine.generate(request).text == ""


def test_second_choices_are_counted_in_phils_stats_and_the_engines_metrics():
    from types import SimpleNamespace

    from phils.engine.serving.metrics import EngineMetrics
    from phils.lsp.stats import Stats
    from phils.protocol import EngineJob, GenerationResult

    results = [GenerationResult(text="x = 1", reason="stop", second_choice="answered"),
               GenerationResult(text="", reason="stop", second_choice="empty"),
               GenerationResult(text="y = 2", reason="stop")]
    stats = Stats()
    metrics = EngineMetrics(SimpleNamespace(cache_report=lambda: {"bytes": 0, "budget_bytes": 0}, state="ready"))
    for result in results:
        stats.record(result, bool(result.text), 10.0, "" if result.text else "stop rule")
        metrics.record(EngineJob(document="d", prompt="p", max_new_tokens=4), result, 10.0)
    assert stats.as_dict()["second_choices"] == {"answered": 1, "empty": 1}
    text = metrics.exposition().decode()
    assert 'phils_second_choices_total{outcome="answered"} 1.0' in text
    assert 'phils_second_choices_total{outcome="empty"} 1.0' in text


def test_an_answer_that_begins_below_the_cursors_line_gets_no_second_choice(loaded):
    """A model that ends the cursor's line and writes on less indented takes the block as over: nothing goes."""
    from phils.engine.decoding.second_choice import _places

    engine = fresh(loaded)
    vocabulary = len(engine.tokenizer)
    rows = [torch.randn(vocabulary, generator=torch.Generator().manual_seed(i)) for i in range(32)]
    below = engine.encode_plain("\nreturn total\n")
    here = engine.encode_plain("total += 1\n")
    assert _places(engine, below, rows, "") == ([], [])
    assert _places(engine, here, rows, "")[0]  # the same kind of answer on the cursor's line has places


def test_an_explicit_request_gets_other_answers_each_with_another_first_line(loaded):
    """The editor's "next suggestion" (LSP's Invoked trigger): the next best answers at the answer's least
    certain tokens, none with the answer's first line or another's, and the answer itself unchanged."""
    from phils.engine.decoding.second_choice import first_line_key as first_line

    plain = ask(fresh(loaded), "doc", refusing("\x00"), candidates=1)
    engine = fresh(loaded)
    request = GenerationRequest("doc", PROMPT, max_new_tokens=32, stop=refusing("\x00"), heal=False, alternatives=2)
    answer = engine.generate(request)
    assert answer.text == plain.text and plain.alternatives == []
    assert len(answer.alternatives) == 2
    lines = [first_line(text) for text in (answer.text, *answer.alternatives)]
    assert len(set(lines)) == 3 and all(text.strip() for text in answer.alternatives)
    # The cache holds the prompt as before: the next request reuses it and answers as a fresh engine.
    again = ask(engine, "doc", refusing("\x00"), candidates=1)
    assert again.reused_tokens > 0 and again.text == plain.text


def test_where_the_answer_invents_an_attribute_the_tokens_there_that_begin_one_the_class_has_come_first(loaded):
    """`return self.` + `is_empty()` in a Stack without it: the place to try another token is the name's first,
    and the tokens tried there begin names the class has (``Shape.members``)."""
    import re

    from phils.engine.decoding.second_choice import _begins_member, _places
    from phils.stoprule import Shape

    engine = fresh(loaded)
    prompt = "class Stack:\n    def peek(self):\n        return self."
    ids = engine.encode(prompt)
    with torch.inference_mode():
        first = engine.loaded.model(input_ids=torch.tensor([ids])).logits[0, -1]
    ranked = [engine.tokenizer.decode([token]) for token in first.topk(60).indices.tolist()]
    words = [text for text in ranked[1:] if re.fullmatch(r"[A-Za-z_]\w*", text)]
    assert len(words) > 8, "the tiny model ranks word tokens after `self.`"
    members = tuple(sorted(words[4:]))  # (names the class has: none of the model's first few choices)
    answer = engine.encode_plain("invented_name()\n")
    rows = [first] + [torch.randn(len(engine.tokenizer), generator=torch.Generator().manual_seed(i))
                      for i in range(len(answer))]
    shape = Shape(single_line=False, min_indent=8, line_prefix="        return self.", max_lines=3, members=members)
    least_certain, named = _places(engine, answer, rows, "", shape)
    assert named and all(place.index == 0 for place in named)
    assert {engine.tokenizer.decode([place.token]) for place in named} <= set(members)
    assert _places(engine, answer, rows, "", replace(shape, members=None))[1] == []  # (a class not wholly known)
    # A token may hold the `.` before the name, or go on past it.
    assert _begins_member(".items", ".", ("items",)) and _begins_member("ite", "", ("items",))
    assert _begins_member("items[", "", ("items",)) and not _begins_member("item(", "", ("items",))
    assert not _begins_member(" items", "", ("items",))


def test_the_invented_names_first_token_may_hold_the_healed_dot(loaded):
    """Token healing rewrites the prompt's `.`: the token that begins the invented name then holds it
    (`._x` for `self.` + `_x`), and the tokens tried there must hold it too."""
    from phils.engine.decoding.second_choice import _places
    from phils.stoprule import Shape

    engine = fresh(loaded)
    vocabulary = engine.tokenizer.get_vocab()
    dot_name, dot_dunder = vocabulary["._"], vocabulary[".__"]  # (the tiny tokenizer's only `.` + name tokens)
    answer = [dot_name] + engine.encode_plain("invented()\n")
    first = torch.zeros(len(engine.tokenizer))
    first[dot_name], first[dot_dunder] = 10.0, 5.0
    rows = [first] + [torch.randn(len(engine.tokenizer), generator=torch.Generator().manual_seed(i))
                      for i in range(len(answer))]
    shape = Shape(single_line=False, min_indent=8, line_prefix="        return self.", max_lines=3,
                  members=("__init__", "items"))
    _, named = _places(engine, answer, rows, ".", shape)
    assert [(place.index, place.token) for place in named] == [(0, dot_dunder)]
