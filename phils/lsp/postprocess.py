"""Small pure filters that turn raw model output into the suggestion to show.

``shape_of`` derives the stop rule's shape from the cursor (the rule itself,
``stoprule.stop_index``, also runs in the engine's decode loop); ``apply``
runs the ordered filters on the final text.
"""

from __future__ import annotations

import ast
import codeop
import io
import re
import tokenize
import warnings
from dataclasses import replace
from typing import Callable
from urllib.parse import unquote

from ..stoprule import (CJK, CLOSERS, FENCE, OPENERS, SEPARATORS, Shape, at_code, code_chars, indent_width,
                        invented_member, is_comment, leaves_open, lexed, stop_index)
from . import outline, unbound
from .documents import CursorContext
from .members import of_class_at_cursor


def shape_of(ctx: CursorContext, multiline: bool = True, max_lines: int = 24, mid_block: str = "statement") -> Shape:
    """The stop rule's shape at the cursor: the code after the cursor decides how much to write.

    - the next line of code is indented deeper than the cursor: it is the body
      of the statement being written, so one line (its header);
    - it is at the cursor's level (the block goes on below): one statement
      (``mid_block = "statement"``: a line, or a compound statement's header
      and body) or the rest of the block (``"block"``);
    - the code being written ends here (an empty body, the end of its block,
      the end of the file): a block of up to ``max_lines``.

    Every kind ends where a line resumes the code below, and never writes the
    enclosing signature or docstring again.
    """
    min_indent = _block_indent(ctx)
    above = ctx.prefix[-MAX_OUTLINE_CHARS:].splitlines(keepends=True)  # (the outline's lines: read twice below)
    following = ctx.next_line
    string_end = open_triple_quote(ctx.prefix) if is_python(ctx) else ""
    below = indent_width(following) if following.strip() else -1
    return Shape(
        single_line=ctx.single_line or not multiline,
        min_indent=min_indent,
        line_prefix=ctx.line_prefix,
        max_lines=1 if below > min_indent else max_lines,
        resume=following.strip(),
        resume_indent=indent_width(following) if following.strip() else -1,
        avoid=_enclosing_lines(above),
        statement=below == min_indent and mid_block == "statement",
        code=not is_prose(ctx),
        line_suffix=ctx.line_suffix,
        string_end=string_end,
        string_end_below=bool(string_end) and string_end in ctx.suffix,
        closes_brackets=pairs_brackets(ctx),
        comment=line_comment(ctx),
        one_definition=is_python(ctx) and outline.enclosing_def_indent(above, min_indent) is None,
        cjk=CJK.search(ctx.prefix) is not None or CJK.search(ctx.suffix) is not None,
        members=of_class_at_cursor(ctx.prefix, ctx.suffix, min_indent) if is_python(ctx) else None,
        fences=(_language_in(ctx, MARKDOWN_LANGUAGES, MARKDOWN_SUFFIXES) or FENCE in ctx.prefix
                or FENCE in ctx.suffix),
    )


def open_triple_quote(source: str) -> str:
    """The triple quote (double or single) that opens the string Python ``source`` ends inside, or ""."""
    last = max(source.rfind('"""'), source.rfind("'''"))
    if last < 0 or source.count(source[last:last + 3]) % 2 == 0 or len(source) > MAX_PARSE_CHARS:
        return ""  # the cheap answer; tokenizing (below) is for the rare odd count
    try:
        for _ in tokenize.generate_tokens(io.StringIO(source).readline):
            pass
    except tokenize.TokenError as exc:
        message, (line, column) = exc.args
        if "multi-line string" not in message:
            return ""
        opened = source.splitlines()[line - 1][column:].lstrip("rRbBuUfF")[:3]
        return opened if opened in ('"""', "'''") else ""
    except (SyntaxError, ValueError):
        return ""
    return ""


# Documents where a Markdown fence is content, not the model leaving the code.
PROSE_LANGUAGES = frozenset({"markdown", "mdx", "plaintext", "text", "restructuredtext", "latex", "tex", "quarto",
                             "rmd", "asciidoc", "org", "git-commit", "gitcommit"})
PROSE_SUFFIXES = (".md", ".markdown", ".mdx", ".txt", ".rst", ".tex", ".qmd", ".rmd", ".adoc", ".org",
                  "commit_editmsg")
# Prose whose own syntax has Markdown's fences; in other prose (a commit message, plain text) a fence the text
# writes is the model turning to code, unless the document has one itself.
MARKDOWN_LANGUAGES = frozenset({"markdown", "mdx", "quarto", "rmd"})
MARKDOWN_SUFFIXES = (".md", ".markdown", ".mdx", ".qmd", ".rmd")


def is_python(ctx: CursorContext) -> bool:
    return _language_in(ctx, {"python"}, (".py", ".pyi"))


def is_prose(ctx: CursorContext) -> bool:
    """The document is text with code in it."""
    return _language_in(ctx, PROSE_LANGUAGES, PROSE_SUFFIXES)


# Code whose brackets need not pair up on their own (a shell `case`'s `start)`), or that has no brackets to pair.
UNPAIRED_LANGUAGES = frozenset({"python", "shellscript", "bash", "sh", "zsh", "fish", "ksh", "makefile"})
UNPAIRED_SUFFIXES = (".py", ".pyi", ".sh", ".bash", ".zsh", ".fish", ".ksh", "makefile")


def pairs_brackets(ctx: CursorContext) -> bool:
    """Code whose brackets must pair up: C, Go, Rust, Java, JavaScript… (Python has its own parser check)."""
    return not is_prose(ctx) and not _language_in(ctx, UNPAIRED_LANGUAGES, UNPAIRED_SUFFIXES)


# Line comment markers by language: the ones that do not use `//` (which every other code language with
# paired brackets does: C, C++, C#, Go, Rust, Java, JavaScript, TypeScript, Kotlin, Swift…).
HASH_COMMENT_LANGUAGES = frozenset({"python", "shellscript", "bash", "sh", "zsh", "fish", "ksh", "makefile", "ruby",
                                    "perl", "r", "yaml", "toml", "dockerfile", "powershell", "cmake", "elixir",
                                    "julia", "nim", "coffeescript", "graphql", "terraform"})
HASH_COMMENT_SUFFIXES = (".py", ".pyi", ".sh", ".bash", ".zsh", ".fish", ".ksh", "makefile", ".rb", ".pl", ".r",
                         ".yaml", ".yml", ".toml", "dockerfile", ".ps1", ".cmake", ".ex", ".exs", ".jl", ".nim")
DASH_COMMENT_LANGUAGES = frozenset({"sql", "lua", "haskell", "elm", "ada", "vhdl"})
DASH_COMMENT_SUFFIXES = (".sql", ".lua", ".hs", ".elm", ".adb", ".ads", ".vhd")


def line_comment(ctx: CursorContext) -> str:
    """The document's line comment marker, or "" where it is not known (prose, unknown languages without brackets)."""
    return _known_comment(ctx) or ("//" if pairs_brackets(ctx) else "")


def _known_comment(ctx: CursorContext) -> str:
    """The line comment marker of the document's language where the language is one phils knows, else ""."""
    for marker, languages, suffixes in (("#", HASH_COMMENT_LANGUAGES, HASH_COMMENT_SUFFIXES),
                                        ("--", DASH_COMMENT_LANGUAGES, DASH_COMMENT_SUFFIXES),
                                        ("//", SLASH_COMMENT_LANGUAGES, SLASH_COMMENT_SUFFIXES)):
        if _language_in(ctx, languages, suffixes):
            return marker
    return ""


# Languages whose line comment is `//` for certain (``line_comment`` also gives it to any other bracket language).
SLASH_COMMENT_LANGUAGES = frozenset({"c", "cpp", "csharp", "java", "javascript", "javascriptreact", "typescript",
                                     "typescriptreact", "go", "rust", "kotlin", "swift", "scala", "dart", "zig",
                                     "objective-c", "objective-cpp", "groovy", "php", "solidity", "proto"})
SLASH_COMMENT_SUFFIXES = (".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".cs", ".java", ".js", ".jsx", ".mjs", ".cjs",
                          ".ts", ".tsx", ".go", ".rs", ".kt", ".kts", ".swift", ".scala", ".dart", ".zig", ".m",
                          ".groovy", ".php", ".sol", ".proto")


def file_name_comment(ctx: CursorContext) -> str:
    """A comment line naming the document's file (``// main.go``), in a language whose line comment is
    known for certain; "" elsewhere (prose, markup, unknown languages)."""
    name = unquote(ctx.uri.rstrip("/").rsplit("/", 1)[-1])
    marker = _known_comment(ctx)
    return f"{marker} {name}\n" if marker and name and not any(ch in name for ch in "\r\n") else ""


def _language_in(ctx: CursorContext, languages: frozenset[str] | set[str], suffixes: tuple[str, ...]) -> bool:
    """By the client's language id, else by the document's file name."""
    if ctx.language_id:
        return ctx.language_id.lower() in languages
    return ctx.uri.lower().endswith(suffixes)


FIT_LINES = 4  # candidates judged by the code below are written up to this many lines
FIT_SUFFIX_LINES = 3  # and judged by this many lines of it


def fitted(ctx: CursorContext, shape: Shape) -> tuple[Shape, str]:
    """Mid-code: the shape candidates are written in, and the code after the cursor that judges them.

    Where the enclosing function (or the module's code) goes on below the
    cursor, candidates run to up to ``FIT_LINES`` lines and the engine picks
    the answer (any prefix of whole lines) the next lines follow best; one
    line or many is then the model's judgement, not an indentation rule's.
    Where nothing follows, returns ``shape`` and "": a whole block; where the
    enclosing function ends at the cursor, a block down to its body's
    indentation, and "". At the end of a line being typed (code before the
    cursor, nothing after it), also "": the plain rest of the line. Measured on
    ``phils bench midcode`` (Qwen2.5-Coder 1.5B int4, 20 stdlib holes typed
    back): judging there completed the typed line 30 times where the plain
    answer did 29, at 8.4× its p50 (1 095 vs 130 ms), and offered a new line
    under a line just finished in 5 of them.
    """
    following = ctx.next_line
    if not following.strip() or (ctx.line_prefix.strip() and not ctx.line_suffix.strip()):
        return shape, ""
    function = outline.enclosing_def_indent(ctx.prefix[-MAX_OUTLINE_CHARS:].split("\n"), shape.min_indent)
    if not shape.single_line and function is not None and indent_width(following) <= function:
        # The function being written ends here (the code below is another def, or the code of the
        # function around it): a block, as far as the function's body goes (`return False` in the
        # loop, then `return True` after it).
        return replace(shape, min_indent=min(shape.min_indent, function + 1)), ""
    lines, code = [], 0
    for line in ctx.suffix.split("\n"):
        lines.append(line)
        code += bool(line.strip()) and len(lines) > 1
        if code >= FIT_SUFFIX_LINES:
            break
    judged = "\n".join(lines)
    if shape.single_line:
        return shape, judged
    # The answer may close the cursor's block and go on outside it (`return 0` and then
    # `elif n == 1:`), as far as the function's body: the judgement says where it ends.
    body = 0 if function is None else function + 1
    return replace(shape, statement=False, max_lines=FIT_LINES, min_indent=min(shape.min_indent, body)), judged


def names_to_define(ctx: CursorContext, shape: Shape) -> tuple[str, ...]:
    """In Python, on a line of its own: the names the rest of the enclosing function (or the module's
    code) reads that nothing defines but the answer (``unbound``)."""
    if ctx.line_prefix.strip() or ctx.line_suffix.strip() or not is_python(ctx):
        return ()
    before = ctx.prefix[-MAX_OUTLINE_CHARS:]
    function = outline.enclosing_def_indent(before.split("\n"), len(ctx.line_prefix) or shape.min_indent)
    return tuple(unbound.names_to_bind(before, ctx.suffix, 0 if function is None else function + 1))


def _enclosing_lines(lines: list[str]) -> tuple[str, ...]:
    """The enclosing def/class headers and docstrings around the end of ``lines``, stripped: not to be written
    again."""
    kept = []
    for line in outline.enclosing_headers(lines).values():
        stripped = line.strip()
        if len(stripped.strip("\"'")) > 3 and not stripped.startswith("#"):
            kept.append(stripped)
    return tuple(dict.fromkeys(kept))


MAX_OUTLINE_CHARS = 32_000


def drop_unfinished_line(text: str) -> str:
    """Generation was cut short (token limit, deadline): keep only whole lines."""
    return text.rsplit("\n", 1)[0] if "\n" in text.rstrip() else text


def closed_end(text: str, comment: str = "", before: str = "") -> str:
    """A one-line answer cut short, back to where it last had closed every bracket and string it opened
    (SQL's `... OR email LIKE '%@icloud.com' OR email LIKE '%@` ends after `'%@icloud.com'`); as it is
    where nothing is left open, or where it never had closed them (`compute(a, b`: the rest comes later).
    A comment the answer added after its code and that the cut ends in goes (Qwen2.5-Coder 1.5B in SQL:
    `email = 'a@b.c' LIMIT 1; -- This query will return the first user with ...`, to the token limit).
    ``before``: the cursor's line up to the answer (a string open there is the answer's to close)."""
    line = before + text
    if "\n" in text.strip() or '"""' in line or "'''" in line:
        return text
    depth, in_string, closed, read = 0, False, None, 0
    for index, char, kind in lexed(line, comment):
        read, in_string = index + 1, kind == "string"
        if index < len(before):
            continue
        if kind == "close" and depth == 0:
            closed = index + 1
        elif kind == "code" and char in OPENERS:
            depth += 1
        elif kind == "code" and char in CLOSERS:
            depth = max(depth - 1, 0)  # (a bracket opened before the answer closes at 0)
            closed = index + 1 if depth == 0 else closed
    if read < len(line):  # it ends in a comment, cut mid-sentence: the code before it, if the answer wrote it
        return line[len(before):read].rstrip() if read > len(before) and line[len(before):read].strip() else text
    if not in_string and depth == 0 or closed is None:
        return text
    return line[len(before):closed]


# --- the filters, in order --------------------------------------------------


def cut_at_stop(text: str, ctx: CursorContext, shape: Shape) -> str:
    cut = stop_index(text, shape)
    text = text if cut is None else text[:cut]
    # The text is final: a name at its very end is whole now (`return self.size`, which the stop rule, still
    # waiting for what follows the name, let through).
    if (at := invented_member(text + "\n", shape)) is not None:
        text = text[:max(text.rfind("\n", 0, at), 0)]
    return text


CONTROL_MARKER = re.compile(r"<\|[A-Za-z_]+\|>")


def drop_control_markers(text: str, ctx: CursorContext, shape: Shape) -> str:
    """The text ends before a model's control marker written as text (``<|cursor|>``, ``<|endoftext|>``,
    seen with Qwen2.5-Coder 1.5B in C++) that the document does not hold itself."""
    for found in CONTROL_MARKER.finditer(text):
        if found.group() not in ctx.prefix and found.group() not in ctx.suffix:
            return text[: found.start()].rstrip()
    return text


def drop_doubled_space(text: str, ctx: CursorContext, shape: Shape) -> str:
    """After a space the user typed in a line of code, the text's own leading space would double it
    (`import ` + ` { Component } from 'react';`: Qwen2.5-Coder 1.5B at a file's first line wrote the
    healed space again, then its usual one); it goes, but before a comment (two spaces before an
    inline comment are a style)."""
    if not ctx.line_prefix.strip() or not ctx.line_prefix.endswith((" ", "\t")) or text[:1] not in (" ", "\t"):
        return text
    rest = text.lstrip(" \t")
    return text if not rest or is_comment(rest, shape.comment) else rest


def trim_trailing_whitespace(text: str, ctx: CursorContext, shape: Shape) -> str:
    """Whitespace at line ends goes, but the space the text puts before the rest of the cursor's line
    (`math.pi * |r` + `r * `) where that rest has none of its own."""
    trimmed = "\n".join(line.rstrip() for line in text.split("\n")).rstrip()
    rest = ctx.line_suffix
    if trimmed and rest.strip() and not rest[:1].isspace() and rest[0] not in CLOSERS + SEPARATORS + ".:" \
            and text.startswith(trimmed):
        gap = text[len(trimmed):]
        return trimmed + gap if gap and "\n" not in gap else trimmed
    return trimmed


def skip_leading_blank_lines(text: str, ctx: CursorContext, shape: Shape) -> str:
    """On an empty line the code belongs right here, not one line down."""
    if ctx.line_prefix.strip() or "\n" not in text or text.split("\n", 1)[0].strip():
        return text
    lines = text.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return ""
    first = lines[0]
    typed = ctx.line_prefix
    lines[0] = first[len(typed):] if first.startswith(typed) else first.lstrip()
    return "\n".join(lines)


def drop_overlap_with_line_suffix(text: str, ctx: CursorContext, shape: Shape) -> str:
    """``x = |"`` + ``hello"`` → ``hello``: don't insert what already follows the cursor.

    (A rest of the line that begins with a bracket or separator already ended
    the text in the stop rule, before the model wrote it again.)
    """
    rest = ctx.line_suffix.strip()
    if rest and rest[0] not in CLOSERS + SEPARATORS and text.rstrip().endswith(rest):
        kept = text.rstrip()[: -len(rest)]
        # The space before the rest is the text's where the rest has none of its own: `pi * |r` + `r * r`
        # → `r * ` (not `r *`, which would make `pi * r *r`).
        return kept.rstrip() if ctx.line_suffix[:1].isspace() or not kept.strip() else kept
    return text


_PAIRS = {")": "(", "]": "[", "}": "{"}


def balance_brackets(text: str, ctx: CursorContext, shape: Shape) -> str:
    """Drop closing brackets at the end of a one-line suggestion that the line already closes.

    ``print(|)`` + ``x, y))`` → ``x, y``: with the ``)`` after the cursor, one ``)`` is enough.
    """
    if "\n" in text or not ctx.line_suffix.strip():
        return text
    in_code = at_code(ctx.line_prefix, shape.comment)  # else the brackets being balanced are a string's
    while text and text[-1] in _PAIRS:
        line = ctx.line_prefix + text + ctx.line_suffix
        code = "".join(char for _, char in code_chars(line, shape.comment)) if in_code else line
        closer = text[-1]
        if code.count(closer) <= code.count(_PAIRS[closer]):
            break
        text = text[:-1].rstrip()
    return text


def drop_lines_that_follow(text: str, ctx: CursorContext, shape: Shape) -> str:
    """A multi-line suggestion that ends by repeating the lines below the cursor stops before them."""
    if "\n" not in text:
        return text
    following = [_indented(line) for line in ctx.suffix.split("\n")[1:] if line.strip()]
    if not following:
        return text
    lines = text.split("\n")
    for start in range(1, len(lines)):
        # At their own depth: a Go or Rust answer's own closing `}` is not the function's `}` below it.
        tail = [_indented(line) for line in lines[start:] if line.strip()]
        if tail and tail == following[: len(tail)]:
            return "\n".join(lines[:start]).rstrip()
    return text


RUN_AFTER_LINES = 6  # how many lines below the cursor a line the code runs after the cursor's block is looked for in


def drop_lines_run_after_the_block(text: str, ctx: CursorContext, shape: Shape) -> str:
    """A later line of a suggestion that the code below runs anyway, once out of the cursor's block, ends it.

    The line below is found less indented than the suggestion's, with nothing between it and the cursor
    less indented still: whatever the block does, that line runs after it, and a copy inside the block
    would run twice. HumanEval/9 (Qwen2.5-Coder 1.5B, FIM): ``running_max = n`` in ``if running_max is
    None:`` went on with ``result.append(running_max)``, which follows the if/else below one level up.
    A copy at the same indentation (the same ``return y`` in an if and in its else) is left alone.
    """
    if "\n" not in text:
        return text
    below: list[tuple[int, str]] = []  # the lines below that run whatever the cursor's block does
    lowest, seen = None, 0
    for line in ctx.suffix.split("\n")[1:]:
        if line.strip() and seen < RUN_AFTER_LINES:
            seen += 1
            depth = indent_width(line)
            if lowest is None or depth <= lowest:  # not inside a block below (an else branch)
                lowest = depth
                below.append((depth, line.strip()))
    lines = text.split("\n")
    for number in range(1, len(lines)):
        line = lines[number]
        if _runs(line) and any(code == line.strip() and depth < indent_width(line) for depth, code in below):
            return "\n".join(lines[:number]).rstrip()
    return text


def _indented(line: str) -> tuple[int, str]:
    return indent_width(line), line.strip()


# A line that begins with one of these continues or closes a block's structure: it runs nothing itself.
BLOCK_WORDS = frozenset({"else", "elif", "elsif", "elseif", "except", "finally", "catch", "end", "fi", "done",
                         "esac", "then", "do", "case", "default", "when", "rescue", "ensure"})
FIRST_WORD = re.compile(r"[^\W\d]\w*")


def _runs(line: str) -> bool:
    """A line that does something when it runs: not blank, not only brackets and punctuation (``}``, ``});``),
    not a block's next branch or end (``} else {``, ``except:``, ``end``). Such lines close or continue the
    suggestion's own blocks, at their own depth, and are no copy of the code below."""
    first = FIRST_WORD.search(line)
    return first is not None and first.group() not in BLOCK_WORDS


def end_where_its_brackets_close(text: str, ctx: CursorContext, shape: Shape) -> str:
    """Outside Python, a suggestion that leaves a bracket open ends where it last had closed all it opened.

    The token limit or the budget cut ``if (a) {`` … ``} else if (b) {`` and its body: accepted as it is,
    the file has a ``{`` that nothing closes; ending after the first ``}`` leaves a whole statement.
    A text that never closed what it opened stays as it is.
    """
    if not shape.closes_brackets or not leaves_open(text, shape.comment):
        return text
    depth, end, offset = 0, 0, 0
    for line in text.split("\n"):
        for index, char in code_chars(line, shape.comment):
            if char in OPENERS:
                depth += 1
            elif char in CLOSERS and depth > 0:
                depth -= 1
                if depth == 0 and char == "}":  # a block's end, as in `} else {` (not a call's `)`)
                    end = offset + index + 1
        offset += len(line)
        if depth == 0 and line.strip():
            end = offset  # a whole line that closes all: `});`
        offset += 1
    return text[:end].rstrip() if end else text


def keep_parsing_lines(text: str, ctx: CursorContext, shape: Shape) -> str:
    """Keep the longest run of the suggestion's lines that leaves the file parsing.

    When the file parsed before, the suggestion must not break it. In a Python
    file that does not parse yet (``print(`` at its end, a body still empty)
    and does not parse with the whole suggestion either, the lines the model
    wrote after finishing the user's code (prose, a Markdown fence, a half
    statement) go when a shorter run of them makes the file parse.
    """
    if "\n" not in text or len(ctx.prefix) + len(ctx.suffix) > MAX_PARSE_CHARS:
        return text
    if not _parses(ctx.prefix + ctx.suffix) and (
            not is_python(ctx) or _parses(ctx.prefix + text.rstrip() + ctx.suffix)):
        return text
    lines = text.split("\n")
    end = _most_lines(len(lines), lambda end: _parses(ctx.prefix + _first_lines(lines, end) + ctx.suffix))
    return text if end is None else _first_lines(lines, end)


def _most_lines(count: int, keeps: Callable[[int], bool]) -> int | None:
    """The largest ``end`` (of ``count`` lines, at most MAX_PARSE_TRIES tried) for which ``keeps(end)`` holds."""
    for end in range(count, max(count - MAX_PARSE_TRIES, 0), -1):
        if keeps(end):
            return end
    return None


def _first_lines(lines: list[str], end: int) -> str:
    return "\n".join(lines[:end]).rstrip()


def keep_valid_python(text: str, ctx: CursorContext, shape: Shape) -> str:
    """In Python, the suggestion's lines that turn the code up to the cursor into invalid code go.

    Unfinished code is fine (``print(`` + ``x``: the rest comes later); code
    no continuation can repair is not (``import `` + ``{ Component } from
    '@angular/core';``, seen with Gemma 3 270M in an almost empty file). The
    code after the cursor is left out of the judgement, except the rest of the
    cursor's line; it may be broken for reasons of its own.
    """
    if not is_python(ctx) or not text.strip() or len(ctx.prefix) > MAX_PARSE_CHARS:
        return text
    lines = text.split("\n")
    prefix = IPYTHON_LINE.sub(r"\1pass", ctx.prefix)  # a notebook's magics and shell lines are not Python's

    def keeps(end: int) -> bool:  # the first ``end`` lines leave the code valid or unfinished
        return not _invalid_python(prefix + _first_lines(lines, end) + (ctx.line_suffix if end == 1 else ""))

    if keeps(len(lines)):  # the usual case: one compile (about 3 ms for 10 000 characters here)
        return text
    if all(_invalid_python(prefix + probe + ctx.line_suffix) for probe in BROKEN_BEFORE_PROBES):
        return text  # broken before the suggestion: nothing to judge it by
    end = _most_lines(len(lines), keeps)  # (all of them, tried again, still break it)
    return "" if end is None else _first_lines(lines, end)


# IPython's magics and shell escapes (`%matplotlib inline`, `!pip install x`) at the start of a line: invalid
# Python everywhere, so read as `pass` by the syntax filter (a notebook's cells above would break every check).
IPYTHON_LINE = re.compile(r"(?m)^([ \t]*)(?:%|!(?!=)).*$")
# Code before the cursor that no continuation can make valid is broken before the suggestion (as far as these
# tell): nothing, a name, or a header's end (``elif `` needs ``x:pass``: ``elif x`` alone lacks its colon).
BROKEN_BEFORE_PROBES = ("", "x", "x:pass")


def _invalid_python(source: str) -> bool:
    """No continuation can make ``source`` valid Python (unfinished code, ``print(``, is not invalid)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes and the like are the user's business
            compile(source, "<suggestion>", "exec", dont_inherit=True,
                    flags=codeop.PyCF_ALLOW_INCOMPLETE_INPUT | codeop.PyCF_DONT_IMPLY_DEDENT | ast.PyCF_ONLY_AST)
    except SyntaxError as exc:
        return "incomplete input" not in str(exc.msg)
    except (ValueError, RecursionError, MemoryError):  # cannot tell: not the suggestion's fault
        pass
    return False


def drop_repeat_of_next_line(text: str, ctx: CursorContext, shape: Shape) -> str:
    """A suggestion that only repeats the line below the cursor is noise."""
    first = ctx.line_prefix + text
    following = ctx.next_line
    if "\n" not in text and first.strip() and first.strip() == following.strip() \
            and indent_width(first) == indent_width(following):
        return ""
    return text


BARE_COMMENT_MARKERS = frozenset({"#", "//", "--", "/*", "*", "<!--"})


def drop_bare_comment_markers_at_end(text: str, ctx: CursorContext, shape: Shape) -> str:
    """Lines at the end that hold only a comment marker (`#`) go: the model stopped before saying anything.

    (Seen with SmolLM2-135M in a shell script: `# 1.1.1.1`, a blank line, then `#`.)
    """
    lines = text.split("\n")
    while lines and lines[-1].strip() in BARE_COMMENT_MARKERS and (len(lines) > 1 or not ctx.line_prefix.strip()):
        lines.pop()
        while len(lines) > 1 and not lines[-1].strip():
            lines.pop()
    return "\n".join(lines)


def drop_comments_at_end(text: str, ctx: CursorContext, shape: Shape) -> str:
    """Comment lines that end a suggestion of code go, with the blank lines before them: they announce code
    that is not there (`# compute the mode of xs` where the token limit cut it). A suggestion that is all
    comment (the user writing one) stays."""
    lines = text.split("\n")
    end = len(lines)
    while end > 1 and (not lines[end - 1].strip() or is_comment(lines[end - 1], shape.comment)):
        end -= 1

    def code(number: int) -> bool:  # the suggestion's own text on that line is code
        whole = ctx.line_prefix + lines[0] if number == 0 else lines[number]
        return bool(lines[number].strip()) and not is_comment(whole, shape.comment)

    if end == len(lines) or not any(code(number) for number in range(end)):
        return text
    return "\n".join(lines[:end])


FILTERS: tuple[Callable[[str, CursorContext, Shape], str], ...] = (
    cut_at_stop,
    drop_control_markers,
    drop_doubled_space,
    trim_trailing_whitespace,
    skip_leading_blank_lines,
    drop_overlap_with_line_suffix,
    balance_brackets,
    drop_lines_that_follow,
    drop_lines_run_after_the_block,
    end_where_its_brackets_close,
    keep_parsing_lines,
    keep_valid_python,
    drop_repeat_of_next_line,
    drop_bare_comment_markers_at_end,
    drop_comments_at_end,
)


def apply(text: str, ctx: CursorContext, shape: Shape) -> str:
    return apply_explained(text, ctx, shape)[0]


def apply_explained(text: str, ctx: CursorContext, shape: Shape, python_syntax: bool = True) -> tuple[str, str]:
    """The filtered text, and the name of the filter that emptied it ("" when none did)."""
    for step in FILTERS:
        if step is keep_valid_python and not python_syntax:
            continue
        before = text
        text = step(text, ctx, shape)
        if before.strip() and not text.strip():
            return text, step.__name__
    return text, ""


MAX_PARSE_CHARS = 100_000  # parsing is cheap, but not free for every keystroke in a huge file
MAX_PARSE_TRIES = 8


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def _block_indent(ctx: CursorContext) -> int:
    """The least indentation a line of the suggestion may have and still be in the block.

    A cursor after indentation only says where the user's code goes: that indentation.
    """
    if ctx.line_prefix and not ctx.line_prefix.strip():
        return indent_width(ctx.line_prefix)
    if ctx.line_prefix.strip():
        line = ctx.line_prefix
    else:
        above = ctx.prefix[: len(ctx.prefix) - len(ctx.line_prefix)]
        line = _last_code_line(above)
        if line is None:
            return 0
        previous = above[:-1].rsplit("\n", 1)[-1]  # the line before the cursor's
        if (not ctx.line_prefix and not previous.strip() and not line.rstrip().endswith(":")
                and indent_width(ctx.next_line) == 0):
            # Column 0 after a blank line, with nothing indented below: where a new top-level statement goes
            # (PEP 8's two blank lines before a def; Neovim's `o` after a blank line lands there), or the
            # block above goes on: the model says which. (A test file's next test was empty: its `def` was
            # taken for a dedent out of the function above.)
            return 0
    indent = indent_width(line)
    return indent + 1 if line.rstrip().endswith(":") else indent


def _last_code_line(text: str) -> str | None:
    for line in reversed(text.split("\n")):
        if line.strip():
            return line
    return None
