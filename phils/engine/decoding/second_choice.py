"""When the stop rule leaves nothing of the greedy answer, the model's next best one.

The stop rule throws an answer away whole when its first line writes the code
below the cursor again or leaves the cursor's block. A model given the code
below (FIM) still does that where it hesitated at one token: in a hole above
``self.shortsignature = ', '.join(allshortargs)`` Qwen2.5-Coder wrote that
line, where ``self.signature = ', '.join(allargs)`` belonged, and the editor
got nothing. The rejected line's tokens are run again in one pass; at the
token where the greedy choice led the next best by the least, the next best
is taken and the answer written on greedily under the same stop rule. Up to
``candidates - 1`` such places are tried, least certain first; the first
answer left standing wins. Only answers judged against the code below
(``fitting``) have candidates of their own; this is the plain answer's. An
answer that begins on a new line (the model ends the cursor's line and takes
its block as over) gets no second choice: there it says that nothing goes.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Iterator

from ...protocol import GenerationResult
from ...stoprule import Shape, invented_member, leaves_open
from .branch import Branch, add_counts
from .prefix_cache import crop

if TYPE_CHECKING:
    from .generate import Engine, GenerationRequest

log = logging.getLogger(__name__)

RUNNER_UP_TOKENS = 8  # the next best token at a place is looked for among this many of its best
# An explicit request's alternatives are written within as long as its answer took, and at least this long:
# unbounded, they made HumanEval through phils (which asks explicitly) 2.3x slower on Qwen2.5-Coder 1.5B int4
# and 4.3x on Gemma 3 270M, every answer the same.
ALTERNATIVES_MIN_S = 0.5
MEMBER_TOKENS = 40  # where an answer invented an attribute, the tokens looked at there for one the class has
MEMBER_TRIES = 2  # ... and how many of them are tried, before the least certain places
WORD_START = re.compile(r"\w*")


@dataclass(frozen=True)
class _Place:
    index: int  # how many of the rejected tokens stay
    token: int  # the next best token there
    margin: float  # by how much the greedy token led it (log-probability)


def retry(engine: "Engine", first_logits: Any, kv: Any, prompt_length: int, request: "GenerationRequest",
          result: GenerationResult, generated: list[int], max_new: int) -> None:
    """Where ``result`` (the greedy answer, written as ``generated``) came out empty by the stop rule, write
    the next best answers at its least certain tokens; the first non-empty one becomes ``result``."""
    tries = request.candidates - 1
    if tries <= 0 or result.reason != "stop" or result.text.strip() or not generated or _no_time(request):
        return
    if not crop(kv, prompt_length):
        return  # a cache that cannot be cut back (sliding-window layers): the empty answer stands
    started, tried = time.monotonic(), 0
    for other in _next_best(engine, first_logits, kv, prompt_length, request, result, generated, max_new, tries):
        tried += 1
        if other.text.strip() and other.reason != "cancelled":
            result.text, result.reason = other.text, other.reason
            break
    result.second_choice = "answered" if result.text.strip() else "empty"
    log.debug("second choice: %d places tried in %.0f ms, %s", tried, (time.monotonic() - started) * 1000,
              "an answer" if result.text.strip() else "still empty")


def alternatives(engine: "Engine", first_logits: Any, kv: Any, prompt_length: int, request: "GenerationRequest",
                 result: GenerationResult, generated: list[int], max_new: int, spent_s: float = 0.0) -> None:
    """Up to ``request.alternatives`` other answers for an explicit request, in ``result.alternatives``: the
    next best answers as ``retry`` finds them, each first line unlike the others', written within as long
    as the answer took (``spent_s``; at least ALTERNATIVES_MIN_S)."""
    wanted = request.alternatives
    if (wanted <= 0 or not result.text.strip() or result.second_choice or result.reason in ("cancelled", "deadline")
            or not generated or _no_time(request) or not crop(kv, prompt_length)):
        return
    until = time.monotonic() + max(spent_s, ALTERNATIVES_MIN_S)
    bounded = replace(request, deadline=until if request.deadline is None else min(request.deadline, until))
    first_lines = {first_line_key(result.text)}
    for other in _next_best(engine, first_logits, kv, prompt_length, bounded, result, generated, max_new):
        text = other.text
        if other.reason == "length" and "\n" in text.rstrip():
            text = text.rsplit("\n", 1)[0]  # whole lines only, as the front keeps of an answer cut short
        if text.strip() and other.reason not in ("cancelled", "deadline") and not leaves_open(text, request.comment) \
                and first_line_key(text) not in first_lines:
            first_lines.add(first_line_key(text))
            result.alternatives.append(text)
            if len(result.alternatives) >= wanted:
                break


def _next_best(engine: "Engine", first_logits: Any, kv: Any, prompt_length: int, request: "GenerationRequest",
               result: GenerationResult, generated: list[int], max_new: int,
               limit: int | None = None) -> Iterator[GenerationResult]:
    """The answers at ``generated``'s least certain tokens of its first line (up to ``limit`` places, least
    certain first): there the next best token, written on greedily under the request's stop rule, each
    one's counts added to ``result``; none once time runs out or where the cache cannot be cut back. The
    cache holds the prompt alone (cut back to ``prompt_length``)."""
    rows = engine._forward_keep(generated, kv, len(generated))
    logits_at = [first_logits, *rows[:-1]]  # logits_at[i] chose generated[i]
    found, named = _places(engine, generated, logits_at, result.healed, request.shape)
    places = (sorted(named, key=lambda place: place.margin)[:MEMBER_TRIES]
              + sorted(found, key=lambda place: place.margin))[:limit]
    for place in places:
        if _no_time(request) or not crop(kv, prompt_length + place.index):
            return
        branch = Branch(generated[: place.index], [], "", logits_at[place.index], prompt_length + place.index)
        other = GenerationResult(text="", reason="", healed=result.healed)
        engine._decode(branch.logits, kv, request, other, max_new, start=branch, force=[place.token])
        add_counts(result, other)
        yield other


def first_line_key(text: str) -> str:
    """``text``'s first line as alternatives are told apart: without its spaces, one kind of quote."""
    return "".join(text.strip().split("\n", 1)[0].split()).replace("'", '"')


def _no_time(request: "GenerationRequest") -> bool:
    return request.cancel.is_set() or (request.deadline is not None and time.monotonic() >= request.deadline)


def _places(engine: "Engine", generated: list[int], logits_at: list[Any], healed: str,
            shape: Shape | None = None) -> tuple[list[_Place], list[_Place]]:
    """The places in the rejected answer's first line of code where another token could go, each with the
    best such token: past the healed text, from the token that starts the code to the one that ends its line.
    Second, where that line reads an attribute its class lacks (``self.is_empty()``; ``Shape.members``): the
    tokens there that begin one it has."""
    torch = engine._torch
    rejected = engine.tokenizer.decode(generated, skip_special_tokens=True)[len(healed):]
    if "\n" in rejected[: len(rejected) - len(rejected.lstrip())]:
        return [], []  # the model ended the cursor's line and wrote on below it (a block it takes as over): no line here
    name_at = invented_member(rejected, shape)
    named_at = None if name_at is None or not shape or not shape.members else len(healed) + name_at
    whole = healed + rejected
    places, named = [], []
    for index, token in enumerate(generated):
        before = engine.tokenizer.decode(generated[:index], skip_special_tokens=True)
        if named_at is not None and len(before) <= named_at < len(
                engine.tokenizer.decode(generated[:index + 1], skip_special_tokens=True)):
            # The token that begins the invented name (healing's `.` before it may be in that token too).
            logprobs = torch.log_softmax(logits_at[index].float(), dim=-1)
            head = whole[len(before):named_at]
            for other in logprobs.topk(MEMBER_TOKENS).indices.tolist():
                if other != token and _begins_member(
                        engine.tokenizer.decode([other], skip_special_tokens=True), head, shape.members):
                    named.append(_Place(index, other, float(logprobs[token] - logprobs[other])))
        if len(before) < len(healed) or not before.startswith(healed):
            continue  # healing's text is still being spelled out: its tokens are not free
        written = before[len(healed):]
        if written.strip() and "\n" in written.lstrip():
            break  # the first line of code has ended
        logprobs = torch.log_softmax(logits_at[index].float(), dim=-1)
        for other in logprobs.topk(RUNNER_UP_TOKENS).indices.tolist():
            if other == token or other in engine.eos_ids:
                continue
            text = engine.tokenizer.decode([other], skip_special_tokens=True)
            if "\ufffd" in text or not (written + text).strip():
                continue  # half a character, or still no code
            places.append(_Place(index, other, float(logprobs[token] - logprobs[other])))
            break
    return places, named


def _begins_member(text: str, head: str, members: tuple[str, ...]) -> bool:
    """Whether a token's ``text``, in place of one that began with ``head`` and then an invented name, begins
    a name of ``members`` (the whole name where the token goes on past it)."""
    if not text.startswith(head):
        return False
    rest = text[len(head):]
    word = WORD_START.match(rest).group(0)
    if not word:
        return False
    if len(word) < len(rest):
        return word in members
    return any(member.startswith(word) for member in members)
