"""Drafts from the document (prompt lookup): where they come from and how long they are."""

from __future__ import annotations

from phils.config import EngineSettings
from phils.engine import Engine, GenerationRequest
from phils.engine.decoding.drafts import DraftLength, DraftSource
from phils.engine.loading.loader import load_model


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
    assert DraftLength(limit=8, extra_cost=0.1, kept_rate=0.9).choose() >= 5
    assert DraftLength(limit=8, extra_cost=0.3, kept_rate=0.2).choose() == 0  # one pass per token is faster
    assert DraftLength(limit=8, extra_cost=2.0, kept_rate=0.9).choose() == 0  # longer passes cost too much
    assert DraftLength(limit=2, extra_cost=0.0, kept_rate=0.9).choose() == 2  # never past the setting


def test_the_cost_of_longer_passes_is_measured_on_the_runtime(tiny_model):
    loaded = load_model(EngineSettings(model=str(tiny_model), threads=1, cpu_kernels="torch"))
    length = DraftLength.measured(loaded.runtime, 8)
    assert 0.0 <= length.extra < 5.0 and length.limit == 8


def test_drafts_leave_the_answer_and_the_cache_as_plain_decoding_does(tiny_model):
    loaded = load_model(EngineSettings(model=str(tiny_model), threads=1, cpu_kernels="torch"))
    plain = Engine(loaded, context_tokens=512, cache_bytes=2**30)
    drafting = Engine(loaded, context_tokens=512, cache_bytes=2**30, draft_tokens=6)
    drafting.draft_tokens = DraftLength(6, extra_cost=0.0).choose()  # draft whenever the document offers one
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
