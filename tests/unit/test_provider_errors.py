"""Retry-After parsing and the mapping from HTTP outcomes to typed errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from proj.provider.errors import (
    PermanentError,
    ProviderServerError,
    RateLimited,
    error_for_status,
    parse_retry_after,
)

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2", 2.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (" 120 ", 120.0),
        ("-3", 0.0),
        ("Mon, 23 Nov 2026 12:00:30 GMT", 30.0),
        ("Mon, 23 Nov 2026 11:59:00 GMT", 0.0),  # a date in the past: no wait
        ("Monday, 23-Nov-26 12:01:00 GMT", 60.0),  # RFC 850 form
        ("soon", None),
        ("", None),
        (None, None),
        ("inf", None),
    ],
)
def test_retry_after_parses_seconds_and_http_dates(
    value: str | None, seconds: float | None
) -> None:
    assert parse_retry_after(value, NOW) == seconds


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (500, ProviderServerError),
        (502, ProviderServerError),
        (503, ProviderServerError),
        (408, ProviderServerError),
        (429, RateLimited),
        (400, PermanentError),
        (401, PermanentError),
        (404, PermanentError),
        (422, PermanentError),
    ],
)
def test_error_for_status_maps_each_class(status: int, cls: type) -> None:
    err = error_for_status(status, {"retry-after": "7"}, dependency="ai", url="http://x/y")
    assert type(err) is cls
    assert err is not None and err.status == status and err.dependency == "ai"


def test_error_for_status_success_is_none() -> None:
    assert error_for_status(200, {}, dependency="ai", url="u") is None
    assert error_for_status(204, {}, dependency="ai", url="u") is None


def test_rate_limited_carries_retry_after() -> None:
    err = error_for_status(
        429, {"retry-after": "Mon, 23 Nov 2026 12:00:05 GMT"}, dependency="ai", url="u", now=NOW
    )
    assert isinstance(err, RateLimited)
    assert err.retry_after_s == 5.0
    assert err.record()["kind"] == "rate_limited"


def test_retryable_flags() -> None:
    assert ProviderServerError("x").retryable
    assert not PermanentError("x").retryable
