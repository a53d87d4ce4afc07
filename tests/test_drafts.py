"""Drafts from the document (prompt lookup): where they come from and how long they are."""

from __future__ import annotations

import pytest

from phils.config import EngineSettings
from phils.engine import Engine, GenerationRequest
from phils.engine.drafts import PROBE_EVERY, DraftLength, DraftSource
from phils.engine.loader import load_model


def test_a_draft_continues_the_latest_earlier_occurrence_of_the_longest_tail():
    source = DraftSource([1, 2, 3, 4, 5, 9, 2, 3, 7, 8, 6, 2, 3])
    assert source.draft(2) == [7, 8]  # "2 3" last seen before "7 8"
    source.append(4)
    assert source.draft(3) == [5, 9, 2]  # "2 3 4" beats the shorter "3 4"... and "4" alone is never enough
    source.append(1)
    assert source.draft(4) == []  # "4 1" occurs nowhere earlier; one token is too little to go on


def test_the_code_below_the_cursor_is_a_source_but_never_runs_into_the_prompt():
    source = DraftSource([10, 11, 12, 20, 21], after=[20, 21, 22, 23])
    assert source.draft(8) == [22, 23]  # found below the cursor; the separator stops it at the prompt
    assert DraftSource([5, 6]).draft(0) == []


def test_the_length_follows_the_kept_rate_and_the_cost_of_a_longer_pass():
    length = DraftLength(limit=8)
    length.kept_rate, length.extra = 0.9, 0.1
    assert length.choose() >= 5
    length.kept_rate, length.extra = 0.2, 0.3
    assert length.choose() == 0  # one pass per token is faster
    costly = DraftLength(limit=8)
    costly.kept_rate, costly.extra = 0.9, 2.0  # a runtime where longer passes cost too much
    chosen = [costly.choose() for _ in range(PROBE_EVERY * 2)]
    assert chosen.count(1) == 2  # but now and then one token, to keep measuring both


def test_measured_passes_and_outcomes_move_the_estimates():
    length = DraftLength(limit=8, extra_cost=0.15)
    length.passed(1, 100.0)
    for _ in range(10):
        length.passed(5, 200.0)  # four more tokens doubled the time: 0.25 each
    assert length.extra == pytest.approx(0.25, abs=0.03)
    for _ in range(30):
        length.outcome(False)
    assert length.kept_rate < 0.1


def test_drafts_leave_the_answer_and_the_cache_as_plain_decoding_does(tiny_model):
    loaded = load_model(EngineSettings(model=str(tiny_model), threads=1, cpu_kernels="torch"))
    plain = Engine(loaded, context_tokens=512, cache_bytes=2**30)
    drafting = Engine(loaded, context_tokens=512, cache_bytes=2**30, draft_tokens=6)
    drafting.draft_length.extra = 0.0  # draft whenever the document offers one
    prompt = "".join(f"value_{i} = compute({i})\n" for i in range(12))
    drafted = 0
    for cut in range(len(prompt) - 60, len(prompt), 7):
        a = plain.generate(GenerationRequest("doc", prompt[:cut], 20, heal=False, ignore_stops=True))
        b = drafting.generate(GenerationRequest("doc", prompt[:cut], 20, heal=False, ignore_stops=True))
        assert a.text == b.text and a.new_tokens == b.new_tokens
        drafted += b.drafted_tokens
        held = drafting.cache.take("doc")
        assert held.kv.get_seq_length() == len(held.ids)  # no drafted token left behind in the cache
        drafting.cache.put("doc", held)
    assert drafted > 0
