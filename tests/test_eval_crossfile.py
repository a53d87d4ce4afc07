"""The cross-file eval's cases: lines calling another module of the same package, blanked where an editor would be."""

from __future__ import annotations

from pathlib import Path

from phils.tools.eval_crossfile import make_cases, score


def test_a_call_to_a_sibling_modules_function_becomes_a_case(tmp_path: Path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "util.py").write_text("def parse(text):\n    return text.split()\n")
    (package / "main.py").write_text(
        "import os\nfrom .util import parse\n\n\ndef load(path):\n    text = open(path).read()\n"
        "    words = parse(text)\n    return os.sep.join(words)\n\n\ndef other():\n    return os.getcwd()\n")
    cases = make_cases(tmp_path, "pkg", 10)
    assert len(cases) == 1
    case = cases[0]
    assert (case.module, case.line, case.character, case.target, case.callee) == ("pkg/main.py", 6, 12, "parse(text)", "parse")
    assert case.document.split("\n")[6] == "    words = " and "return os.sep.join(words)" in case.document
    assert score(case, "parse(text)\n    more")["exact"]
    near = score(case, "parse(text, ' ')")
    assert not near["exact"] and 0.8 < near["edit_similarity"] < 1 and near["callee_written"]
    assert score(case, "")["empty"]
