from __future__ import annotations

from phils.cli import _parser, resolve_settings
from phils.config import Settings, client_settings, load_toml, merge, parse_assignment, profile_names, profile_path


def test_defaults_are_phi2_on_the_best_device():
    s = Settings()
    assert s.engine.model == "microsoft/phi-2"
    assert s.engine.device == "auto"
    assert s.engine.trust_remote_code is False and s.engine.allow_pickle is False
    assert s.log.buffer_text is False


def test_merge_applies_good_values_and_names_each_bad_key():
    s, warnings = merge(
        Settings(),
        {
            "engine": {"max_new_tokens": 8, "device": "CPU", "threads": "two", "nope": 1},
            "completion": {"max_lines": 0},
            "mystery": {},
        },
        "test",
    )
    assert s.engine.max_new_tokens == 8
    assert s.engine.device == "cpu"
    assert s.engine.threads == 0  # kept the default
    assert s.completion.max_lines == Settings().completion.max_lines
    text = "\n".join(warnings)
    for key in ("engine.threads", "engine.nope", "completion.max_lines", "mystery"):
        assert key in text
    assert len(warnings) == 4


def test_merge_rejects_wrong_types_and_choices():
    s, warnings = merge(Settings(), {"engine": {"device": "tpu", "offline": "yes"}, "log": "loud"}, "x")
    assert s.engine.device == "auto" and s.engine.offline is False
    assert len(warnings) == 3


def test_a_numeric_choice_takes_only_its_values():
    s, warnings = merge(Settings(), {"engine": {"int4_block": 128}}, "x")
    assert s.engine.int4_block == 128 and not warnings
    s, warnings = merge(Settings(), {"engine": {"int4_block": 100}}, "x")
    assert s.engine.int4_block == 32 and len(warnings) == 1 and "32, 64, 128" in warnings[0]
    s, warnings = merge(Settings(), {"engine": {"int4_block": "128"}}, "x")
    assert s.engine.int4_block == 32 and len(warnings) == 1


def test_set_parses_toml_values_and_bare_strings():
    assert parse_assignment("engine.max_new_tokens=8") == ({"engine": {"max_new_tokens": 8}}, None)
    assert parse_assignment("engine.model=/models/phi") == ({"engine": {"model": "/models/phi"}}, None)
    assert parse_assignment("engine.offline=true") == ({"engine": {"offline": True}}, None)
    assert parse_assignment("oops")[1] is not None
    assert parse_assignment("a.b.c=1")[1] is not None


def test_client_settings_may_be_wrapped_in_a_phils_section():
    assert client_settings({"phils": {"engine": {}}}) == {"engine": {}}
    assert client_settings({"engine": {}}) == {"engine": {}}
    assert client_settings(None) == {}


def test_every_shipped_profile_loads_without_warnings():
    names = profile_names()
    assert {"cpu", "gpu", "gemma3", "smollm2"} <= set(names)
    for name in names:
        values, problem = load_toml(profile_path(name))
        assert problem is None, name
        _, warnings = merge(Settings(), values, name)
        assert warnings == [], (name, warnings)


def test_command_line_layers_win_over_the_profile():
    args = _parser().parse_args(
        ["serve", "--profile", "gemma3", "--model", "/m", "--set", "engine.max_new_tokens=9", "--set", "bad"]
    )
    settings, warnings = resolve_settings(args)
    assert settings.engine.model == "/m"
    assert settings.engine.max_new_tokens == 9
    assert settings.engine.device == "cpu"  # from the profile
    assert len(warnings) == 1 and "bad" in warnings[0]


def test_an_unknown_profile_is_a_warning_not_a_crash():
    settings, warnings = resolve_settings(_parser().parse_args(["serve", "--profile", "nope"]))
    assert settings == Settings()
    assert "nope" in warnings[0] and "cpu" in warnings[0]


def test_a_broken_config_file_is_a_warning(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[engine\nmodel = ")
    settings, warnings = resolve_settings(_parser().parse_args(["serve", "--config", str(path)]))
    assert settings == Settings() and "not valid TOML" in warnings[0]
