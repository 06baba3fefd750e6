"""The settings object: defaults, the REDIS_URL knob, and errors that name the variable."""

from __future__ import annotations

import pytest

from proj.errors import ConfigError
from proj.settings import DEFAULT_REDIS_URL, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for var in list(os.environ):
        if var.startswith(("PROJ_", "CELERY_", "FLOWER_")) or var == "REDIS_URL":
            monkeypatch.delenv(var)


def test_settings_defaults() -> None:
    s = load_settings()
    assert s.broker.redis_url == DEFAULT_REDIS_URL
    assert not s.broker.redis_url_is_explicit
    assert s.broker.broker_url == s.broker.result_backend == DEFAULT_REDIS_URL


def test_settings_redis_url_feeds_broker_and_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://h:1/3")
    s = load_settings()
    assert s.broker.redis_url_is_explicit
    assert s.broker.broker_url == s.broker.result_backend == "redis://h:1/3"


def test_settings_celery_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://h:1/3")
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://b:1/0")
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "redis://r:1/0")
    s = load_settings()
    assert (s.broker.broker_url, s.broker.result_backend) == ("redis://b:1/0", "redis://r:1/0")


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        ("PROJ_VISIBILITY_TIMEOUT_S", "-5", "PROJ_VISIBILITY_TIMEOUT_S"),
        ("PROJ_VISIBILITY_TIMEOUT_S", "soon", "PROJ_VISIBILITY_TIMEOUT_S"),
        ("PROJ_DEFAULT_PRIORITY", "12", "PROJ_DEFAULT_PRIORITY"),
        ("REDIS_URL", "http://localhost", "REDIS_URL"),
        ("PROJ_TASK_TIME_LIMIT_S", "7200", "below PROJ_VISIBILITY_TIMEOUT_S"),
        ("PROJ_TASK_SOFT_TIME_LIMIT_S", "400", "below PROJ_TASK_TIME_LIMIT_S"),
        ("FLOWER_BASIC_AUTH", "nocolon", "user:password"),
    ],
)
def test_settings_error_names_variable_and_value(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert fragment in str(err.value)
    if var != "FLOWER_BASIC_AUTH":  # never echo a secret back
        assert value in str(err.value)


def test_settings_max_countdown_is_below_visibility_timeout() -> None:
    s = load_settings(visibility_timeout_s=100, task_time_limit_s=50, task_soft_time_limit_s=40)
    assert s.broker.max_countdown_s < s.broker.visibility_timeout_s


def test_settings_flower_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().stack.flower_credentials()[0] == "proj"
    assert len(load_settings().stack.flower_credentials()[1]) >= 12
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "ops:s3cret")
    assert load_settings().stack.flower_credentials() == ("ops", "s3cret")


def test_an_empty_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    from proj.settings import load_settings

    monkeypatch.setenv("PROVIDER_BASE_URL", "")
    monkeypatch.setenv("PROJ_VISIBILITY_TIMEOUT_S", "")
    s = load_settings()
    assert s.providers.provider_base_url is None and s.broker.visibility_timeout_s == 3600


@pytest.mark.parametrize("value", [":", "ops:", ":pw"])
def test_flower_basic_auth_needs_a_user_and_a_password(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    from proj.errors import ConfigError
    from proj.settings import load_settings

    monkeypatch.setenv("FLOWER_BASIC_AUTH", value)
    with pytest.raises(ConfigError, match="FLOWER_BASIC_AUTH must be user:password"):
        load_settings()


def test_a_malformed_answer_is_retried_like_other_transient_failures() -> None:
    from proj.provider.errors import MalformedResponse
    from proj.tasks.base import ProjTask

    assert MalformedResponse in ProjTask.autoretry_for


def test_adaptive_settings_are_the_policy_fields_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from proj.resilience.concurrency import ConcurrencyPolicy

    assert load_settings().adaptive.policy() == ConcurrencyPolicy()  # the same defaults
    monkeypatch.setenv("PROJ_ADAPTIVE_MAX", "3")
    monkeypatch.setenv("PROJ_ADAPTIVE_COOLDOWN_S", "0.5")
    monkeypatch.setenv("PROJ_ADAPTIVE_SLOW_START", "false")
    policy = load_settings().adaptive.policy()
    assert (policy.maximum, policy.cooldown_s, policy.slow_start) == (3, 0.5, False)
    assert policy.start == 3  # the default start (5), kept within the bounds
    assert load_settings().adaptive.policy(maximum=40).maximum == 40  # --adaptive-max


def test_adaptive_bounds_the_wrong_way_round_are_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROJ_ADAPTIVE_MIN", "8")
    monkeypatch.setenv("PROJ_ADAPTIVE_MAX", "3")
    with pytest.raises(
        ConfigError, match=r"PROJ_ADAPTIVE_MIN must be <= PROJ_ADAPTIVE_MAX, got 8 > 3"
    ):
        load_settings()
