"""Context from the rest of the project: what the names the document imports from it look like.

A call to a function defined in another module is written well only when
the model has seen that function's signature. For every name the document
imports from a module of the workspace (``from .util import parse``,
``from pkg.util import parse``, ``import pkg.util as u`` + ``u.parse``), this
finds the definition with ``ast`` (the document's own imports are read with
``ast`` line by line, as half-typed code does not parse as a whole, and its
names with ``tokenize``) and renders it as a stub: the signature, the
docstring's first lines, ``...``. Classes show their ``__init__`` and public
method signatures.

The stubs depend on the document's imports, not on the cursor, so the block
they make stays the same while the user types and the prompt's KV prefix
stays reusable; when they do not all fit the budget, the names the cursor's
function uses go first. Modules open in the editor are read from the editor's
text, others from disk (parsed once per modification time).
"""

from __future__ import annotations

import ast
import io
import logging
import os
import re
import tokenize
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

_LSP_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # how LSP counts lines (positions come in those)
MAX_IMPORT_SCAN_LINES = 400  # imports sit at the top; half-typed code below may not tokenize
MAX_MODULE_BYTES = 1_000_000
MAX_DOC_LINES = 4
MAX_METHODS = 8
MAX_REEXPORT_DEPTH = 3
HEADER = "# Signatures from other modules of this project:\n"


@dataclass(frozen=True)
class Imported:
    local: str  # the name bound in the document
    module: tuple[int, str]  # (relative level, dotted module) it comes from
    attribute: str  # the name imported from that module; "" when ``local`` is the module itself


@dataclass(frozen=True)
class Stub:
    name: str  # as the document uses it: ``parse`` or ``u.parse``
    path: str  # the defining module, relative to the workspace root
    text: str
    order: int = 0  # its place in the document's imports: the block's order, whatever the cursor


ReadOpen = Callable[[Path], "str | None"]  # an open document's text, or None


class ProjectIndex:
    """Definitions in a workspace's modules, found on demand and kept per file version."""

    def __init__(self, roots: list[Path], read_open: ReadOpen = lambda path: None):
        self.roots = [Path(r) for r in roots]
        self.read_open = read_open
        self._modules: dict[Path, tuple[tuple[float, int] | str, ast.Module | None, list[str]]] = {}
        self._chosen: dict[Path, tuple[str, ...]] = {}  # per document: the stubs its block holds

    def chosen(self, path: Path | None) -> tuple[str, ...]:
        """The names in the document's last block, as the document uses them."""
        return self._chosen.get(path, ()) if path is not None else ()

    def context(self, path: Path | None, source: str, cursor_line: int, count_tokens: Callable[[str], int],
                budget: int) -> str:
        """The document's block of stubs within ``budget`` tokens.

        When they do not all fit, the choice (the cursor's function's names
        first) sticks for as long as its stubs still exist and fit: the block
        then changes only when the imports or those definitions do, not with
        every name the user types, and the KV cache after it stays reusable.
        """
        stubs = self.stubs(path, source, cursor_line) if path is not None else []
        if not stubs or path is None:
            return ""
        by_name = {stub.name: stub for stub in stubs}
        previous = self._chosen.get(path)
        if previous and all(name in by_name for name in previous):
            text = block([by_name[name] for name in previous], count_tokens, budget)
            if text and all(by_name[name].text in text for name in previous):
                return text
        text = block(stubs, count_tokens, budget)
        self._chosen[path] = tuple(stub.name for stub in stubs if stub.text in text)
        return text

    # --- the one entry point ---------------------------------------------------

    def stubs(self, path: Path | None, source: str, cursor_line: int) -> list[Stub]:
        """Stubs of the workspace names ``source`` imports, those used in the cursor's function first."""
        if path is None:
            return []
        found: dict[str, Stub] = {}
        for item in imports_of(source):
            module = self.module_path(path, item.module)
            if item.attribute and module is not None and module != path:
                if (stub := self._stub(module, item.attribute, item.local)) is not None:
                    found.setdefault(stub.name, stub)
                    continue
            if item.attribute:  # ``from . import util``: a module, not a name in one
                level, dotted = item.module
                module = self.module_path(path, (level, f"{dotted}.{item.attribute}" if dotted else item.attribute))
            if module is None or module == path:
                continue
            # ``import pkg.util as u``: the attributes the document uses, ``u.parse``.
            for attribute in sorted(attributes_used(source, item.local)):
                stub = self._stub(module, attribute, f"{item.local}.{attribute}")
                if stub is not None:
                    found.setdefault(stub.name, stub)
        if not found:
            return []
        near = names_near(source, cursor_line)
        ordered = [replace(stub, order=number) for number, stub in enumerate(found.values())]
        return sorted(ordered, key=lambda stub: stub.name not in near)  # stable: import order otherwise

    # --- modules ----------------------------------------------------------------

    def module_path(self, document: Path, module: tuple[int, str]) -> Path | None:
        """The file of ``module`` as imported from ``document``, if it is in the workspace."""
        level, dotted = module
        parts = dotted.split(".") if dotted else []
        if level:
            base = document.parent
            for _ in range(level - 1):
                base = base.parent
            return _module_file(base, parts)
        for root in [*self.roots, _package_root(document)]:
            if root is not None and (found := _module_file(root, parts)) is not None:
                return found
        return None

    def _parsed(self, path: Path) -> tuple[ast.Module | None, list[str]]:
        text = self.read_open(path)
        if text is not None:
            version: tuple[float, int] | str = text
        else:
            try:
                stat = path.stat()
            except OSError:
                return None, []
            version = (stat.st_mtime, stat.st_size)
        cached = self._modules.get(path)
        if cached is not None and cached[0] == version:
            return cached[1], cached[2]
        tree, lines = None, []
        try:
            if text is None:
                if path.stat().st_size > MAX_MODULE_BYTES:
                    raise ValueError("too large")
                text = path.read_text(encoding="utf-8", errors="replace")
            lines = text.split("\n")
            tree = ast.parse(text)
        except (OSError, ValueError, SyntaxError, RecursionError, MemoryError) as exc:
            log.debug("cannot read %s: %s", path, exc)
        self._modules[path] = (version, tree, lines)
        return tree, lines

    def _stub(self, module: Path, attribute: str, shown_as: str, depth: int = 0) -> Stub | None:
        tree, lines = self._parsed(module)
        if tree is None:
            return None
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == attribute:
                return Stub(shown_as, self._relative(module), render(node, lines))
            if isinstance(node, ast.ImportFrom) and depth < MAX_REEXPORT_DEPTH:  # a package re-exporting it
                for alias in node.names:
                    if (alias.asname or alias.name) == attribute:
                        target = self.module_path(module, (node.level, node.module or ""))
                        if target is not None and target != module:
                            return self._stub(target, alias.name, shown_as, depth + 1)
        return None

    def _relative(self, path: Path) -> str:
        for root in self.roots:
            try:
                return path.relative_to(root).as_posix()
            except ValueError:
                continue
        return path.name


def render(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef, lines: list[str]) -> str:
    """A definition as a stub: its header, the first lines of its docstring, ``...``."""
    if isinstance(node, ast.ClassDef):
        out = [_header(node, lines, indent="")]
        out += _docstring(node, "    ")
        methods = [m for m in node.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))
                   and (m.name == "__init__" or not m.name.startswith("_"))]
        for method in methods[:MAX_METHODS]:
            out.append(_header(method, lines, indent="    ") + " ...")
        if len(out) == 1:
            out.append("    ...")
        return "\n".join(out)
    return "\n".join([_header(node, lines, indent=""), *_docstring(node, "    "), "    ..."])


def _header(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef, lines: list[str], indent: str) -> str:
    """The ``def``/``class`` line(s) up to the colon, re-indented to ``indent``."""
    first = node.lineno - 1
    stop = node.body[0].lineno - 1 if node.body else first  # the body's first line, 0-based
    text = lines[first:stop] if stop > first else [lines[first]]
    source = "\n".join(text)
    # Cut after the header's colon: the body may start on the same line (``def f(): return 1``).
    try:
        end = _header_end(source)
    except (SyntaxError, tokenize.TokenError, IndentationError):
        end = len(source)
    header_lines = source[:end].split("\n")
    base = len(header_lines[0]) - len(header_lines[0].lstrip())
    return "\n".join(indent + line[base:] if line[:base].strip() == "" else line for line in header_lines)


def _header_end(source: str) -> int:
    """The offset just after the colon that ends a def/class header (brackets balanced)."""
    depth = 0
    offsets = _line_offsets(source)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.OP:
            if token.string in "([{":
                depth += 1
            elif token.string in ")]}":
                depth -= 1
            elif token.string == ":" and depth == 0:
                row, col = token.end
                return offsets[row - 1] + col
    return len(source)


def _line_offsets(source: str) -> list[int]:
    offsets, total = [], 0
    for line in source.split("\n"):
        offsets.append(total)
        total += len(line) + 1
    return offsets


def _docstring(node: ast.AST, indent: str) -> list[str]:
    doc = ast.get_docstring(node)  # type: ignore[arg-type]
    if not doc:
        return []
    kept = []
    for line in doc.strip().split("\n")[:MAX_DOC_LINES]:
        if not line.strip() and kept:
            break  # the first paragraph says what it does
        kept.append(line.rstrip())
    kept = [line.replace('"""', "'''") for line in kept]
    if len(kept) == 1:
        return [f'{indent}"""{kept[0]}"""']
    return [f'{indent}"""{kept[0]}', *(indent + line for line in kept[1:]), f'{indent}"""']


# --- the document's own imports and names (it need not parse) ---------------------


def imports_of(source: str) -> list[Imported]:
    """The document's top-level imports, each statement parsed on its own."""
    lines = source.split("\n")[:MAX_IMPORT_SCAN_LINES]
    found: list[Imported] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith(("import ", "from ")):
            i += 1
            continue
        statement = None
        for end in range(i + 1, min(i + 40, len(lines)) + 1):  # parenthesised imports span lines
            try:
                statement = ast.parse("\n".join(lines[i:end])).body
                i = end
                break
            except SyntaxError:
                continue
        else:
            i += 1
        for node in statement or ():
            found.extend(_imported(node))
    return found


def _imported(node: ast.stmt) -> list[Imported]:
    if isinstance(node, ast.ImportFrom):
        return [Imported(alias.asname or alias.name, (node.level, node.module or ""), alias.name)
                for alias in node.names if alias.name != "*"]
    if isinstance(node, ast.Import):
        out = []
        for alias in node.names:
            if alias.asname:
                out.append(Imported(alias.asname, (0, alias.name), ""))
            elif "." not in alias.name:
                out.append(Imported(alias.name, (0, alias.name), ""))
        return out
    return []


def _names(source: str) -> list[tokenize.TokenInfo]:
    """The document's tokens, up to where half-typed code stops tokenizing."""
    tokens = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            tokens.append(token)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return tokens


def attributes_used(source: str, module_name: str) -> set[str]:
    """``x`` for every ``module_name.x`` in the document."""
    tokens = [t for t in _names(source) if t.type in (tokenize.NAME, tokenize.OP)]
    return {tokens[i + 2].string for i in range(len(tokens) - 2)
            if tokens[i].string == module_name and tokens[i + 1].string == "." and tokens[i + 2].type == tokenize.NAME}


def names_near(source: str, cursor_line: int) -> set[str]:
    """Names (and ``a.b`` pairs) used in the top-level definition around ``cursor_line`` (0-based, LSP's lines)."""
    lines = _LSP_LINE_BREAK.split(source)
    start = min(max(cursor_line, 0), len(lines) - 1)
    cursor_line = start
    while start > 0 and not (lines[start][:1].strip() and not lines[start].startswith((")", "]", "}"))):
        start -= 1
    end = cursor_line + 1
    while end < len(lines) and not (lines[end][:1].strip() and not lines[end].startswith((")", "]", "}", "#"))):
        end += 1
    tokens = [t for t in _names("\n".join(lines[start:end])) if t.type in (tokenize.NAME, tokenize.OP)]
    names = {t.string for t in tokens if t.type == tokenize.NAME}
    names |= {f"{tokens[i].string}.{tokens[i + 2].string}" for i in range(len(tokens) - 2)
              if tokens[i + 1].string == "." and tokens[i].type == tokenize.NAME}
    return names


def block(stubs: list[Stub], count_tokens: Callable[[str], int], budget: int) -> str:
    """The stubs that fit ``budget`` tokens, taken in the given order, as the prompt's first lines ("" if none).

    They are written in import order, not in the order of choice: while they all
    fit, the block is the same wherever the cursor is, and the KV cache of
    everything after it stays reusable.
    """
    if not stubs or budget <= 0:
        return ""
    kept: list[Stub] = []
    for stub in stubs:
        if count_tokens(_format([*kept, stub])) > budget:
            break
        kept.append(stub)
    return _format(sorted(kept, key=lambda stub: stub.order)) if kept else ""


def _format(stubs: list[Stub]) -> str:
    by_module: dict[str, list[str]] = {}
    for stub in stubs:
        by_module.setdefault(stub.path, []).append(stub.text)
    parts = [f"# {path}\n" + "\n\n".join(texts) + "\n" for path, texts in by_module.items()]
    return HEADER + "\n".join(parts) + "\n\n"


def _module_file(base: Path, parts: list[str]) -> Path | None:
    target = base.joinpath(*parts) if parts else base
    for candidate in (target.with_suffix(".py") if parts else None, target / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _package_root(document: Path) -> Path | None:
    """The directory above the document's top-level package (where ``import pkg`` resolves)."""
    directory = document.parent
    if not (directory / "__init__.py").is_file():
        return directory  # a script's siblings are importable by name
    while (directory.parent / "__init__.py").is_file() and directory.parent != directory:
        directory = directory.parent
    return directory.parent


def path_of(uri: str) -> Path | None:
    """A file URI's path; None for other schemes (untitled buffers)."""
    if not uri.startswith("file://"):
        return None
    from urllib.parse import unquote, urlparse

    return Path(unquote(urlparse(uri).path)) if os.name != "nt" else None
