"""The ``phils`` command: argument parsing, logging set-up, and starting things.

Under stdio the protocol owns stdout, so logs go to stderr or a file, always.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
from pathlib import Path

from . import __version__
from .tools.testmodel import SHAPES
from .config import Settings, as_dict, load_toml, merge, parse_assignment, profile_names, profile_path

log = logging.getLogger("phils")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    return args.run(args)


# --- subcommands ------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    settings, warnings = resolve_settings(args)
    _setup_logging(settings)
    for warning in warnings:
        log.warning(warning)
    from .lsp.server import create_server

    server = create_server(settings, warnings)
    if args.tcp:
        log.info("phils %s listening on %s:%d", __version__, args.host, args.port)
        server.serve_tcp(args.host, args.port)
    else:
        log.info("phils %s serving over stdio", __version__)
        server.serve_stdio()
    return 0


def _complete(args: argparse.Namespace) -> int:
    settings, warnings = resolve_settings(args)
    if settings.engine.backend == "auto" and not args.shared:
        settings.engine.backend = "local"  # one completion: no engine left running afterwards
    _setup_logging(settings)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    from pygls.workspace import TextDocument

    from .lsp.completion import CompletionService, run_pipeline
    from .lsp.documents import cursor_context

    path = Path(args.file)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    doc = TextDocument(path.resolve().as_uri(), source)
    ctx = cursor_context(doc, args.line, args.col)
    if ctx is None:
        print(f"error: line {args.line}, column {args.col} is not in {path}", file=sys.stderr)
        return 1

    async def complete_once():
        service = CompletionService(settings)
        started = time.monotonic()
        await service.start()
        if service.state != "ready":
            return None, service.message, 0.0
        load_seconds = time.monotonic() - started
        try:
            return await run_pipeline(service.backend, ctx, settings), "", load_seconds
        finally:
            await service.close()

    import asyncio

    suggestion, problem, load_seconds = asyncio.run(complete_once())
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    here = {"line": args.line, "character": args.col}
    print(json.dumps({"text": suggestion.text if suggestion else "", "range": {"start": here, "end": here}}))
    if suggestion:
        print(
            f"engine ready in {load_seconds:.1f} s, completion {suggestion.total_ms:.0f} ms "
            f"({suggestion.prompt_tokens} prompt tokens, {suggestion.new_tokens} new, ended by {suggestion.reason})",
            file=sys.stderr,
        )
    return 0


def _engine(args: argparse.Namespace) -> int:
    """phils engine serve|start|status|stop."""
    settings, warnings = resolve_settings(args)
    from . import engine_control

    if args.action == "serve":
        _setup_logging(settings)
        for warning in warnings:
            log.warning(warning)
        return engine_control.serve(args, settings)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return {"start": engine_control.start, "status": engine_control.status, "stop": engine_control.stop}[args.action](
        args, settings)


def _make_test_model(args: argparse.Namespace) -> int:
    from .tools.testmodel import make_random_gptq, make_test_model

    started = time.monotonic()
    if args.gptq_bits:
        group_size = args.gptq_group or (32 if args.shape == "tiny" else 128)
        directory = make_random_gptq(args.directory, shape=args.shape, bits=args.gptq_bits, seed=args.seed,
                                     group_size=group_size, desc_act=args.gptq_act_order)
        kind = f"random {args.gptq_bits}-bit GPTQ ({group_size}g{', act-order' if args.gptq_act_order else ''}) {args.shape}"
    else:
        directory = make_test_model(args.directory, shape=args.shape, seed=args.seed, dtype=args.dtype)
        kind = f"random {args.dtype} {args.shape}"
    print(f"wrote a {kind} Phi model to {directory} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


def _bench_tool(module: str):
    """A bench command whose tool (and the torch it may need) is imported only when it runs."""
    def run(args: argparse.Namespace) -> int:
        tool = importlib.import_module(f".tools.{module}", __package__)
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        return tool.run(args)
    return run


def _results_args(parser: argparse.ArgumentParser, server_settings: bool = True) -> argparse.ArgumentParser:
    """The options every benchmark takes: extra server settings, the results file's name and folder."""
    if server_settings:
        parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="extra server settings")
    parser.add_argument("--name", help="results file name (default: the model's name)")
    parser.add_argument("--out", default="bench/results")
    return parser


def _bench_memory(args: argparse.Namespace) -> int:
    from .tools.bench_memory import run

    settings, warnings = resolve_settings(args)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return run(args, settings)


def _bench_load(args: argparse.Namespace) -> int:
    from .tools import bench_load

    server_args = ["--model", args.model, "--log-level", "warning"]
    for item in args.set or []:
        server_args += ["--set", item]
    if args.bench == "flood":
        result = bench_load.run_flood(server_args, seconds=args.seconds, edits_per_s=args.rate)
    else:
        result = bench_load.run_soak(server_args, seconds=args.seconds, documents=args.documents)
    command = "phils " + " ".join(sys.argv[1:])
    path = bench_load.write_results(result, args.name or Path(args.model).name, command, Path(args.out))
    print(json.dumps(result, indent=2))
    print(f"results: {path}", file=sys.stderr)
    return 0 if result["server_alive"] and not result["unanswered"] else 1


def _eval_humaneval(args: argparse.Namespace) -> int:
    from .tools.eval_humaneval import run

    # Long enough for whole function bodies; no warm-up: each problem is asked once.
    return _run_eval(args, run, f"engine.max_new_tokens={args.max_new_tokens}", "completion.max_lines=120",
                     "completion.warmup_ms=0")


def _eval_infill(args: argparse.Namespace) -> int:
    from .tools.eval_infill import run

    return _run_eval(args, run, "completion.warmup_ms=0")  # each case is asked once


def _eval_crossfile(args: argparse.Namespace) -> int:
    from .tools.eval_crossfile import run

    return _run_eval(args, run, "completion.warmup_ms=0")  # each case is asked once


def _eval_realcode(args: argparse.Namespace) -> int:
    from .tools.eval_realcode import run

    return _run_eval(args, run, "completion.warmup_ms=0")  # each hole is asked once, as soon as its file opens


def _eval_blocks(args: argparse.Namespace) -> int:
    from .tools.eval_blocks import run

    return _run_eval(args, run, "completion.warmup_ms=0")  # each hole is asked once, as soon as its file opens


def _run_eval(args: argparse.Namespace, run, *extra_settings: str) -> int:
    """Resolve the settings with the eval's own on top, and pass the same to the servers it starts."""
    args.set = [*(args.set or []), *extra_settings]
    settings, warnings = resolve_settings(args)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    server_args = ["--log-level", "warning"]
    for flag in ("config", "profile", "model", "device"):
        if getattr(args, flag):
            server_args += [f"--{flag}", str(getattr(args, flag))]
    for item in args.set:
        server_args += ["--set", item]
    return run(args, settings, server_args)


def _doctor(args: argparse.Namespace) -> int:
    from .doctor import main

    return main(args.json)


def _config(args: argparse.Namespace) -> int:
    settings, warnings = resolve_settings(args)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(json.dumps(as_dict(settings), indent=2))
    return 0


# --- settings from the command line -----------------------------------------


def resolve_settings(args: argparse.Namespace) -> tuple[Settings, list[str]]:
    """Defaults → profile → --config file → flags → --set, with every problem as a warning."""
    settings, warnings = Settings(), []

    def layer(values: dict, source: str) -> None:
        nonlocal settings
        settings, problems = merge(settings, values, source)
        warnings.extend(problems)

    if args.profile:
        path = profile_path(args.profile)
        if path is None:
            warnings.append(f"--profile {args.profile}: no such profile (have: {', '.join(profile_names())})")
        else:
            values, problem = load_toml(path)
            warnings.extend([problem] if problem else [])
            layer(values, f"profile {args.profile}")
    if args.config:
        values, problem = load_toml(args.config)
        warnings.extend([problem] if problem else [])
        layer(values, str(args.config))
    flags = {
        "engine": {k: v for k, v in (("model", args.model), ("device", args.device)) if v is not None},
        "log": {k: v for k, v in (("file", args.log_file), ("level", args.log_level)) if v is not None},
    }
    layer({k: v for k, v in flags.items() if v}, "command line")
    for assignment in args.set or []:
        values, problem = parse_assignment(assignment)
        warnings.extend([problem] if problem else [])
        layer(values, "--set")
    return settings, warnings


def _setup_logging(settings: Settings) -> None:
    handler: logging.Handler
    if settings.log.file:
        try:
            handler = logging.FileHandler(settings.log.file, encoding="utf-8")
        except OSError as exc:
            handler = logging.StreamHandler(sys.stderr)
            print(f"phils: cannot open log file {settings.log.file}: {exc}; logging to stderr", file=sys.stderr)
    else:
        handler = logging.StreamHandler(sys.stderr)  # never stdout: that is the protocol stream
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log.level.upper())
    # pygls logs whole messages (document text included) at debug level.
    if not settings.log.buffer_text:
        logging.getLogger("pygls").setLevel(max(logging.WARNING, root.level))


def _llama_baselines(p: argparse.ArgumentParser) -> None:
    """An eval's baselines from llama-server on the same GGUF (``tools/llama_baselines``)."""
    p.add_argument("--baseline", choices=["llama-raw", "llama-infill"],
                   help="a baseline from a running llama-server on the same GGUF (--llama-url): its raw "
                        "continuation, or /infill as llama.vim asks it")
    p.add_argument("--llama-url", default="http://127.0.0.1:8089", help="the llama-server for --baseline")
    p.add_argument("--max-new-tokens", type=int, default=64, help="the baselines' token budget")


def _from_packages(p: argparse.ArgumentParser, what: str, per_package: int) -> None:
    """An eval whose cases come from installed packages' modules."""
    p.add_argument("--packages", default="", help=f"installed packages to take {what} from, comma-separated "
                                                  "(default: aiohttp, pygls, prometheus_client, huggingface_hub)")
    p.add_argument("--per-package", type=int, default=per_package, help=f"{what} per package")



def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="phils", description="Inline code completions from Phi-2 over LSP.")
    parser.add_argument("--version", action="version", version=f"phils {__version__}")
    commands = parser.add_subparsers(dest="command")

    def with_settings(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", metavar="FILE", help="a TOML settings file")
        p.add_argument("--profile", metavar="NAME", help=f"a profile from configs/ ({', '.join(profile_names())})")
        p.add_argument("--model", metavar="ID_OR_DIR", help="hub id, local dir, .gguf file or package:NAME")
        p.add_argument("--device", choices=["auto", "cpu", "cuda"])
        p.add_argument("--log-file", metavar="FILE")
        p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="e.g. engine.max_new_tokens=8 (repeatable)")
        return p

    serve = with_settings(commands.add_parser("serve", help="run the language server (stdio by default)"))
    serve.add_argument("--tcp", action="store_true", help="listen on TCP instead of stdio")
    serve.add_argument("--stdio", action="store_true", help="serve over stdio (the default; accepted for clients that pass it)")
    serve.add_argument("--host", default="127.0.0.1", help="TCP address (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=2087)
    serve.set_defaults(run=_serve)

    complete = with_settings(commands.add_parser("complete", help="print the suggestion at a position as JSON"))
    complete.add_argument("file")
    complete.add_argument("--line", type=int, required=True, help="0-based line, as in LSP")
    complete.add_argument("--col", type=int, required=True, help="0-based column in UTF-16 units, as in LSP")
    complete.add_argument("--shared", action="store_true",
                          help="use (or start) the shared engine instead of loading the model in this process")
    complete.set_defaults(run=_complete)

    engine = with_settings(commands.add_parser(
        "engine", help="the shared engine: serve (run it here), start (detached), status, stop"))
    engine.add_argument("action", choices=["serve", "start", "status", "stop"])
    engine.add_argument("--socket", metavar="PATH", help="serve on this Unix socket (default: the per-user one)")
    engine.add_argument("--tcp", action="store_true", help="serve on TCP (127.0.0.1) with a bearer token")
    engine.add_argument("--host", default="127.0.0.1")
    engine.add_argument("--port", type=int, default=8765)
    engine.add_argument("--token-file", metavar="FILE", help="TCP: the bearer token file (default: in the runtime dir)")
    engine.add_argument("--engine-json", metavar="JSON", help=argparse.SUPPRESS)  # how a front passes its settings
    engine.add_argument("--all", action="store_true", help="stop: every engine of this user")
    engine.set_defaults(run=_engine)

    make = commands.add_parser("make-test-model", help="build a random Phi model with an offline tokenizer")
    make.add_argument("directory")
    make.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--gptq-bits", type=int, choices=[4, 8],
                      help="write random packed GPTQ weights of this width instead (speed benchmarks; no calibration)")
    make.add_argument("--gptq-group", type=int, choices=[32, 64, 128], help="GPTQ group size (default 32 tiny, 128 else)")
    make.add_argument("--gptq-act-order", action="store_true", help="GPTQ act-order (desc_act), as TheBloke's *-actorder_True")
    make.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                      help="saved weights' type (float16: Phi-2's own checkpoint type)")
    make.set_defaults(run=_make_test_model)

    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True)
    keys = bench.add_parser("keystrokes", help="replay typing a file into a server; cache off vs on")
    keys.add_argument("--model", required=True, help="model for the server (a local dir gives the decode floor)")
    keys.add_argument("--file", required=True, help="a real Python file to type")
    keys.add_argument("--prompt-lines", type=int, default=120, help="lines opened before typing starts")
    keys.add_argument("--requests", type=int, default=8, help="completions to request (one per typed line)")
    keys.add_argument("--off-requests", type=int, help="fewer requests for the slow cache-off mode")
    keys.add_argument("--new-tokens", type=int, default=16, help="tokens generated per request")
    keys.add_argument("--modes", default="cache-off,cache-on,cache-on+warmup")
    keys.add_argument("--typing-ms", type=float, default=0, help="pause between keystrokes")
    keys.add_argument("--warmup-ms", type=int, default=100, help="completion.warmup_ms in the warm-up mode")
    _results_args(keys)
    keys.set_defaults(run=_bench_tool("bench"))
    runtimes = bench.add_parser("runtimes", help="phils' CPU runtimes and llama.cpp on the same weights, one sitting")
    runtimes.add_argument("--model", required=True, help="a local transformers checkpoint directory, or any engine.model")
    runtimes.add_argument("--file", required=True, help="a real Python file to type")
    runtimes.add_argument("--runtimes", default="int8,int4", help="from fp32, int8, int4, int4-mlas, int4-b128, int4-gguf-4bit, int4-requantize, gptq, llama.cpp")
    runtimes.add_argument("--gptq-model", help="gptq: a GPTQ checkpoint of the same shape (make-test-model --gptq-bits 4)")
    runtimes.add_argument("--gguf", help="llama.cpp: the GGUF file of the same weights (e.g. q4_0)")
    runtimes.add_argument("--llama-server", help="llama.cpp: the llama-server binary")
    runtimes.add_argument("--prompt-lines", type=int, default=80, help="lines opened before typing starts")
    runtimes.add_argument("--requests", type=int, default=8, help="completions to request (one per typed line)")
    runtimes.add_argument("--new-tokens", type=int, default=16, help="tokens generated per request")
    runtimes.add_argument("--typing-ms", type=float, default=100, help="pause between keystrokes")
    _results_args(runtimes)
    runtimes.set_defaults(run=_bench_tool("bench_runtimes"))
    accept = bench.add_parser("accept", help="the request after accepting a suggestion; completion.ahead off vs on")
    accept.add_argument("--model", required=True)
    accept.add_argument("--file", required=True, help="a real Python file, cut at line starts")
    accept.add_argument("--requests", type=int, default=12, help="suggestions to accept")
    accept.add_argument("--prompt-lines", type=int, default=40, help="the first cut comes after this many lines")
    accept.add_argument("--read-ms", type=float, default=600, help="time the user reads a suggestion before accepting")
    accept.add_argument("--modes", default="ahead-off,ahead-on")
    _results_args(accept)
    accept.set_defaults(run=_bench_tool("bench_accept"))
    midcode = bench.add_parser("midcode", help="time to a suggestion mid-code in real modules; judged vs plain")
    midcode.add_argument("--model", help="model for the server")
    midcode.add_argument("--profile", help="or a profile (e.g. qwen-coder)")
    midcode.add_argument("--holes", type=int, default=20, help="modules, one blanked line each")
    midcode.add_argument("--max-line", type=int, default=160, help="holes within a module's first lines (~1 500 tokens)")
    midcode.add_argument("--open-pause", type=float, default=3.0, help="seconds the file is open before the first request")
    midcode.add_argument("--cursor-notify", choices=("on", "off"), default="on",
                         help="send phils/didMoveCursor at the hole when the file opens, as phils' editor clients do")
    midcode.add_argument("--burst", type=int, default=4, help="characters typed between pauses")
    midcode.add_argument("--pauses", type=int, default=3, help="pauses (requests) while typing the line back")
    midcode.add_argument("--typing-ms", type=float, default=80, help="time between keystrokes in a burst")
    midcode.add_argument("--modes", default="judged,plain")
    _results_args(midcode)
    midcode.set_defaults(run=_bench_tool("bench_midcode"))
    for name, help_text, seconds in (("flood", "didChange at a fixed rate with completions, cancels and probes", 10),
                                     ("soak", "typing bursts into several documents for a while", 120)):
        load = bench.add_parser(name, help=help_text)
        load.add_argument("--model", required=True)
        load.add_argument("--seconds", type=float, default=seconds)
        load.add_argument("--rate", type=int, default=1000, help="edits per second (flood)")
        load.add_argument("--documents", type=int, default=5, help="documents open at once (soak)")
        _results_args(load)
        load.set_defaults(run=_bench_load)

    windows = bench.add_parser("windows", help="N windows typing at once: one shared engine vs a server each")
    windows.add_argument("--model", help="model for every window")
    windows.add_argument("--profile", help="or a profile (e.g. gemma3)")
    windows.add_argument("--windows", default="1,2,4", help="window counts to run (comma-separated)")
    windows.add_argument("--new-tokens", type=int, default=16, help="tokens generated per request")
    _results_args(windows)
    windows.set_defaults(run=_bench_tool("bench_windows"))

    memory = with_settings(bench.add_parser("memory", help="resident memory and load peak of a model, fresh process"))
    memory.add_argument("--prompt-tokens", type=int, default=1000, help="one generation on a prompt this long")
    memory.add_argument("--new-tokens", type=int, default=48, help="tokens decoded (timed one by one)")
    _results_args(memory, server_settings=False)  # its settings come from with_settings
    memory.set_defaults(run=_bench_memory)

    doctor = commands.add_parser("doctor", help="what this machine has for running a model, and what to use")
    doctor.add_argument("--json", action="store_true")
    doctor.set_defaults(run=_doctor)

    evals = commands.add_parser("eval", help="quality evaluations").add_subparsers(dest="eval", required=True)
    humaneval = with_settings(evals.add_parser("humaneval", help="HumanEval pass@1 through the LSP path"))
    humaneval.add_argument("--limit", type=int, help="only the first N problems")
    humaneval.add_argument("--raw", action="store_true", help="the baseline: the model alone, no phils")
    humaneval.add_argument("--baseline", choices=["llama-raw"],
                           help="the raw baseline from a running llama-server on the same GGUF (--llama-url)")
    humaneval.add_argument("--llama-url", default="http://127.0.0.1:8089", help="the llama-server for --baseline")
    humaneval.add_argument("--max-new-tokens", type=int, default=256)
    _results_args(humaneval, server_settings=False)
    humaneval.set_defaults(run=_eval_humaneval)

    infill = with_settings(evals.add_parser("infill", help="completions in the middle of tested code (blanked lines)"))
    infill.add_argument("--limit", type=int, help="only the first N problems")
    infill.add_argument("--kind", choices=["line", "span", "call", "both", "all"], default="both",
                        help="both: line and span; call: a call's arguments in the middle of its line; all: the three")
    infill.add_argument("--raw", action="store_true", help="the baseline: the model's plain greedy continuation")
    infill.add_argument("--at-line-start", action="store_true",
                        help="the cursor at column 0 of the blanked line (after Enter, before the editor indents)")
    _llama_baselines(infill)
    _results_args(infill, server_settings=False)
    infill.set_defaults(run=_eval_infill)

    crossfile = with_settings(evals.add_parser(
        "crossfile", help="lines that call another module of the same package, with and without its signatures"))
    _from_packages(crossfile, "cases", 25)
    _results_args(crossfile, server_settings=False)
    crossfile.set_defaults(run=_eval_crossfile)

    realcode = with_settings(evals.add_parser(
        "realcode", help="one line blanked in a function of an installed package's module, the module the document"))
    _from_packages(realcode, "holes", 10)
    _llama_baselines(realcode)
    _results_args(realcode, server_settings=False)
    realcode.set_defaults(run=_eval_realcode)

    blocks = with_settings(evals.add_parser(
        "blocks", help="a small block blanked in C/C++/Go/Rust/Java/JS/TS files, the file the document"))
    blocks.add_argument("--source", required=True, help="a folder of brace-language source files (searched deeply)")
    blocks.add_argument("--limit", type=int, default=40, help="holes at most (two a file)")
    _llama_baselines(blocks)
    blocks.set_defaults(max_new_tokens=128)
    _results_args(blocks, server_settings=False)
    blocks.set_defaults(run=_eval_blocks)

    config = with_settings(commands.add_parser("config", help="print the resolved settings"))
    config.set_defaults(run=_config)
    return parser
