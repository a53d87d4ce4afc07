"""One settings tree of defaulted dataclasses, and the layers that fill it.

Layers, later ones winning: defaults → a profile from ``configs/`` → the
user's TOML file → command-line flags and ``--set`` → the editor's
initializationOptions / didChangeConfiguration.

A bad value never crashes anything: it becomes a warning that names the key,
and the key keeps the value it had before that layer.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


INT4_BLOCKS = (32, 64, 128)  # engine.int4_block's choices (MatMulNBits block sizes phils builds)
INT4_GGUF = ("keep", "4bit", "requantize")  # engine.int4_gguf's choices


def _choice(default: Any, *choices: Any) -> Any:
    return field(default=default, metadata={"choices": choices})


def _int(default: int, lo: int, hi: int) -> Any:
    return field(default=default, metadata={"range": (lo, hi)})


@dataclass
class EngineSettings:
    # Where the model runs: auto = the shared phils engine of this user and model
    # settings (started when there is none); local = inside this process; phils =
    # a running phils engine at ``url``; openai = vLLM or another OpenAI-compatible
    # /v1/completions server at ``url``; llama-server = llama.cpp's server at ``url``.
    backend: str = _choice("auto", "auto", "local", "phils", "openai", "llama-server")
    url: str = ""  # the engine's address for backend phils/openai/llama-server, e.g. http://127.0.0.1:8000
    api_key_env: str = ""  # the environment variable that holds the engine's API key or token
    tokenizer: str = ""  # remote engines: tokenizer.json path or hub id to count prompt tokens ("" = estimate)
    timeout_s: int = _int(60, 1, 3600)  # a remote engine that says nothing this long is unreachable
    idle_exit_s: int = _int(600, 0, 10_000_000)  # the shared engine exits this long after its last window; 0 = never
    model: str = "microsoft/phi-2"  # hub id, local dir, .gguf file, or package:NAME[/FILE]
    revision: str = ""  # hub branch, tag or commit ("" = default branch)
    adapter: str = ""  # a LoRA/PEFT adapter (local dir or hub id) on the model ("" = none)
    merge_adapter: bool = True  # fold the adapter into the weights at load (no per-token cost)
    device: str = _choice("auto", "auto", "cpu", "cuda")
    dtype: str = _choice("auto", "auto", "float32", "float16", "bfloat16")
    quantize: str = _choice("none", "none", "int8", "int4")  # int8: torch dynamic int8 Linear layers; int4: ONNX Runtime GenAI (CPU)
    int4_head: str = _choice("int8", "int4", "int8", "fp32")  # int4: the output head's weights (the body is 4-bit)
    # int4: weights per scale and zero point. 32 is the closest to full precision; 128 reads 16 % fewer bytes
    # a token (Phi-2's shape: ~17 % faster decoding) but lost much quality on Gemma 3 270M (engine/int4_build.py).
    int4_block: int = _choice(32, *INT4_BLOCKS)
    # int4: who runs the 4-bit matrices and attention. auto: phils' AVX-512 VNNI kernels (engine/runtimes/kernels/, compiled
    # once; fp16 keys and values) where the CPU has VNNI and a C compiler is found, else ONNX Runtime's (MLAS'
    # MatMulNBits, GroupQueryAttention on fp32 keys and values); mlas: always ONNX Runtime's.
    int4_kernel: str = _choice("auto", "auto", "mlas")
    # int4 from a GGUF file, on phils' kernels (engine/runtimes/gguf_blocks.py): keep = the file's precision (its
    # 4-bit blocks, Q4_0/Q4_1/Q4_K, as they are; the matrices it stores wider, Q5/Q6/Q8, in 8 bits); 4bit = its
    # 4-bit blocks as they are, all else rounded to 4 bits; requantize = every weight rounded to 4 bits again.
    int4_gguf: str = _choice("keep", *INT4_GGUF)
    threads: int = _int(0, 0, 256)  # torch CPU threads; 0 = physical cores
    cpu_kernels: str = _choice("onednn", "onednn", "torch")  # fp32 Linear layers on CPU
    max_new_tokens: int = _int(64, 1, 2048)
    context_tokens: int = _int(2048, 64, 131072)  # Phi-2's window
    trust_remote_code: bool = False
    allow_pickle: bool = False  # allow .bin/.pt weights (pickle can run code)
    offline: bool = False  # never contact the model hub
    ignore_stops: bool = False  # always decode max_new_tokens (benchmarks)
    kv_cache: bool = True  # reuse each document's KV cache across keystrokes
    kv_cache_mb: int = _int(0, 0, 10_000_000)  # 0 = a quarter of free RAM (half of free VRAM)
    draft_tokens: int = _int(8, 0, 64)  # most tokens drafted from the document per pass (prompt lookup); 0 = off
    cache_dir: str = ""  # where converted GGUF copies go ("" = ~/.cache/phils)


# Engine settings that do not change which model is loaded or how: two windows
# that differ only in these share one engine.
PER_WINDOW_ENGINE_KEYS = frozenset(
    {"backend", "url", "api_key_env", "tokenizer", "timeout_s", "idle_exit_s", "max_new_tokens", "ignore_stops"}
)


def model_identity(engine: EngineSettings) -> dict[str, Any]:
    """The engine settings that define a loaded model: the shared engine's identity."""
    return {k: v for k, v in dataclasses.asdict(engine).items() if k not in PER_WINDOW_ENGINE_KEYS}


@dataclass
class CompletionSettings:
    enabled: bool = True
    multiline: bool = True  # False: every suggestion ends at the line's end
    max_lines: int = _int(24, 1, 1000)
    # Inside a block that continues below the cursor: "statement" ends the suggestion with
    # the statement it starts (a line, or a compound statement's header and body);
    # "block" goes on to the end of the block. Both end where a line resumes the code below.
    mid_block: str = _choice("statement", "statement", "block")
    # Inside code that continues below the cursor, write candidates of up to a few lines and
    # show the one (cut at any line end) under which the next lines are most likely.
    fit_suffix: bool = True
    # With fit_suffix: the greedy answer and first lines from the next best first tokens. Unjudged (a FIM
    # prompt): where the stop rule leaves nothing of the greedy answer, up to candidates - 1 next best ones.
    candidates: int = _int(3, 1, 8)
    # With fit_suffix, in Python: where the code below reads a variable that nothing above defines
    # (``result.append(x)``, no ``result`` before), also judge answers that begin by defining it.
    define_names: bool = True
    # With fit_suffix: also write this many answers sampled from the model (temperature 0.7, the
    # 40 best tokens, seeded by the text) and judge them with the rest.
    samples: int = _int(0, 0, 8)
    # With fit_suffix: when, after the greedy answer's first line, the code below's first line is likely
    # (mean log-probability a token at least -0.5), judge only the greedy answer's own line ends.
    early_accept: bool = True
    # When the editor asks explicitly (VS Code's Alt+\ or its "next suggestion"; LSP's Invoked trigger):
    # up to this many other answers after the best, to cycle through (0: only the best).
    alternatives: int = _int(2, 0, 8)
    # Models trained with fill-in-the-middle tokens (Qwen2.5-Coder, StarCoder, DeepSeek-Coder) read the
    # code below the cursor in their prompt: "auto" writes the prompt with them where the engine reports
    # them (no judging then: the model sees the code below); "off": Phi-2's code format for every model.
    fim: str = _choice("auto", "auto", "off")
    # With FIM: at most this many tokens of the code after the cursor (whole lines). A new line recomputes
    # them (the code above changed), so they cost their prefill at every Enter.
    fim_suffix_tokens: int = _int(256, 0, 8192)
    # Signatures and docstrings of what the document imports from other modules of the
    # workspace, at the top of the prompt (at most a quarter of it).
    # Off by default: on the cross-file eval it paid on no model measured (Qwen2.5-Coder 1.5B: exact
    # 10 vs 11 of 32, edit similarity 0.617 vs 0.668; Gemma 3 270M and SmolLM2-135M likewise).
    project_context: bool = False
    # In Python, lines that make the code up to the cursor invalid (not just unfinished) go. The
    # server's own Python judges: turn this off for syntax newer than it.
    python_syntax: bool = True
    # The budget: how long a request may decode and judge once its prompt is computed (the prompt is
    # kept for the next keystroke, so it is never cut); 0 = no limit. When it runs out, the best answer
    # judged so far is shown, else the whole lines decoded so far (a first line is always finished).
    timeout_ms: int = _int(5000, 0, 600_000)
    warmup_ms: int = _int(150, 0, 60_000)  # prefill this long after the last edit; 0 = never
    # A document whose prompt is mostly not computed yet (just opened, or the cursor far from where it
    # was) is answered from a prompt of this many tokens around the cursor, under a cache entry of its
    # own, when that spares at least 1 s of prefill; the whole window is computed in idle time after.
    # 0 = always the whole window. On 2 cores (Qwen2.5-Coder 1.5B int4, 20 holes, the file open 3 s):
    # 768 kept the whole window's answers (8 exact, similarity 0.708 vs 0.71) and its first suggestion
    # came after 2.1 s instead of 7.0; 512 after 1.3 s but 5 exact, 0.587.
    near_window_tokens: int = _int(768, 0, 1_000_000)
    # While a suggestion is shown, compute the one that follows accepting it (engine time that no
    # request wants; any request preempts it); the editor's request after an accept is then answered at once.
    ahead: bool = True


@dataclass
class LogSettings:
    level: str = _choice("info", "debug", "info", "warning", "error")
    file: str = ""
    buffer_text: bool = False  # log prompts and suggestions (private code!)


@dataclass
class Settings:
    engine: EngineSettings = field(default_factory=EngineSettings)
    completion: CompletionSettings = field(default_factory=CompletionSettings)
    log: LogSettings = field(default_factory=LogSettings)


CONFIG_DIRS = (
    Path(__file__).resolve().parent.parent / "configs",  # source checkout
    Path(sys.prefix) / "share" / "phils" / "configs",  # installed wheel
)


def profile_path(name: str) -> Path | None:
    for directory in CONFIG_DIRS:
        candidate = directory / f"{name}.toml"
        if candidate.is_file():
            return candidate
    return None


def profile_names() -> list[str]:
    names = {p.stem for d in CONFIG_DIRS if d.is_dir() for p in d.glob("*.toml")}
    return sorted(names)


def merge(settings: Settings, values: Mapping[str, Any], source: str) -> tuple[Settings, list[str]]:
    """Return a copy of ``settings`` with ``values`` (a nested dict) applied.

    Each rejected key yields one warning ``"<source>: <key>: <why>"``.
    """
    result = copy.deepcopy(settings)
    warnings: list[str] = []
    if not isinstance(values, Mapping):
        return result, [f"{source}: expected a table of settings, got {type(values).__name__}"]
    for section_name, section_values in values.items():
        section = getattr(result, section_name, None) if section_name in _sections() else None
        if section is None:
            warnings.append(f"{source}: {section_name}: unknown section (known: {', '.join(_sections())})")
            continue
        if not isinstance(section_values, Mapping):
            warnings.append(f"{source}: {section_name}: expected a table")
            continue
        for key, raw in section_values.items():
            problem = _assign(section, key, raw)
            if problem:
                warnings.append(f"{source}: {section_name}.{key}: {problem}")
    return result, warnings


def parse_assignment(text: str) -> tuple[dict[str, Any], str | None]:
    """Turn ``section.key=value`` (value in TOML syntax, or a bare string) into a nested dict."""
    if "=" not in text:
        return {}, f"--set {text!r}: expected section.key=value"
    dotted, raw = (part.strip() for part in text.split("=", 1))
    if dotted.count(".") != 1:
        return {}, f"--set {text!r}: the key must be section.key, e.g. engine.max_new_tokens"
    section, key = dotted.split(".")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word: treat it as a string
    return {section: {key: value}}, None


def load_toml(path: str | Path) -> tuple[dict[str, Any], str | None]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f), None
    except OSError as exc:
        return {}, f"cannot read {path}: {exc.strerror}"
    except tomllib.TOMLDecodeError as exc:
        return {}, f"{path}: not valid TOML: {exc}"


def client_settings(options: Any) -> Mapping[str, Any]:
    """Settings from an editor: either the tree itself or wrapped as {"phils": tree}."""
    if isinstance(options, Mapping) and isinstance(options.get("phils"), Mapping):
        return options["phils"]
    return options if isinstance(options, Mapping) else {}


def as_dict(settings: Settings) -> dict[str, Any]:
    return dataclasses.asdict(settings)


def _sections() -> list[str]:
    return [f.name for f in dataclasses.fields(Settings)]


def _assign(section: Any, key: str, raw: Any) -> str | None:
    fields = {f.name: f for f in dataclasses.fields(section)}
    if key not in fields:
        return f"unknown setting (known: {', '.join(fields)})"
    spec = fields[key]
    expected = type(getattr(section, key))
    value = raw
    if expected is bool and not isinstance(raw, bool):
        return f"expected true or false, got {raw!r}"
    if expected is int and (isinstance(raw, bool) or not isinstance(raw, int)):
        return f"expected an integer, got {raw!r}"
    if expected is str and not isinstance(raw, str):
        return f"expected a string, got {raw!r}"
    if "choices" in spec.metadata:
        value = raw.lower() if isinstance(raw, str) else raw
        if value not in spec.metadata["choices"]:
            return f"expected one of {', '.join(map(str, spec.metadata['choices']))}, got {raw!r}"
    if "range" in spec.metadata:
        lo, hi = spec.metadata["range"]
        if not lo <= raw <= hi:
            return f"expected {lo}..{hi}, got {raw}"
    setattr(section, key, value)
    return None
