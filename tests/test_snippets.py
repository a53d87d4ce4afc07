from __future__ import annotations

from phils.lsp import prompt, snippets
from test_prompt import MARKERS, at_end, at_marker, long_module, words

TWIN = '''class Registry:
    def command(self, name):
        def decorator(f):
            if name in self._commands:
                logger.error("Command %s is already registered.", name)
                raise CommandAlreadyRegisteredError(name)
            assign_help_attrs(f, name, ATTR_COMMAND_TYPE)
            wrapped = wrap_with_server(f, self.server)
            self._commands[name] = wrapped
            return f
        return decorator

'''
FILLER = "".join(f"def f{i}(x):\n    return x + {i}\n\n\n" for i in range(150))
CURSOR = '''    def feature(self, name):
        def decorator(f):
            if name in self._features:
                logger.error("Feature %s is already registered.", name)
                raise FeatureAlreadyRegisteredError(name)
            assign_help_attrs(f, name, ATTR_FEATURE_TYPE)
            '''


def module_with_a_twin() -> str:
    """A method far above the cursor that did what the cursor's method is doing, then the line to write."""
    return "import os\n\n\n" + TWIN + FILLER + "class Features:\n" + CURSOR


def test_the_left_out_code_most_like_the_cursors_comes_back_with_what_followed_it():
    budget = 300
    built = prompt.build(at_end(module_with_a_twin()), words, budget)
    assert built.trimmed and words(built.text) <= budget
    assert "wrapped = wrap_with_server(f, self.server)\n" in built.text  # the line after the twin code
    assert "    def command(self, name):\n" in built.text  # under the def it sits in
    assert built.text.index("wrap_with_server") < built.text.index("def feature")  # in file order
    assert "def f0(x)" not in built.text


def test_no_snippet_when_nothing_left_out_is_alike():
    built = prompt.build(at_end(long_module()), words, budget=300)
    assert built.trimmed and built.snippet_start is None
    assert snippets.most_similar(["a = b\n"] * 30, 0, 20, 20) is not None  # alike: found
    assert snippets.most_similar(["a = b\n"] * 20 + ["x = y\n"] * 10, 0, 20, 20) is None  # nothing shared


def test_the_snippet_stays_while_the_user_types_so_the_prompt_stays_a_prefix():
    text, previous, start, snippet, moves = module_with_a_twin(), None, None, None, 0
    for i in range(30):
        text += f"w{i} = {i}\n            "
        built = prompt.build(at_end(text), words, budget=300, keep_start=start, keep_snippet=snippet)
        assert words(built.text) <= 300
        if previous is not None and not built.text.startswith(previous):
            moves += 1
        previous, start, snippet = built.text, built.tail_start, built.snippet_start
        if moves == 0:
            assert "wrap_with_server" in built.text
    assert moves <= 1


def test_fim_prompts_get_the_snippet_too():
    source = module_with_a_twin() + "█\n            return f\n        return decorator\n"
    built = prompt.build_fim(at_marker(source), words, 400, MARKERS)
    head = built.text.split("<SUF>")[0]
    assert built.snippet_start is not None and "wrapped = wrap_with_server(f, self.server)\n" in head
    assert words(built.text) <= 400
