"""The data that crosses the engine boundary, in both processes: a job and its result.

Plain dataclasses (no torch, no pygls): the front builds an ``EngineJob``,
any engine (in-process, phils' own over HTTP, vLLM, llama-server) answers
with a ``GenerationResult``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from .stoprule import Shape

KEY_SEPARATOR = "\x1f"  # between a window's id and a document's URI in an engine's cache key


@dataclass(frozen=True)
class EngineJob:
    """One completion, or a warm-up: the prompt's KV computed ahead of the request that will follow."""

    document: str  # the document's URI (or any name): whose KV prefix to reuse
    prompt: str
    max_new_tokens: int  # a warm-up keeps room for this many, as the completion after it will
    warmup: bool = False
    shape: Shape | None = None  # the stop rule, as data; None: stop at EOS or the token limit only
    stop_strings: tuple[str, ...] = ()  # OpenAI's "stop": end before the first of these
    heal: bool = True  # token healing, where the engine can constrain tokens
    ignore_stops: bool = False  # decode max_new_tokens whatever the stop rule and EOS say (benchmarks)
    deadline_ms: int = 0  # longest the decode may take; 0 = no limit
    window: str = ""  # the editor window that asked; its departure cancels the job
    fit_suffix: str = ""  # the code after the cursor: answer with the candidate it follows best ("" = greedy)
    candidates: int = 1  # with fit_suffix: how many first tokens to try (the greedy one and the next best)
    define: tuple[str, ...] = ()  # with fit_suffix: names the code below reads that only the answer can define
    samples: int = 0  # with fit_suffix: answers sampled from the model, judged with the others
    early_accept: bool = True  # with fit_suffix: no other candidates when the greedy answer already fits
    alternatives: int = 0  # up to this many other answers, best first (an explicit request's to cycle through)
    background: bool = False  # computed ahead (after accepting the shown suggestion): yields to any other job
    # The same request in a short window around the cursor: the engine answers from it instead when the
    # prompt's uncomputed part is much longer than this one's (a document just opened), and computes the
    # whole prompt in idle time after.
    near_prompt: str = ""

    @property
    def key(self) -> str:
        return f"{self.window}{KEY_SEPARATOR}{self.document}"


NEAR_KEY = f"{KEY_SEPARATOR}near"  # after a job's key: the cache entry of its near window


def near_key(key: str) -> str:
    return key + NEAR_KEY


@dataclass
class GenerationResult:
    text: str
    reason: str  # stop | eos | length | cancelled | deadline | warmup
    prompt_tokens: int = 0
    reused_tokens: int = 0
    prefill_tokens: int = 0
    new_tokens: int = 0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    first_token_ms: float | None = None  # from the request's start to its first token
    decode_steps: int = 0  # tokens decoded after the first (one forward pass each, fewer with drafts)
    drafted_tokens: int = 0  # tokens drafted from the document and checked
    kept_draft_tokens: int = 0  # of those, the ones greedy decoding kept
    healed: str = ""  # the prompt's last token, backed off and generated again
    candidates: int = 0  # answers judged against fit_suffix (0: none were, e.g. it cannot rewind its cache)
    cut: str = ""  # what the time budget cut short: "answer" (the greedy answer), "judging" (other candidates)
    second_choice: str = ""  # the stop rule emptied the greedy answer and the next best were tried: "answered" or "empty"
    window: str = ""  # "near": answered from the job's near_prompt (the whole prompt was not computed yet)
    alternatives: list[str] = field(default_factory=list)  # other answers, best first (EngineJob.alternatives)

    @classmethod
    def from_dict(cls, text: str, data: Any) -> "GenerationResult":
        """A result from an engine's answer; unknown or malformed fields are ignored."""
        result = cls(text=text, reason="stop")
        if isinstance(data, dict):
            for f in fields(cls):
                value = data.get(f.name)
                if f.name != "text" and value is not None and isinstance(value, (int, float, str)):
                    setattr(result, f.name, value)
            answers = data.get("alternatives")
            if isinstance(answers, list):
                result.alternatives = [a for a in answers if isinstance(a, str)]
        return result


class EngineError(RuntimeError):
    """An engine refused or failed a request; ``status`` is the editor-facing state it implies."""

    def __init__(self, message: str, status: str = "error"):
        super().__init__(message)
        self.status = status  # "loading" (try again later) or "error"
