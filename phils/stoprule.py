"""The stop rule: where a suggestion must end, as a pure function of its text and a shape.

The front derives the ``Shape`` from the cursor; the engine runs ``stop_index``
after every decoded token, so generation ends as soon as the suggestion is
complete. The shape travels between the two processes as plain data.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Iterator


@dataclass(frozen=True)
class Shape:
    """What the suggestion may look like at this cursor, derived once per request."""

    single_line: bool  # text follows the cursor: finish this line only
    min_indent: int  # a later line indented less than this ends the block
    line_prefix: str  # what precedes the suggestion on its first line
    max_lines: int
    resume: str = ""  # the code below the cursor (its next line, stripped): a line that resumes it ends the text
    resume_indent: int = -1  # that line's indentation: only a line at it resumes the code (-1: any)
    avoid: tuple[str, ...] = ()  # lines that must not be written again (the enclosing signature and docstring)
    statement: bool = False  # end with the first statement: at a later line indented no deeper than the first
    code: bool = True  # the document is code: a Markdown fence (```) ends the text, as the model's prose begins
    line_suffix: str = ""  # what follows the cursor on its line: the text ends where it closes what that closes
    string_end: str = ""  # the cursor is in a string that this closes (a docstring's """): the text ends there
    string_end_below: bool = False  # ... and the document already closes it after the cursor: end before it
    # Code other than Python (whose own check is its parser, in the front): a judged answer must close the
    # brackets it opens, since `if (x) {` without its `}` breaks the file once accepted.
    closes_brackets: bool = False
    # The language's line comment marker ("#", "//", "--"; "" where unknown): at the top level a comment after a
    # blank line begins the next piece of work, which the suggestion leaves to the next request.
    comment: str = ""
    # Python at the module's or a class's level (no def around): a suggestion that begins a def or class is
    # that one definition, ending where its body does, as a class's methods are written one at a time.
    one_definition: bool = False
    # The document holds Chinese, Japanese or Korean text. Where it does not, a line of the text that does is
    # the model's habit, not the user's (Qwen2.5-Coder 1.5B's `// 读取文件内容` in an English Go file).
    cjk: bool = True
    # Python in a class whose whole text is in the document (``lsp/members.py``): every name ``self.name`` may
    # read. A line of the text that reads another (`self.is_empty()` in a Stack without one) ends it before
    # that line. None: not known.
    members: tuple[str, ...] | None = None
    # Prose (``code`` false) where Markdown's fences are content: Markdown, or a document holding one. Elsewhere
    # (a commit message, plain text) a fence the text writes ends it: the model turning to code.
    fences: bool = True

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "Shape":
        """A shape sent by a front; raises ValueError when it is not one."""
        if not isinstance(data, dict):
            raise ValueError("the stop rule must be an object")
        try:
            shape = cls(
                single_line=bool(data["single_line"]),
                min_indent=int(data["min_indent"]),
                line_prefix=str(data.get("line_prefix", "")),
                max_lines=int(data["max_lines"]),
                resume=str(data.get("resume", "")),
                resume_indent=int(data.get("resume_indent", -1)),
                avoid=tuple(str(line) for line in data.get("avoid", ())),
                statement=bool(data.get("statement", False)),
                code=bool(data.get("code", True)),
                line_suffix=str(data.get("line_suffix", "")),
                string_end=str(data.get("string_end", "")),
                string_end_below=bool(data.get("string_end_below", False)),
                closes_brackets=bool(data.get("closes_brackets", False)),
                comment=str(data.get("comment", "")),
                one_definition=bool(data.get("one_definition", False)),
                cjk=bool(data.get("cjk", True)),
                members=None if data.get("members") is None else tuple(str(name) for name in data["members"]),
                fences=bool(data.get("fences", True)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad stop rule: {exc}") from None
        return shape


def stop_index(text: str, shape: Shape) -> int | None:
    """Where the suggestion ``text`` must end, or None while it may go on (see ``_stop_index``).

    Inside a string that a delimiter closes (the cursor right after a
    docstring's opening quotes), the text also ends where it closes it: the
    docstring, not the body the model goes on to write, is what the user is
    typing; the body is the next request's, with the finished docstring in
    the prompt.
    """
    if shape.string_end and (at := text.find(shape.string_end)) >= 0:
        end = at if shape.string_end_below else at + len(shape.string_end)
        inner = _stop_index(text[:end], shape)
        return end if inner is None else min(inner, end)
    return _stop_index(text, shape)


def _stop_index(text: str, shape: Shape) -> int | None:
    """Where the suggestion ``text`` must end, or None while it may go on.

    Stops: end of line in single-line mode; a non-blank line indented less than
    the block (the block is over); a line that resumes the code below the
    cursor, or repeats the signature or docstring; in ``statement`` mode (or
    when the text goes on with the code before the cursor on its line), a line
    back at the first line's indentation; two blank lines in a row; at the top
    level, a comment after a blank line once code was written (the script's next
    step: `# compute the median` after the mean the user's comment asked for);
    at the module's or a class's level, the end of the def or class the text
    began with (``one_definition``); ``max_lines``; in code, a Markdown fence line (base models trained on
    textbook-like text, Phi-2 among them, close the code block and go on in prose).
    """
    if shape.single_line:
        cut = text.find("\n")
        line = text if cut < 0 else text[:cut]
        if not shape.cjk and (foreign := _foreign_at(shape.line_prefix, line, shape.comment)) is not None:
            return foreign
        if shape.members is not None and _invented_at(shape.line_prefix + line, len(shape.line_prefix),
                                                      shape.members, set(), cut >= 0) is not None:
            return 0
        closed = _reaches_line_suffix(shape.line_prefix, line, shape.line_suffix, shape.comment)
        if closed is not None:
            return closed
        if cut >= 0:
            return cut
        return _loop_in_line(text)
    lines = text.split("\n")
    if (loop := _loop_in_line(lines[-1])) is not None:  # a later line goes whole
        return loop if len(lines) == 1 else len(text) - len(lines[-1]) - 1
    if (loop := _repetition_start(lines)) is not None:
        return loop
    offset = 0
    blank_run = 0
    depth = 0  # brackets the text has opened and not closed, over its complete lines
    first_indent = None  # the first written line's indentation, for ``statement``
    decorating = False  # the text began with decorators and their def has not come yet
    code_end = None  # where the last line of code written so far ends
    in_fence = False  # prose: inside a Markdown code block the text opened
    one_import = False  # the text began with an import at the module's level
    invented = invented_member(text, shape)  # where the text reads an attribute its class lacks
    # After code on the cursor's line, a suggestion that goes on with that line finishes its statement
    # (`os.path.` + `join(a, b)`, then no unrelated `def` below); one that starts on a new line is a block.
    statement = shape.statement or bool(shape.line_prefix.strip() and lines[0].strip())
    for number, line in enumerate(lines):
        whole = shape.line_prefix + line if number == 0 else line
        complete = number < len(lines) - 1
        after, closes_outside = (_depth_after(line, shape.line_prefix if number == 0 else "", depth, shape.comment)
                                 if complete or shape.closes_brackets else (depth, False))
        if whole.strip():
            blank_run_before, blank_run = blank_run, 0
            if not shape.cjk and (foreign := _foreign_at(shape.line_prefix if number == 0 else "", line,
                                                         shape.comment)) is not None:
                return offset + foreign if foreign or number == 0 else max(offset - 1, 0)
            written = number > 0 or not shape.line_prefix.strip()  # not the user's own text
            if (shape.code or not shape.fences) and written and whole.lstrip().startswith(FENCE):
                return max(offset - 1, 0) if number > 0 else 0
            if complete and written and _written_already(whole, shape):
                return max(offset - 1, 0) if number > 0 else 0
            if invented is not None and offset <= invented <= offset + len(line):
                return max(offset - 1, 0) if number > 0 else 0
            if not shape.code and whole.lstrip().startswith(FENCE):
                in_fence = not in_fence
            if one_import and number > 0 and depth == 0 and code_end is not None:
                return code_end  # (the import statement is closed: this line is the next statement)
            if _next_section(whole, shape, blank_run_before, code_end, in_fence) or (
                    shape.one_definition and blank_run_before and code_end is not None and first_indent is not None
                    and indent_width(whole) == first_indent and (DEFINITION.match(whole) or whole.lstrip()[:1] == "@")):
                # (and at a class's or the module's level, a def, class or decorator after a blank line: a
                # dataclass's fields, then no `__repr__` of the model's own)
                return code_end
            if (number > 0 or not shape.line_prefix.strip()) and indent_width(whole) < shape.min_indent:
                return max(offset - 1, 0) if number > 0 else 0
            if shape.closes_brackets and written and closes_outside:
                # `}` of a block opened above the cursor: the code below closes it already (Python's dedent).
                return max(offset - 1, 0) if number > 0 else 0
            if number >= shape.max_lines and not (
                    depth > 0 and shape.max_lines > 1 and number < shape.max_lines + MAX_CLOSING_LINES):
                # Past max_lines only to close what the text opened: `switch (c) {` and three `case` lines
                # cut there would leave a C file with a brace that nothing closes.
                return offset - 1
            if first_indent is None:
                first_indent = indent_width(whole)
                # An import at the module's level is a suggestion of its own (as Copilot shows them): the
                # next one is computed when this one is accepted, where the model went on with a dozen.
                one_import = shape.code and first_indent == 0 and IMPORT_LINE.match(whole) is not None
                statement = statement or shape.one_definition and DEFINITION.match(whole) is not None
                decorating = whole.lstrip().startswith("@")
            elif decorating and indent_width(whole) == first_indent and DEFINITION.match(whole):
                decorating = False  # the def or class its decorators are for: from here on, one definition
                statement = statement or shape.one_definition
            elif statement and indent_width(whole) <= first_indent and not (
                    indent_width(whole) == first_indent and whole.lstrip()[:1] in CLOSERS):
                # A line at the statement's depth that begins with a closer (`}`, `});`, `} else {`, a call's
                # `)`) is the statement's own end, not the next statement.
                return offset - 1
            if line.strip() and not is_comment(whole, shape.comment):  # (the text's own code, not the user's line)
                code_end = offset + len(line)
        elif complete and number > 0:
            blank_run += 1
            if blank_run >= 2:
                return offset - 1 - len(lines[number - 1]) - 1
        if complete:
            depth = after
        offset += len(line) + 1
    return None


DEFINITION = re.compile(r"\s*(async\s+def|def|class)\s")
_SELF_ATTRIBUTE = re.compile(r"(?<![\w.])self\.([A-Za-z_]\w*)")
_ASSIGNED = re.compile(r"\s*(?::[^=]*)?=(?!=)")
_UNDECIDED = re.compile(r"\w*\s*(?::[^=]*)?=?")  # the line's end: the name, or its annotation, is still being written
_BINDS = re.compile(r"\s*(?:(?:async\s+)?def\s+(\w+)|(\w+)\s*(?::[^=]*)?=(?!=))")


def invented_member(text: str, shape: Shape | None) -> int | None:
    """Where in ``text`` the first name begins that ``self.name`` reads and the class lacks (``Shape.members``),
    or None: the place where another token may make the answer whole."""
    if shape is None or shape.members is None:
        return None
    bound: set[str] = set()
    in_docstring, offset, lines = bool(shape.string_end), 0, text.split("\n")
    for number, line in enumerate(lines):
        start = len(shape.line_prefix) if number == 0 else 0
        whole = shape.line_prefix + line if number == 0 else line
        if not in_docstring and (at := _invented_at(whole, start, shape.members, bound,
                                                    number < len(lines) - 1)) is not None:
            return offset + at - start
        in_docstring ^= _opens_docstring(whole)
        offset += len(line) + 1
    return None


def _opens_docstring(line: str) -> bool:
    return (line.count('"""') + line.count("'''")) % 2 == 1


def _invented_at(whole: str, start: int, members: tuple[str, ...], bound: set[str], complete: bool) -> int | None:
    """Where in ``whole`` (its text's part begins at ``start``) a name begins that ``self.name`` reads and
    neither the class (``members``) nor the text so far (``bound``, which this line's bindings join) has."""
    if (binds := _BINDS.match(whole)) is not None:
        bound.add(binds.group(1) or binds.group(2))
    if "self." not in whole:
        return None
    chars = [" "] * len(whole)
    for index, char, kind in lexed(whole):
        if kind == "code":
            chars[index] = char
    code = "".join(chars)
    invented = None
    for match in _SELF_ATTRIBUTE.finditer(code):
        name = match.group(1)
        if _ASSIGNED.match(code, match.end()):
            bound.add(name)
        elif invented is None and not (
                match.start(1) < start or not complete and _UNDECIDED.fullmatch(code, match.end()) or name in bound
                or name.startswith("__") or name in members):
            invented = match.start(1)
    return invented
CJK = re.compile("[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uff00-\uffef]")
# An import, include or use line (Python, JavaScript, Java, Go, C and C++, Rust, PHP, C#; not `use = 5`).
IMPORT_LINE = re.compile(r"(import|from\s+\S+\s+import|#\s*include)\s+\S|(use|using)\s+\w")


def _foreign_at(before: str, line: str, comment: str) -> int | None:
    """Where ``line`` (after ``before`` on its line) must end for holding CJK text the document does not:
    before the comment that holds it when the line's own code comes first, else 0 (the line goes); None
    where it holds none."""
    found = CJK.search(line)
    if found is None:
        return None
    whole = before + line
    code_end = max((index + 1 for index, _, _ in lexed(whole, comment)), default=0)
    if code_end < len(whole) and len(before) + found.start() >= code_end:  # in the line's comment
        kept = whole[:code_end].rstrip()
        if len(kept) > len(before) and kept[len(before):].strip():
            return len(kept) - len(before)
    return 0


def is_comment(line: str, marker: str) -> bool:
    """``line`` holds only a comment (``marker`` the language's line comment; "" for none known)."""
    return bool(marker) and line.lstrip().startswith(marker)


def _next_section(whole: str, shape: Shape, blanks_before: int, code_end: int | None, in_fence: bool = False) -> bool:
    """``whole``, a line at the top level after a blank line and code, is a comment: the next step begins;
    in prose, a Markdown heading outside a code block (Qwen2.5-Coder 1.5B, under `## Usage`: an example,
    then `## API` with nothing under it)."""
    heading = not shape.code and not in_fence and MARKDOWN_HEADING.match(whole) is not None
    return (code_end is not None and blanks_before > 0 and shape.min_indent == 0 and indent_width(whole) == 0
            and (is_comment(whole, shape.comment) or heading))


MARKDOWN_HEADING = re.compile(r"#{1,6} ")


def leaves_open(text: str, comment: str = "") -> bool:
    """``text`` opens a bracket it does not close (`if (x) {` without its `}`): no answer to show as it is."""
    depth = 0
    for line in text.split("\n"):
        depth = _depth_after(line, "", depth, comment)[0]
    return depth > 0


MAX_CLOSING_LINES = 12  # how far past max_lines a text may go to close the brackets it opened


def _depth_after(line: str, before: str, depth: int, comment: str = "") -> tuple[int, bool]:
    """The text's open brackets after ``line`` (code after ``before``, the user's text on the cursor's
    line; ``depth``: those open before it), and whether the line closes one the text did not open (which
    does not count)."""
    outside = False
    for index, char in code_chars(before + line, comment):
        if index < len(before):
            continue
        if char in OPENERS:
            depth += 1
        elif char in CLOSERS:
            outside = outside or depth == 0
            depth = max(depth - 1, 0)
    return depth, outside


FENCE = "```"

# A line this similar to the next line of code resumes it. Short lines must match
# exactly: `if n % 2 == 0:` is 93 % like `if n % k == 0:` and a different line.
SIMILAR = 0.95
MIN_SIMILAR_CHARS = 24
# Below this length a similar line must also have the same names and numbers: `if len(xs) == 2:` is
# 96 % like `if len(xs) == 1:` and another line (a hole in HuggingFace Hub's code emptied by it), while
# `f(a,b)` against `f(a, b)` or other quotes is the same line.
MIN_SIMILAR_CHARS_OTHER_WORDS = 48
WORDS = re.compile(r"\w+")


def _written_already(whole: str, shape: Shape) -> bool:
    line = whole.strip()
    if line in shape.avoid:
        return True
    resume = shape.resume
    # `return False` one level deeper than the `return False` below is another line.
    if not resume or (shape.resume_indent >= 0 and indent_width(whole) != shape.resume_indent):
        return False
    if line == resume:
        return True
    if min(len(line), len(resume)) < MIN_SIMILAR_CHARS:
        return False
    if min(len(line), len(resume)) < MIN_SIMILAR_CHARS_OTHER_WORDS and WORDS.findall(line) != WORDS.findall(resume):
        return False
    from difflib import SequenceMatcher

    return SequenceMatcher(None, line, resume).ratio() >= SIMILAR


REPEATS = 3  # a block of lines seen this many times in a row is a loop


def _repetition_start(lines: list[str]) -> int | None:
    """Where a loop begins: the offset after the first of REPEATS identical blocks of 1-4 lines."""
    complete = [line.strip() for line in lines[:-1]]
    for size in range(1, 5):
        span = size * REPEATS
        if len(complete) < span:
            break
        tail = complete[-span:]
        block = tail[:size]
        if any(block) and all(tail[i] == block[i % size] for i in range(span)):
            keep = len(complete) - span + size  # lines up to and including the first block
            return len("\n".join(lines[:keep]))
    return None


OPENERS, CLOSERS = "([{", ")]}"
SEPARATORS = ",;"


def _reaches_line_suffix(line_prefix: str, line: str, line_suffix: str, comment: str = "") -> int | None:
    """Where ``line`` writes the bracket or separator the rest of the cursor's line begins with.

    ``print(|)`` + ``"hi") + str(x)``: the ``)`` after the cursor already closes
    the call, so the text ends at its own ``)`` (outside strings, at the
    cursor's depth): ``"hi"``. ``join(|, 'a')`` + ``root, 'b', 'a')``: ``root``.
    The line before the cursor says whether the text starts inside a string.
    """
    first = line_suffix.lstrip()[:1]
    if not first or first not in CLOSERS + SEPARATORS:
        return None
    depth, start = 0, len(line_prefix)
    for index, char in code_chars(line_prefix + line, comment):
        if index < start:
            continue
        index -= start
        if char in OPENERS:
            depth += 1
        elif char in CLOSERS:
            if depth == 0:
                return index if char == first else None
            depth -= 1
        elif char == first and depth == 0:
            return index
    return None


def at_code(line_prefix: str, comment: str = "") -> bool:
    """The end of ``line_prefix`` is code: not inside a string literal or a comment."""
    return any(index == len(line_prefix) for index, _ in code_chars(line_prefix + "\0", comment))


def code_chars(line: str, comment: str = "") -> Iterator[tuple[int, str]]:
    """The characters of a line of code outside its string literals, up to a comment (``comment``, the
    language's marker; "" for Python's ``#``), with their offsets. (`#` is code in C's `#include`, JavaScript's
    `#field`, Rust's `#[derive]`; a `// (see below` there opens nothing.)"""
    return ((index, char) for index, char, kind in lexed(line, comment) if kind == "code")


def lexed(line: str, comment: str = "") -> Iterator[tuple[int, str, str]]:
    """Each character of a line of code up to its comment (as ``code_chars`` reads them) with what it is:
    "code", "string" (in a string literal, its opening quote too) or "close" (the quote that ends one).

    The fields of Python's f-strings (``f"{name}"``), and in the ``//`` languages of JavaScript's template
    literals (``${name}``) and C#'s interpolated strings (``$"{name}"``), are code, their braces too: a
    cursor at ``f"Hello, {|}"`` is in code, and the ``}`` the model writes there closes what the rest of
    the line begins with.
    """
    marker = comment or "#"
    braces = comment == "//"  # the C family: template literals, C#'s $"…", Rust's lifetimes
    open_: list[list[Any]] = []  # innermost last: [quote, interpolates] a string, [None, depth] a field in one
    escaped, dollar, index = False, -1, -1  # (dollar: where the last `$` of a string's own text was)
    while index + 1 < len(line):
        index += 1
        char = line[index]
        top = open_[-1] if open_ else None
        if top is not None and top[0] is not None:  # in a string
            quote, interpolates = top
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == "$":
                dollar = index
            elif char == quote:
                open_.pop()
                yield index, char, "close"
                continue
            elif interpolates and quote != "`" and char == "{" and line[index + 1:index + 2] == "{":
                yield index, char, "string"  # `{{`: a brace of the f-string's text
                index += 1
                yield index, "{", "string"
                continue
            elif interpolates and char == "{" and (quote != "`" or dollar == index - 1):
                open_.append([None, 0])
                yield index, char, "code"
                continue
            yield index, char, "string"
        elif char == "'" and braces and (end := _lifetime_end(line, index)):
            for at in range(index, end):  # Rust's `'a` in `<'a>`, `&'a str`: no quote (the rest of the line is code)
                yield at, line[at], "code"
            index = end - 1
        elif char in "'\"" or char == "`" and braces:
            open_.append([char, char == "`" or _f_string_prefix(line, index)
                          or braces and char == '"' and "$" in line[max(index - 2, 0):index]])  # C#'s $"…{x}…"
            yield index, char, "string"
        elif top is None and char == marker[0] and line.startswith(marker, index):
            return
        else:
            if top is not None:  # in a field: its braces nest; the one that closes it returns to the string
                if char == "{":
                    top[1] += 1
                elif char == "}":
                    if top[1] == 0:
                        open_.pop()
                    else:
                        top[1] -= 1
            yield index, char, "code"


def _lifetime_end(line: str, quote_at: int) -> int:
    """Where the Rust lifetime that the ``'`` at ``quote_at`` begins ends, or 0 where it begins a character or
    string literal: a name after the quote and no quote after the name (`'a'` is a character), right after
    `<` or `&` (`<'a>`, `&'static str`), or after `, `, `: ` or `+ ` with `>`, `,`, `;`, `{` or `)` next
    (`<'a, 'b>`, `T: 'static,`), where JavaScript's strings (`f(x, 'two words')`) do not end their word."""
    end = quote_at + 1
    while end < len(line) and (line[end].isalnum() or line[end] == "_"):
        end += 1
    if end == quote_at + 1 or not (line[quote_at + 1].isalpha() or line[quote_at + 1] == "_"):
        return 0
    after = line[end:end + 1]
    if after == "'":
        return 0
    if line[quote_at - 1:quote_at] in ("<", "&") and quote_at > 0:
        return end
    return end if line[max(quote_at - 2, 0):quote_at] in (", ", ": ", "+ ") and after in (">", ",", ";", "{", ")") \
        else 0


def _f_string_prefix(line: str, quote_at: int) -> bool:
    """The quote at ``quote_at`` opens a Python f-string: ``f``, ``rf`` or ``fr`` (any case) right before it."""
    start = quote_at
    while start > 0 and (line[start - 1].isalnum() or line[start - 1] == "_"):
        start -= 1
    return line[start:quote_at].lower() in ("f", "rf", "fr")


# A line that ends with the same text over and over (`unittest.mock.mock_tools.mock_tools…`,
# seen with SmolLM2-135M in a Dockerfile) is a small model's loop; Tabby's client drops such
# lines with these two patterns. A unit without a letter (`0.0, `, `=`) is data or a banner, and
# one letter over and over (`"XXXXXXXX`) a placeholder on its way.
_REPEATING_ENDS = (re.compile(r"(.{3,9}?)\1{5,}$"), re.compile(r"(.{10,40}?)\1{3,}$"))


def _loop_in_line(line: str) -> int | None:
    """Where a line's loop starts (its first copy), or None: nesting, or the same text repeated at its end."""
    starts = [loop] if (loop := _nesting_loop(line)) is not None else []
    for pattern in _REPEATING_ENDS:
        found = pattern.search(line)
        if found and any(char.isalpha() for char in found.group(1)) and len(set(found.group(1))) > 1:
            starts.append(found.start())
    return min(starts, default=None)


MAX_LOOP_UNIT = 40


def _nesting_loop(line: str) -> int | None:
    """Where a line starts to nest the same opening text in itself (``f(f(f(``): a small model's loop.

    Returns the offset in ``line`` of the first copy: the loop goes whole.
    ``[0.0, 0.0, 0.0`` repeats too, but closes what it opens: that is data.
    """
    for size in range(2, min(MAX_LOOP_UNIT, len(line) // REPEATS) + 1):
        unit = line[-size:]
        opened = sum(unit.count(c) for c in OPENERS) - sum(unit.count(c) for c in CLOSERS)
        if opened > 0 and line.endswith(unit * REPEATS):
            start = len(line) - size * REPEATS
            while line[max(start - size, 0) : start] == unit:  # back to the first copy
                start -= size
            return start
    return None


def indent_width(line: str) -> int:
    expanded = line.expandtabs(4)
    return len(expanded) - len(expanded.lstrip(" "))
