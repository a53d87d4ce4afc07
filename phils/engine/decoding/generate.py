"""The decode loop, with per-document KV prefix reuse, stop checks and cancellation.

Only the model worker thread calls ``Engine.generate``. Cancellation, the
deadline and the caller's stop rule are checked between prefill chunks and
between tokens, which is as fine-grained as a running model can be stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from . import drafts, fitting, healing, second_choice
from ...protocol import GenerationResult, near_key
from ...stoprule import Shape
from .branch import Branch
from .prefix_cache import CachedPrefix, PrefixCache, common_prefix, crop
from ..runtimes.runtime_torch import token_ids

if TYPE_CHECKING:
    from ..loading.loader import LoadedModel

log = logging.getLogger(__name__)

# Tokens per forward pass while prefilling: the granularity of cancel checks.
# At Phi-2 fp32 CPU speed (~20 tokens/s) 64 tokens is ~3 s; warm-ups, which a
# completion request must preempt quickly, use smaller steps.
PREFILL_CHUNK = 64
WARMUP_CHUNK = 16
# Another document's cache is taken over only when it shares at least this much.
MIN_SHARED_TOKENS = 32
# A near window answers only when it spares at least this much prefill time, at the speed this engine's
# requests measured (before any: this many tokens, ~1.3 s for a 1.5B model in int4 on 2 cores). Less is
# not worth the context it leaves out; on a GPU it never is.
NEAR_MIN_SAVING_S = 1.0
NEAR_MIN_SAVING_TOKENS = 256
RATE_MIN_TOKENS = 64  # prefills shorter than this say little about the speed


@dataclass
class GenerationRequest:
    key: str  # the document: whose KV prefix to reuse
    prompt: str
    max_new_tokens: int
    stop: Callable[[str], int | None] = lambda text: None  # where the text must end, if anywhere yet
    cancel: threading.Event = field(default_factory=threading.Event)
    deadline: float | None = None  # time.monotonic() after which decoding stops
    budget_ms: int = 0  # else: the time decoding and judging may take once the prompt is computed (0: no limit)
    finish_first_line: bool = True  # past the deadline, still end the answer's first line (part of one is no answer)
    heal: bool = True  # redo the prompt's last token when it ends mid-word (token healing)
    ignore_stops: bool = False  # decode max_new_tokens whatever the stop rule and EOS say (benchmarks)
    on_token: Callable[[int], None] | None = None  # told the count of new tokens after each one
    fit_suffix: str = ""  # the code after the cursor: when set, answer with the candidate it follows best
    candidates: int = 1  # with fit_suffix: the greedy answer and the best other first tokens; without: second_choice's tries + 1
    define: tuple[str, ...] = ()  # with fit_suffix: names the code below reads and only the answer can define
    samples: int = 0  # with fit_suffix: answers sampled from the model, judged with the others
    skip_when_followed: bool = True  # with fit_suffix: no other candidates when the greedy answer already fits
    closes_brackets: bool = False  # with fit_suffix: judge only answers that close the brackets they open
    comment: str = ""  # the language's line comment marker, for counting those brackets ("": Python's #)
    line_first: bool = False  # with skip_when_followed, mid-line: a first line that fits is the answer on its own
    near_prompt: str = ""  # the same request in a short window: answered from when it spares most of the prefill
    alternatives: int = 0  # up to this many other answers, best first, in result.alternatives
    shape: Shape | None = None  # the stop rule's shape where a front sent one (second choice reads its members)


def greedy(logits: Any) -> int:
    return int(logits.argmax())


class Engine:
    def __init__(self, loaded: "LoadedModel", context_tokens: int, cache_bytes: int, ignore_stops: bool = False,
                 draft_tokens: int = 0):
        import torch

        self._torch = torch
        self.loaded = loaded
        self.runtime = loaded.runtime  # torch, or ONNX Runtime GenAI for int4: chosen at load
        self.tokenizer = loaded.tokenizer
        self.context_tokens = min(context_tokens, self.runtime.window or context_tokens)
        self.cache = PrefixCache(cache_bytes)
        self.ignore_stops = ignore_stops  # for every request (benchmarks, tests); requests can ask for it too
        self.eos_ids = self.runtime.eos_ids | token_ids(self.tokenizer.eos_token_id)
        self.fim = loaded.fim  # FIM markers: the front may write its prompt with them
        if self.fim is not None:  # where a middle ends (a chat model's EOS is not the one its FIM writes)
            self.eos_ids = self.eos_ids | set(self.fim.stop_ids)
        self._vocabulary: healing.Vocabulary | None = None
        # Drafts from the document (prompt lookup): this many tokens a pass at most, chosen once; 0 = off.
        self.draft_tokens = 0
        if draft_tokens > 0 and self.runtime.can_rewind:
            with torch.inference_mode():
                length = drafts.DraftLength.measured(self.runtime, draft_tokens)
            self.draft_tokens = length.choose()
            log.info("drafts: %d tokens a pass (a pass's cost grows %.2f a token here)", self.draft_tokens, length.extra)
        self._draft_context: tuple[list[int], list[int]] = ([], [])  # the prompt's tokens, the code below's
        self.prefill_rate: float | None = None  # prompt tokens a second, as requests measured it

    @property
    def vocabulary(self) -> healing.Vocabulary:
        if self._vocabulary is None:  # a second or two for a large vocabulary, once
            self._vocabulary = healing.Vocabulary(self.tokenizer)
        return self._vocabulary

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def encode_plain(self, text: str) -> list[int]:
        """Tokens of text that continues a prompt: no BOS."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def forget(self, key: str) -> None:
        self.cache.drop(key)
        self.cache.drop(near_key(key))

    def prefill(self, key: str, prompt: str, cancel: threading.Event, max_new_tokens: int) -> tuple[int, bool]:
        """Compute and keep the KV cache of ``prompt`` ahead of a request (warm-up).

        Returns (tokens computed, whether it was cancelled part-way).
        """
        ids = self.encode(prompt)[-max(self.context_tokens - max_new_tokens, 1) :]
        with self._torch.inference_mode():
            kv, reused = self._reusable_kv(key, ids)
            _, done = self._prefill(ids, reused, kv, cancel, WARMUP_CHUNK)
            self._store(key, ids[:done], kv)
        return done - reused, done < len(ids)

    def generate(self, request: GenerationRequest) -> GenerationResult:
        torch = self._torch
        started = time.monotonic()
        ids, healed = self._prompt_ids(request.prompt, request.max_new_tokens, request.heal)
        window = ""
        if request.near_prompt and self.cache.max_bytes > 0:
            near_ids, near_healed = self._prompt_ids(request.near_prompt, request.max_new_tokens, request.heal)
            if self._near_pays(request.key, ids, near_key(request.key), near_ids):
                request.key, request.prompt = near_key(request.key), request.near_prompt
                ids, healed, window = near_ids, near_healed, "near"
        max_new = min(request.max_new_tokens, self.context_tokens - len(ids))
        result = GenerationResult(text="", reason="cancelled", prompt_tokens=len(ids), healed=healed, window=window)
        if request.cancel.is_set() or not ids:
            return result
        with torch.inference_mode():
            kv, reused = self._reusable_kv(request.key, ids)
            result.reused_tokens = reused
            prefill_started = time.monotonic()
            logits, done = self._prefill(ids, reused, kv, request.cancel, PREFILL_CHUNK)
            result.prefill_tokens = done - reused
            result.prefill_ms = (time.monotonic() - prefill_started) * 1000
            self._measure_prefill(result.prefill_tokens, result.prefill_ms)
            if logits is None:  # cancelled while prefilling: keep what was computed
                self._store(request.key, ids[:done], kv)
                return result
            result.first_token_ms = (time.monotonic() - started) * 1000
            decode_started = time.monotonic()
            if request.budget_ms:  # the prompt is kept for the next keystroke whatever happens: not budgeted
                request.deadline = decode_started + request.budget_ms / 1000
            if self.draft_tokens:
                self._draft_context = (ids, self.encode_plain(request.fit_suffix)[:fitting.MAX_SUFFIX_TOKENS]
                                       if request.fit_suffix else [])
            if request.fit_suffix:
                fitting.choose(self, logits, kv, len(ids), request, result, max_new)
            else:
                generated = self._decode(logits, kv, request, result, max_new)
                second_choice.retry(self, logits, kv, len(ids), request, result, generated, max_new)
                second_choice.alternatives(self, logits, kv, len(ids), request, result, generated, max_new,
                                           time.monotonic() - decode_started)
            result.decode_ms = (time.monotonic() - decode_started) * 1000
            self._store(request.key, ids, kv)
        return result

    def _prompt_ids(self, prompt: str, max_new_tokens: int, heal: bool) -> tuple[list[int], str]:
        """The prompt's tokens that fit the window with room for the answer, less the last one when it is
        healed (backed off and generated again); and that token's text."""
        ids = self.encode(prompt)[-max(self.context_tokens - max_new_tokens, 1):]
        if heal and len(ids) > 1 and healing.should_heal(prompt):
            healed = self.tokenizer.decode(ids[-1:], skip_special_tokens=True)
            if healed and "\ufffd" not in healed and prompt.endswith(healed):
                return ids[:-1], healed
        return ids, ""

    def _near_pays(self, key: str, ids: list[int], near: str, near_ids: list[int]) -> bool:
        """Whether the near window spares enough of the prompt's prefill: the tokens the whole prompt has
        left to compute, less the near window's, would take NEAR_MIN_SAVING_S or more. (A near window
        computed already costs only its new tokens: while the whole prompt is still being computed in
        idle time, typing goes on reading the near one.)"""
        to_compute = len(ids) - self.cache.shared(key, ids, MIN_SHARED_TOKENS)
        spared = to_compute - (len(near_ids) - self.cache.shared(near, near_ids))
        if self.prefill_rate is None:
            return spared >= NEAR_MIN_SAVING_TOKENS
        return spared / self.prefill_rate >= NEAR_MIN_SAVING_S

    def _measure_prefill(self, tokens: int, ms: float) -> None:
        """Prompt tokens a second, from the requests' prefills (a moving average)."""
        if tokens >= RATE_MIN_TOKENS and ms > 0:
            rate = tokens * 1000 / ms
            self.prefill_rate = rate if self.prefill_rate is None else 0.7 * self.prefill_rate + 0.3 * rate

    def _reusable_kv(self, key: str, ids: list[int]) -> tuple[Any, int]:
        """The document's cache cropped to the longest prefix it shares with ``ids``.

        A document with no entry of its own (the same file just opened in a
        second window) takes over the entry that shares the most tokens.
        """
        entry = self.cache.take(key) or self.cache.take_longest_prefix(ids, MIN_SHARED_TOKENS)
        if entry is not None:
            # Keep at least one prompt token to run (its logits start the decode); some runtimes need
            # more for the reused answer to equal a fresh one (runtime_genai.GenaiRuntime.min_prefill).
            shared = min(common_prefix(entry.ids, ids), len(ids) - self.runtime.min_prefill)
            if shared > 0 and crop(entry.kv, shared):
                return entry.kv, shared
        # Room for the whole context and a judged suffix: the cache never copies itself mid-keystroke.
        return self.runtime.new_kv(self.context_tokens + fitting.MAX_SUFFIX_TOKENS), 0

    def _prefill(self, ids: list[int], start: int, kv: Any, cancel: threading.Event, step: int) -> tuple[Any, int]:
        logits = None
        done = start
        while done < len(ids):
            if cancel.is_set():
                return None, done
            chunk = ids[done : done + step]
            logits = self._forward(chunk, kv)
            done += len(chunk)
        return logits, done

    def _decode(self, logits: Any, kv: Any, request: GenerationRequest, result: GenerationResult, max_new: int,
                start: Branch | None = None, force: list[int] | None = None,
                on_branch: Callable[[Branch], None] | None = None,
                scores: list[tuple[int, float]] | None = None, pick: Callable[[Any], int] | None = None) -> list[int]:
        """Greedy decoding from ``logits`` (the prompt's, or a branch point's); returns the tokens.

        ``start`` resumes at a branch point with ``force`` as its first tokens;
        ``on_branch`` is told each step before the first one that writes code
        (past indentation): the last of them is where other candidates branch off.
        ``scores`` gets each token's (text length after it, log-probability); ``pick`` chooses
        each token from the logits (greedy unless told).
        """
        generated: list[int] = list(start.generated) if start else []
        ignore_stops = request.ignore_stops or self.ignore_stops
        pending = start.pending if start else result.healed  # text the first tokens must spell out again
        text = ""  # what the tokens so far write, after the healed text
        if generated and not pending:  # resuming an answer (its first line judged alone)
            written = self.tokenizer.decode(generated, skip_special_tokens=True)
            text = written[len(result.healed):] if written.startswith(result.healed) else ""
        result.reason = "length"
        source = None
        if self.draft_tokens:
            context, after = self._draft_context
            source = drafts.DraftSource(context + generated, after)
        drafted: list[tuple[int, Any]] = []  # drafted tokens already run into the cache, each with its logits
        forced_ahead = 0  # forced tokens run into the cache in one pass, at the head of ``drafted``
        if force and len(force) > 1 and len(force) <= max_new - len(generated):
            rows = self.runtime.forward(list(force), kv, len(force))
            drafted, forced_ahead = list(zip(force, rows)), len(force)
        for step in range(max_new - len(generated)):
            if on_branch is not None and not text.strip():  # the last such step is the one that writes code
                on_branch(Branch(list(generated), list(scores or ()), pending, logits,
                                 kv.get_seq_length() - len(drafted)))
            if force and step < len(force):
                token = force[step]
            else:
                token = self._constrained(logits, pending) if pending else (pick or greedy)(logits)
            if token in self.eos_ids and not ignore_stops:
                result.reason = "eos"
                break
            generated.append(token)
            if scores is not None:
                logprob = float(self._torch.log_softmax(logits.float(), dim=-1)[token])
            if request.on_token is not None:
                request.on_token(len(generated))
            if pending:
                pending = healing.consume(pending, self.tokenizer.decode([token], skip_special_tokens=True))
            full = self.tokenizer.decode(generated, skip_special_tokens=True)
            if not pending and not full.startswith(result.healed):  # healing failed: nothing safe to show
                text, result.reason = "", "stop"
                break
            text = full[len(result.healed) :]
            if scores is not None:
                scores.append((len(full), logprob))
            cut = None if ignore_stops or pending else request.stop(text)
            if cut is not None:
                text, result.reason = text[:cut], "stop"
                break
            if request.cancel.is_set():
                result.reason = "cancelled"
                break
            if request.deadline is not None and time.monotonic() >= request.deadline and (
                    not request.finish_first_line or _holds_a_line(text)):
                result.reason = "deadline"
                break
            if len(generated) < max_new:
                if step < forced_ahead:  # run already, with the rest of the forced tokens
                    logits, drafted = drafted[0][1], drafted[1:]
                elif source is None:
                    logits = self._forward([token], kv)
                else:
                    source.append(token)
                    logits, drafted = self._advance(token, kv, drafted, source, max_new - len(generated), result)
                result.decode_steps += 1
        if drafted:  # the answer ended before these: the cache keeps only what was written
            crop(kv, kv.get_seq_length() - len(drafted))
        result.new_tokens += len(generated) - (len(start.generated) if start else 0)
        result.text = text.rstrip("\ufffd")  # an unfinished multi-byte character
        return generated

    def _advance(self, token: int, kv: Any, drafted: list[tuple[int, Any]], source: "drafts.DraftSource",
                 room: int, result: GenerationResult) -> tuple[Any, list[tuple[int, Any]]]:
        """Put ``token`` in the cache and return the logits after it, with the drafted tokens now ahead of it.

        A draft that predicted ``token`` has run already: its logits are at hand.
        Otherwise what remains of the draft leaves the cache, and one pass runs
        ``token`` with a new draft from the document, when there is one.
        """
        if drafted and drafted[0][0] == token:
            result.kept_draft_tokens += 1
            return drafted[0][1], drafted[1:]
        if drafted:
            crop(kv, kv.get_seq_length() - len(drafted))
        draft = source.draft(min(self.draft_tokens, room))
        rows = self.runtime.forward([token, *draft], kv, len(draft) + 1)
        result.drafted_tokens += len(draft)
        return rows[0], list(zip(draft, rows[1:]))

    def _constrained(self, logits: Any, pending: str) -> int:
        allowed = self.vocabulary.allowed(pending)
        if not allowed:
            return greedy(logits)
        index = self._torch.tensor(allowed, device=logits.device)
        return allowed[int(logits.index_select(0, index).argmax())]

    def _forward(self, ids: list[int], kv: Any) -> Any:
        return self.runtime.forward(ids, kv, 1)[-1]

    def _forward_keep(self, ids: list[int], kv: Any, keep: int) -> Any:
        """The logits of the last ``keep`` positions of ``ids``, run on ``kv``."""
        return self.runtime.forward(ids, kv, keep)

    def _store(self, key: str, ids: list[int], kv: Any) -> None:
        if ids and crop(kv, len(ids)):
            self.cache.put(key, CachedPrefix(list(ids), kv))


def _holds_a_line(text: str) -> bool:
    """Whether ``text`` has a whole line of code (one that has ended)."""
    code = text.lstrip()
    return bool(code) and "\n" in code
