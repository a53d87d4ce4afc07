from __future__ import annotations

from phils.lsp import outline


def test_empty_body_indent_after_a_header_or_a_bare_docstring():
    assert outline.empty_body_indent("def f(x):\n") == "    "
    assert outline.empty_body_indent('def f(x):\n    """Doc."""\n') == "    "
    assert outline.empty_body_indent('class A:\n    def f(self):\n        """Doc\n\n        more.\n        """\n') == "        "
    assert outline.empty_body_indent("def f(x):\n    # add one to x\n") == "    "
    assert outline.empty_body_indent("def f(a,\n      b):\n    '''Doc.'''\n") == "    "


def test_no_forced_indent_when_the_body_has_code_or_at_module_level():
    assert outline.empty_body_indent("def f(x):\n    return x\n") is None
    assert outline.empty_body_indent('x = 1\n"""A string."""\n') is None
    assert outline.empty_body_indent("import os\n") is None
    assert outline.empty_body_indent("") is None
    assert outline.empty_body_indent("# a comment\n") is None


def test_enclosing_headers_bring_comments_decorators_docstrings_and_sibling_signatures():
    source = (
        "import os\n"
        "class Store:\n"
        '    """Keeps things."""\n'
        "    def get(self, key):\n"
        "        return self.d[key]\n"
        "    # Store value under key.\n"
        "    @traced\n"
        "    def put(self, key, value):\n"
        "        # remember it\n"
        "        x = 1\n"
    ).splitlines(keepends=True)
    head = outline.enclosing_headers(source)
    assert head[1] == "class Store:\n" and 2 in head
    assert head[3] == "    def get(self, key): ...\n"  # a sibling, as a one-line signature
    assert [head[i] for i in (5, 6, 7, 8)] == source[5:9]  # comment, decorator, signature, comment docstring
    assert 4 not in head and 9 not in head


def test_empty_body_indent_reads_only_the_end_of_a_huge_prefix():
    filler = "x = 1\n" * 2_000_000  # 12 MB before the function
    assert outline.empty_body_indent(filler + 'def f(a):\n    """Docstring."""\n') == "    "
    assert outline.empty_body_indent(filler + "y = 2\n") is None


def test_a_header_ends_where_its_brackets_close_not_at_the_next_colon():
    # A JavaScript class's header has no colon: read as a signature running on to the next `:`, the whole
    # class went into the lines a suggestion may not write again, and Qwen2.5-Coder's
    # `if (this.count > 0) {` / `this.count = 0;` / `}` in `reset()` lost its body (the constructor's line).
    js = ["class Counter {", "  constructor() {", "    this.count = 0;", "  }", "", "  reset() {", "    if (this."]
    assert list(outline.enclosing_headers(js).values()) == ["class Counter {"]
    # A Python signature over several lines is still read whole.
    py = ["def f(a,", "      b) -> int:", "    return"]
    assert list(outline.enclosing_headers(py).values()) == py[:2]
    commented = ["class A:  # a comment", "    x = 1", "", "    def f(self):", "        return"]
    assert "    x = 1" not in outline.enclosing_headers(commented).values()
