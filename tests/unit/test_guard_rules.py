"""Pure decisions of the guarded layer: which requests leave their dependency, what a task's
exception means (defer or fail), and that deferrals survive pickling."""

from __future__ import annotations

import pickle

import httpx
import pytest
from pydantic import SecretStr

from proj.dependencies import Dependency
from proj.guard.request_rules import refusal
from proj.provider.errors import RateLimited
from proj.resilience.breaker import BreakerOpen
from proj.resilience.ratelimit import RateLimitWait
from proj.tasks.deferrals import deferral_of as _deferral

DEP = Dependency(
    name="pay", base_url="https://api.pay.test/v2/", api_key=SecretStr("k"), timeout_s=5
)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.pay.test/v2/charges/ch_1",
        "https://api.pay.test:443/v2/charges",
        "https://API.PAY.TEST/v2/x",
        "https://api.pay.test/v2/people/ann%40acme.com",
        "https://api.pay.test/v2/ids/a%2Fb",  # an encoded slash inside an id
        "https://api.pay.test/v2/x?next=../../admin",  # the query is not the path
    ],
)
def test_requests_on_the_dependency_go_out(url: str) -> None:
    assert refusal(DEP, httpx.URL(url)) is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://evil.test/v2/charges", "another host"),
        ("http://api.pay.test/v2/charges", "another host"),  # scheme
        ("https://api.pay.test:8443/v2/charges", "another host"),
        ("https://api.pay.test/admin", "outside"),
        ("https://api.pay.test/v20/x", "outside"),
        ("https://api.pay.test/v2%2f..%2fadmin", "dot segments"),
        ("https://api.pay.test/v2/%2e%2e/admin", "dot segments"),
        ("https://api.pay.test/v2/%252e%252e/admin", "dot segments"),
        ("https://api.pay.test/v2/..;/admin", "dot segments"),
        ("https://api.pay.test/v2/..%5cadmin", "dot segments"),
        ("https://api.pay.test/v2%2fadmin", "outside"),
        ("ftp://api.pay.test/v2/x", "scheme"),
    ],
)
def test_requests_that_leave_the_dependency_are_refused(url: str, why: str) -> None:
    reason = refusal(DEP, httpx.URL(url))
    assert reason is not None and why in reason


def test_any_host_dependency_still_refuses_dot_segments() -> None:
    src = Dependency(name="source.x", base_url=None, api_key=None, any_host=True)
    assert refusal(src, httpx.URL("https://anything.test/feed.json")) is None
    assert refusal(src, httpx.URL("https://anything.test/a/%2e%2e/b")) is not None


def _response(status: int, retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(status, headers=headers, request=httpx.Request("GET", "https://x"))


def test_deferral_of_each_kind_of_come_back_later() -> None:
    assert _deferral(BreakerOpen("pay", 12.0)) == (12.0, 0.1, False)
    assert _deferral(RateLimitWait("pay", 0.5)) == (0.5, 0.1, False)
    assert _deferral(RateLimited("429", retry_after_s=3.0)) == (3.0, 1.0, True)
    err = httpx.HTTPStatusError("429", request=_response(429).request, response=_response(429, "7"))
    assert _deferral(err) == (7.0, 1.0, True)
    no_header = httpx.HTTPStatusError(
        "429", request=_response(429).request, response=_response(429)
    )
    assert _deferral(no_header) == (None, 1.0, True)
    assert _deferral(ValueError("bad input")) is None


def _wrapped_breaker_open() -> None:
    try:
        raise BreakerOpen("pay", 5.0)
    except BreakerOpen as inner:
        raise RuntimeError("wrapped") from inner


def _given_up_429() -> None:
    try:
        raise RateLimited("429", retry_after_s=1.0)
    except RateLimited:
        raise ValueError("quota exhausted, give up") from None


def test_deferral_follows_causes_but_not_a_suppressed_context() -> None:
    with pytest.raises(RuntimeError) as wrapped:
        _wrapped_breaker_open()
    assert _deferral(wrapped.value) == (5.0, 0.1, False)
    with pytest.raises(ValueError, match="give up") as given_up:
        _given_up_429()
    assert _deferral(given_up.value) is None  # the code chose to fail


def test_deferrals_survive_pickling() -> None:
    for exc in (BreakerOpen("pay", 2.5, "open", "tripped"), RateLimitWait("pay", 0.25)):
        back = pickle.loads(pickle.dumps(exc))  # noqa: S301 (our own object, in memory)
        assert type(back) is type(exc) and str(back) == str(exc) and back.wait_s == exc.wait_s
