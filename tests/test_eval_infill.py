"""``phils eval infill``: the cases it builds and what it counts."""

from phils.tools.eval_infill import make_cases, score

ROW = {
    "task_id": "T/0",
    "prompt": "def is_prime(n):\n    \"\"\"Whether n is prime.\"\"\"\n",
    "canonical_solution": "    if n < 2:\n        return False\n    for k in range(2, n):\n        if n % k == 0:\n"
                          "            return False\n    return True\n",
    "test": "def check(f):\n    assert f(7) and not f(8) and not f(1)\n",
    "entry_point": "is_prime",
}


def test_a_line_and_a_span_are_blanked_in_the_middle_with_code_below():
    line, span = make_cases([ROW])
    assert (line.kind, line.original, line.following) == ("line", ["    for k in range(2, n):"], "        if n % k == 0:")
    assert line.document.split("\n")[line.line] == "    " and line.character == 4
    assert span.kind == "span" and len(span.original) == 2 and span.following.strip()
    assert score(line, "for k in range(2, n):")["passed"] and score(line, "for k in range(2, n):")["exact"]
    assert not score(line, "pass")["passed"]


def test_the_next_line_written_again_in_place_differs_from_its_text_elsewhere():
    line = make_cases([ROW], ("line",))[0]
    stutter = score(line, "for k in range(2, n):\n        if n % k == 0:")
    assert stutter["repeats_next_line"] and stutter["next_line_text"] and stutter["longer"]
    elsewhere = score(line, "if n % k == 0:")  # the same text at the cursor's indentation
    assert not elsewhere["repeats_next_line"] and elsewhere["next_line_text"]
    assert score(line, "")["empty"]


def test_a_calls_arguments_are_blanked_mid_line_with_the_closing_bracket_kept():
    (call,) = make_cases([ROW], ("call",))
    line = call.document.split("\n")[call.line]
    assert (line[: call.character], line[call.character :]) == ("    for k in range(", "):")
    assert call.original == ["2, n"] and call.kind == "call"
    assert score(call, "2, n")["passed"] and score(call, "2, n")["exact"]
    assert not score(call, "2, n)")["passed"]  # the bracket the editor closed, written again


def test_at_line_start_the_cursor_is_where_enter_leaves_it_and_the_answer_writes_the_indentation():
    (line,) = make_cases([ROW], ("line",), at_line_start=True)
    assert line.document.split("\n")[line.line] == "" and line.character == 0
    assert score(line, "    for k in range(2, n):")["passed"] and score(line, "    for k in range(2, n):")["exact"]
    assert not score(line, "for k in range(2, n):")["passed"]  # at column 0: outside the function
