"""The provider client against the simulator over loopback: each error class, both
Retry-After forms, usage and cost."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pydantic import SecretStr

from proj.dependencies import Dependency
from proj.provider import (
    MalformedResponse,
    PermanentError,
    ProviderConnectionError,
    ProviderServerError,
    ProviderTimeout,
    RateLimited,
)
from proj.provider.client import ProviderClient, guarded_client
from proj.provider.transport import make_transport
from proj.settings import DEFAULT_PRICES
from proj.sim.admin import SimAdmin
from proj.stack.procs import free_port
from tests.integration.conftest import API_KEY


@pytest.fixture(autouse=True)
def _shared_state(redis_client: object) -> None:
    """The guarded client keeps its breaker and limit in the session's Redis."""


def _run(base: str, fn: Callable[[ProviderClient], Awaitable[Any]], key: str = API_KEY) -> Any:
    async def main() -> Any:
        transport = make_transport(max_connections=10)
        dep = Dependency(name=f"ai-{uuid.uuid4().hex[:6]}", base_url=base, api_key=SecretStr(key),
                         timeout_s=2)  # fmt: skip
        client = guarded_client(dep, transport, connect_timeout_s=2, prices=DEFAULT_PRICES)
        try:
            return await fn(client)
        finally:
            await client.aclose()
            await transport.aclose()

    return asyncio.run(main())


def _chat(c: ProviderClient) -> Awaitable[Any]:
    return c.chat(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello Acme"}])


def test_client_chat_records_model_tokens_and_cost(sim: SimAdmin) -> None:
    result = _run(sim.base_url, _chat)
    assert result.usage.model == "gpt-4o-mini"
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    expected = (result.usage.prompt_tokens * 0.15 + result.usage.completion_tokens * 0.60) / 1e6
    assert result.usage.cost_usd == pytest.approx(expected)
    assert "Acme" in result.json()["entities"]
    assert "sk-" not in repr(_run(sim.base_url, lambda c: _echo(c)))


async def _echo(c: ProviderClient) -> ProviderClient:
    return c


@pytest.mark.parametrize("fmt", ["seconds", "http-date"])
def test_client_429_parses_retry_after_in_both_forms(sim: SimAdmin, fmt: str) -> None:
    sim.configure(
        {"routes": {"chat": {"capacity_rps": 1, "retry_after_s": 3, "retry_after_format": fmt}}}
    )
    _run(sim.base_url, _chat)  # the first call of the second is admitted
    with pytest.raises(RateLimited) as err:
        _run(sim.base_url, _chat)
    assert err.value.retry_after_s is not None
    assert 1.5 <= err.value.retry_after_s <= 3.0


@pytest.mark.parametrize(
    ("route_cfg", "exc"),
    [
        ({"error_rate": 1.0, "error_status": 500}, ProviderServerError),
        ({"error_rate": 1.0, "error_status": 503}, ProviderServerError),
        ({"error_rate": 1.0, "error_status": 404}, PermanentError),
        ({"malformed_rate": 1.0}, MalformedResponse),
        ({"timeout_rate": 1.0, "hang_s": 10}, ProviderTimeout),
        ({"down": True}, ProviderServerError),
    ],
)
def test_client_maps_each_failure_to_its_class(
    sim: SimAdmin, route_cfg: dict[str, Any], exc: type[Exception]
) -> None:
    sim.configure({"routes": {"chat": route_cfg}})
    with pytest.raises(exc):
        _run(sim.base_url, _chat)


def test_client_wrong_key_is_permanent(sim: SimAdmin) -> None:
    with pytest.raises(PermanentError) as err:
        _run(sim.base_url, _chat, key="wrong")
    assert err.value.status == 401


def test_client_connection_refused_is_a_connection_error() -> None:
    with pytest.raises(ProviderConnectionError):
        _run(f"http://127.0.0.1:{free_port()}", _chat)


def test_warm_up_prepares_the_session_and_connections_the_first_call_uses(
    sim: SimAdmin,
    provider_env: dict[str, str],
    redis_client: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pool process warms its runtime on start; the first call then reuses what it made
    (and the warm-up itself calls no provider)."""
    import aiohttp

    from proj.provider import runtime
    from proj.settings import reset_settings

    for k, v in provider_env.items():
        monkeypatch.setenv(k, v)
    reset_settings()
    runtime.reset_runtime()
    try:
        rt = runtime.get_runtime()
        rt.warm_up()
        session = rt.providers.transport.client  # type: ignore[attr-defined]
        assert isinstance(session, aiohttp.ClientSession) and not session.closed
        assert set(rt.providers._clients) == {"ai", "company", "person"}
        assert sim.stats()["totals"]["company"] == 0
        rt.run(lambda p: p.company.get_json("/v1/companies/warm.com"))
        assert rt.providers.transport.client is session  # type: ignore[attr-defined]
    finally:
        runtime.reset_runtime()
        monkeypatch.undo()
        reset_settings()
