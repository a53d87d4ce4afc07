"""An attribute the class around the cursor lacks (`self.is_empty()` in a Stack without one) is the model's
invention: the stop rule ends the suggestion before it, where the class is wholly known."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st
from pygls.workspace import TextDocument

from phils.lsp import postprocess
from phils.lsp.documents import cursor_context
from phils.lsp.members import of_class_at_cursor

CURSOR = "█"
STACK = ("class Stack:\n    def __init__(self):\n        self.items = []\n\n"
         "    def push(self, item):\n        self.items.append(item)\n\n    def peek(self):\n        █\n")


def names(marked: str) -> tuple[str, ...] | None:
    before, after = marked.split(CURSOR)
    line = before.rsplit("\n", 1)[-1]
    return of_class_at_cursor(before, after, len(line) - len(line.lstrip()) or 0)


def finish_in(marked: str, raw: str, name: str = "t.py") -> str:
    """The suggestion as the engine's stop rule ends it and the front's filters leave it."""
    before, after = marked.split(CURSOR)
    lines = before.split("\n")
    ctx = cursor_context(TextDocument(f"file:///{name}", before + after), len(lines) - 1, len(lines[-1]))
    shape = postprocess.shape_of(ctx)
    stop = postprocess.stop_index(raw, shape)
    return postprocess.apply(raw if stop is None else raw[:stop], ctx, shape)


def test_a_method_reads_the_names_of_its_whole_class():
    found = names(STACK)
    assert found is not None and {"items", "push", "peek", "append"} <= set(found)
    assert "is_empty" not in found
    # The class goes on below the cursor: its later methods count.
    later = STACK + "\n    def is_empty(self):\n        return not self.items\n"
    assert "is_empty" in names(later)
    # In the class's own body (a new method being written), the same.
    assert "items" in names(STACK.replace("    def peek(self):\n        █\n", "    █\n"))
    # A function nested in a method still reads self.
    assert "items" in names(STACK.replace("        █\n", "        def inner(x):\n            █\n"))


def test_bases_of_this_file_and_builtin_types_are_read_others_make_it_unknown():
    base = "class Base:\n    def size(self):\n        return 0\n\n\n"
    assert "size" in names(base + STACK.replace("class Stack:", "class Stack(Base):"))
    assert "keys" in names(STACK.replace("class Stack:", "class Stack(dict):"))
    assert "args" in names(STACK.replace("class Stack:", "class Stack(ValueError):"))
    assert names(STACK.replace("class Stack:", "class Stack(Generic[T], ABC):")) is not None
    assert names(STACK.replace("class Stack:", "class Stack(\n    object,\n):")) is not None
    # What this document does not hold may have any attribute.
    assert names(STACK.replace("class Stack:", "class Stack(collections.UserList):")) is None
    assert names(STACK.replace("class Stack:", "class Stack(Base):")) is None  # (no Base here)
    assert names(STACK.replace("class Stack:", "class Stack(metaclass=Meta):")) is None
    assert names("@attr.s\n" + STACK) is None
    assert names("@dataclass(frozen=True)\n" + STACK) is not None
    assert names(STACK + "\n    def __getattr__(self, name):\n        return 1\n") is None


def test_where_self_is_not_the_instance_nothing_is_known():
    assert names(STACK.replace("def peek(self):", "def peek(cls):")) is None
    assert names(STACK.replace("def peek(self):", "@staticmethod\n    def peek(stack):")) is None
    assert names("def peek(self):\n    █\n") is None  # (a function at the module's level)
    assert names("x = 1\n█\n") is None


def test_a_suggestion_ends_before_a_line_that_reads_what_the_class_lacks():
    # Seen with Qwen2.5-Coder 1.5B (int4) in two small classes of nine: `if not self.is_empty():`.
    assert finish_in(STACK, "if not self.is_empty():\n            return self.items[-1]\n        return None") == ""
    assert finish_in(STACK, "return self.items[-1]") == "return self.items[-1]"
    assert finish_in(STACK, "top = self.items[-1]\n        self.log(top)\n        return top") == "top = self.items[-1]"
    # What the answer binds itself, dunders, and docstrings and strings are not inventions.
    assert finish_in(STACK, "self.count = 0\n        return self.count") == "self.count = 0\n        return self.count"
    assert finish_in(STACK, "return self.__class__.__name__") == "return self.__class__.__name__"
    assert finish_in(STACK, '"""Return self.top."""\n        return self.items[-1]') == (
        '"""Return self.top."""\n        return self.items[-1]')
    assert finish_in(STACK, 'print("self.top")') == 'print("self.top")'
    # The user's own text on the line is theirs: only what the model wrote counts.
    typed = STACK.replace("        █", "        return self.is_e█")
    assert finish_in(typed, "mpty()") == "mpty()"
    assert finish_in(STACK.replace("        █", "        return self.█"), "is_empty()") == ""
    assert finish_in(STACK.replace("        █", "        return self.█"), "items[-1]") == "items[-1]"
    # Where the class is not wholly known, anything goes.
    external = STACK.replace("class Stack:", "class Stack(list):")
    assert finish_in(external, "return self.is_empty()") == ""  # (list has no is_empty either)
    unknown = STACK.replace("class Stack:", "class Stack(Sequence):")
    assert finish_in(unknown, "return self.is_empty()") == "return self.is_empty()"
    # Other languages are not read.
    js = "class Stack {\n  peek() {\n    █\n  }\n}\n"
    assert finish_in(js, "return this.isEmpty() ? null : this.items[0];", "a.js") == (
        "return this.isEmpty() ? null : this.items[0];")


def test_an_attribute_being_annotated_or_assigned_is_not_judged_before_its_line_says_which():
    # Seen in aiohttp's WebSocketWriter: the engine read `self._output_buffer:` (an annotated assignment being
    # written) as a read of an attribute the class lacks.
    from phils.stoprule import stop_index

    before, after = STACK.split(CURSOR)
    lines = before.split("\n")
    ctx = cursor_context(TextDocument("file:///t.py", before + after), len(lines) - 1, len(lines[-1]))
    shape = postprocess.shape_of(ctx)
    for partial in ("self._buffer", "self._buffer:", "self._buffer: bytes", "self._buffer =", "self._buffer: bytes ="):
        assert stop_index(partial, shape) is None, partial
    assert stop_index("self._buffer: bytes = b''\n", shape) is None
    assert stop_index("self._buffer.clear()", shape) == 0


@given(st.text(alphabet="class Sdef(self):\n ._=x@,[]'\"#", max_size=120), st.integers(0, 12))
@settings(max_examples=300, deadline=None)
def test_any_text_gives_names_or_none_and_the_stop_rule_reads_any_answer_with_them(source, indent):
    """Half-written code of any shape: no exception, and only names of the text or of builtin types."""
    from phils.stoprule import Shape, stop_index

    cut = len(source) // 2
    found = of_class_at_cursor(source[:cut], source[cut:], indent)
    assert found is None or all(name.isidentifier() for name in found)
    shape = Shape(single_line=False, min_indent=indent, line_prefix="", max_lines=8, members=found or ())
    assert stop_index(source, shape) is None or 0 <= stop_index(source, shape) <= len(source)


def test_a_name_at_the_very_end_of_the_answer_is_read_once_the_answer_is_final():
    assert finish_in(STACK, "return self.size") == ""
    assert finish_in(STACK, "top = self.items[-1]\n        return self.size") == "top = self.items[-1]"
    assert finish_in(STACK, "return self.items") == "return self.items"
    assert finish_in(STACK.replace("        █", "        return self.█"), "size") == ""
