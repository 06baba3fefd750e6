"""Declared dependencies: loading, merging, resolving against an environment (pure)."""

from __future__ import annotations

import re

import pytest

from proj.dependencies import DependencyError, declarations, problems, resolve

SHIPPED = """
[ai]
base_url_env = "PROVIDER_BASE_URL"
key_env = "PROVIDER_API_KEY"

[company]
base_url_env = "LOOKUP_URL"
key_env = "LOOKUP_KEY"
fallback = "ai"

[hook]
base_url_env = "HOOK_URL"
optional = true
secret_url = true
"""


def test_dependency_takes_url_and_key_from_the_named_variables() -> None:
    deps = resolve(
        declarations(SHIPPED),
        {"PROVIDER_BASE_URL": "https://x.test", "PROVIDER_API_KEY": "sk-secret-42"},
    )
    ai = deps["ai"]
    assert ai.base_url == "https://x.test" and ai.api_key is not None
    assert ai.api_key.get_secret_value() == "sk-secret-42"
    assert "sk-secret" not in repr(ai)
    assert problems(deps) == []


def test_fallback_uses_the_other_dependency_url_and_key() -> None:
    env = {"PROVIDER_BASE_URL": "https://x.test", "PROVIDER_API_KEY": "k"}
    company = resolve(declarations(SHIPPED), env)["company"]
    assert company.base_url == "https://x.test"
    assert company.api_key is not None and company.api_key.get_secret_value() == "k"
    own = resolve(declarations(SHIPPED), {**env, "LOOKUP_URL": "https://l.test"})["company"]
    assert own.base_url == "https://l.test"
    assert own.missing == ("LOOKUP_KEY (its key) is not set",)  # its own URL: its own key


def test_problems_name_every_missing_variable_of_required_dependencies() -> None:
    deps = resolve(declarations(SHIPPED), {})
    assert problems(deps) == [
        "dependency 'ai': PROVIDER_BASE_URL is not set, PROVIDER_API_KEY (its key) is not set",
        "dependency 'company': LOOKUP_URL (or PROVIDER_BASE_URL) is not set",
    ]  # hook is optional


def test_deployment_file_and_environment_merge_field_by_field() -> None:
    user = '[ai]\ntimeout_s = 5\n[payments]\nbase_url = "https://pay.test/v2/"\nrate = "20/s"\n'
    decls = declarations(SHIPPED, user, {"ai": {"enabled": False}, "hook": None})
    assert decls["ai"].timeout_s == 5 and decls["ai"].enabled is False
    assert decls["ai"].key_env == "PROVIDER_API_KEY"  # kept from proj's declaration
    assert decls["hook"].enabled is False
    deps = resolve(decls, {}, timeout_s=12)
    assert deps["payments"].rate is not None and deps["payments"].rate.rate == 20
    assert deps["payments"].timeout_s == 12
    assert problems(deps) == ["dependency 'company': LOOKUP_URL (or PROVIDER_BASE_URL) is not set"]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"pay": {"rate": "fast"}}, "dependency 'pay': rate a rate is like"),
        ({"pay": {"base_url": "ftp://x"}}, "dependency 'pay': base_url must be an http"),
        ({"pay": {"timeout_s": -1}}, "dependency 'pay': timeout_s Input should be greater"),
        ({"pay": {"colour": "red"}}, "dependency 'pay': colour Extra inputs"),
        ({"pay": {"fallback": "nope"}}, "fallback names no declared dependency, got 'nope'"),
        ({"Bad Name": {}}, "a dependency name is lowercase"),
        ({"pay": 3}, "PROJ_DEPENDENCIES['pay']: must be a table of fields, got 3"),
    ],
)
def test_bad_declarations_name_the_dependency_field_and_value(
    patch: dict[str, object], message: str
) -> None:
    with pytest.raises(DependencyError, match=re.escape(message)):
        declarations(SHIPPED, None, patch)


def test_invalid_toml_names_the_file() -> None:
    with pytest.raises(DependencyError, match="PROJ_DEPENDENCIES_FILE: not valid TOML"):
        declarations(SHIPPED, "[unclosed")


def test_a_secret_url_is_never_shown() -> None:
    with pytest.raises(DependencyError) as err:
        resolve(declarations(SHIPPED), {"HOOK_URL": "mailto:token-123"})
    assert "token-123" not in str(err.value) and "<hidden>" in str(err.value)
    dep = resolve(declarations(SHIPPED), {"HOOK_URL": "https://h.test/t0k3n"})["hook"]
    assert dep.shown_url() == "<hidden>"


def test_settings_refuse_a_bad_dependency_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from proj.errors import ConfigError
    from proj.settings import load_settings

    monkeypatch.setenv("PROJ_DEPENDENCIES", '{"pay": {"rate": "fast"}}')
    with pytest.raises(ConfigError, match="dependency 'pay': rate"):
        load_settings()
    monkeypatch.setenv("PROJ_DEPENDENCIES", '{"ai": {"breaker": {"open_s": -1}}}')
    with pytest.raises(ConfigError, match=r"dependency 'ai': breaker.open_s"):
        load_settings()
