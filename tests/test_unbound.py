"""Names the code below the cursor reads that only the missing lines can define (lsp/unbound.py)."""

from __future__ import annotations

from phils.lsp.unbound import MAX_NAMES, names_to_bind

BEFORE = 'def prefixes(string):\n    """All prefixes of string."""\n    '


def test_a_variable_read_below_and_defined_nowhere_is_named_in_order_of_use():
    after = "\n    for i in range(len(string)):\n        result.append(string[:i + 1])\n    return result, total\n"
    assert names_to_bind(BEFORE, after, 4) == ["result", "total"][:MAX_NAMES]


def test_names_above_the_cursor_builtins_keywords_and_attributes_are_known():
    before = "import os\n\ndef f(items, limit):\n    seen = set()\n    "
    after = "\n    for item in items:\n        if len(seen) > limit or os.path.exists(item):\n            return None\n"
    assert names_to_bind(before, after, 4) == []


def test_names_the_code_below_binds_itself_are_not_asked_for():
    after = ("\n    count = 0\n    for i, (key, value) in enumerate(pairs()):\n        count += key\n"
             "    squares = [x * x for x in range(3)]\n    with open(p) as handle:\n        data = handle.read()\n"
             "    f = lambda y, z=1: y + z\n    print(count, value, squares, data, f, key=1)\n"
             "    return helper(squares)\n\n\ndef helper(values):\n    return values\n\n\ndef pairs():\n    return []\n")
    assert names_to_bind("def g(p):\n    ", after, 4) == []


def test_only_the_enclosing_function_counts():
    after = "\n    return 1\n\n\ndef other():\n    return missing\n"
    assert names_to_bind(BEFORE, after, 4) == []
    assert names_to_bind(BEFORE, "\n    return missing\n", 4) == ["missing"]


def test_text_that_does_not_tokenize_is_read_line_by_line():
    after = "\n        if distance < threshold:\n            return (\n    value = 'unterminated\n    return distance\n"
    assert names_to_bind("def f(threshold):\n    for a in b:\n        ", after, 4) == ["distance"]


def test_comments_and_strings_hold_no_names():
    after = '\n    # uses ghost here\n    return "ghost"\n'
    assert names_to_bind(BEFORE, after, 4) == []
