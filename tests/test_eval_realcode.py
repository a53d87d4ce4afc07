"""The real-code eval's holes: one-line statements inside functions, with code below, blanked to their indentation."""

from __future__ import annotations

from phils.tools.eval_realcode import holes_in, make_cases, score

SOURCE = '''"""A module."""
import os

TOP_LEVEL = os.getcwd()  # not in a function


def load(path):
    """Read the file at path."""
    full_path = os.path.join(TOP_LEVEL, path)
    if os.path.exists(full_path):
        handle = open(full_path, encoding="utf-8")
        text = handle.read()
        handle.close()
    total = compute(
        text,
    )
    i += 1
    return text.strip()


def last_only():
    return "nothing below me"
'''


def test_holes_are_one_line_statements_in_functions_with_code_below():
    lines = SOURCE.split("\n")
    chosen = [lines[n].strip() for n in holes_in(SOURCE)]
    assert chosen == ['full_path = os.path.join(TOP_LEVEL, path)', 'handle = open(full_path, encoding="utf-8")',
                      'text = handle.read()']
    # not: the docstring, a top-level line, a statement over three lines, a short one, a block's or
    # function's last statement (nothing below it in its block), and never a line that does not parse
    assert holes_in("def broken(:\n    x = 1\n") == []


def test_a_case_is_the_module_with_the_line_blanked_and_the_cursor_at_its_indentation(tmp_path):
    module = tmp_path / "pkg" / "mod.py"
    module.parent.mkdir()
    module.write_text(SOURCE)
    cases = make_cases(tmp_path, "pkg", limit=10)
    assert len(cases) == 2 and all(c.module == "pkg/mod.py" for c in cases)  # at most two holes a module
    case = cases[0]
    lines = case.document.split("\n")
    assert lines[case.line] == " " * case.character and case.character in (4, 8)
    assert case.document.replace(lines[case.line] + "\n", "", 1) != SOURCE  # the line is gone
    assert SOURCE.split("\n")[case.line].strip() == case.target
    assert case.document[case.offset - case.character: case.offset] == " " * case.character
    assert score(case, case.target + "\nmore")["exact"] and score(case, "")["empty"]
    assert score(case, case.next_line)["repeats_next_line"]
