"""The brace-language eval's holes: small indented blocks with code below, blanked to one line."""

from __future__ import annotations

from phils.tools.eval_blocks import balanced, blocks_in, make_cases, score

GO = """package main

func reverse(s string) string {
\trunes := []rune(s)
\tfor i, j := 0, len(runes)-1; i < j; i, j = i+1, j-1 {
\t\trunes[i], runes[j] = runes[j], runes[i]
\t}
\treturn string(runes)
}

func last(xs []int) int {
\tif len(xs) == 0 {
\t\treturn 0
\t} else {
\t\tfmt.Println("}")
\t}
\treturn xs[len(xs)-1]
}
"""


def test_holes_are_small_indented_blocks_with_code_below():
    lines = GO.split("\n")
    assert [(lines[a].strip(), lines[b].strip()) for a, b in blocks_in(GO)] == [
        ("for i, j := 0, len(runes)-1; i < j; i, j = i+1, j-1 {", "}")]
    # not: a top-level function (no indentation), nor an if whose block goes on with `} else {`


def test_an_answer_that_leaves_a_bracket_open_is_not_balanced():
    assert balanced("if (x) {\n  y();\n}")
    assert not balanced("switch (c) {\n  case 'a':")
    assert not balanced("y();\n}")  # closes the code around it
    assert balanced('s = "{";')  # brackets in strings do not count


def test_cases_blank_the_block_and_score_first_line_block_and_brackets(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "main.go").write_text(GO)
    (tmp_path / "notes.py").write_text("def f():\n    if x {\n        y\n    }\n    z\n")  # not a brace language
    [case] = make_cases(tmp_path, 10)
    assert case.module == "pkg/main.go" and case.language_id == "go"
    assert case.document.split("\n")[case.line] == "\t" and "runes[i], runes[j]" not in case.document
    right = "for i, j := 0, len(runes)-1; i < j; i, j = i+1, j-1 {\n\t\trunes[i], runes[j] = runes[j], runes[i]\n\t}"
    assert score(case, right) == {"first_exact": True, "first_similarity": 1.0, "block_exact": True,
                                  "block_similarity": 1.0, "balanced": True, "empty": False}
    cut = score(case, right.rsplit("\n", 1)[0])
    assert cut["first_exact"] and not cut["block_exact"] and not cut["balanced"]
    assert score(case, "")["empty"] and not score(case, "")["balanced"]
