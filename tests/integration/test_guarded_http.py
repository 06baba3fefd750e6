"""``proj.http`` / ``proj.ahttp`` against the simulator over loopback: the OpenAI SDK through
the guarded client (streaming and not), requests that would leave the dependency refused
before the key is attached, the breaker, 429 pushes and the in-flight cap."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
from collections.abc import Iterator

import httpx
import openai
import pytest
import redis as redis_lib

import proj
from proj import keys
from proj.guard.http import RequestRefused
from proj.sim.admin import SimAdmin
from tests.support import wait_until


@pytest.fixture
def deps(
    monkeypatch: pytest.MonkeyPatch,
    provider_env: dict[str, str],
    sim: SimAdmin,
    redis_client: redis_lib.Redis,
) -> Iterator[SimAdmin]:
    """This process configured as a worker would be: the simulator as ``ai``, and a user's
    ``userapi`` declared on its ``/v1/sources/`` path."""
    from proj.provider import runtime
    from proj.settings import reset_settings

    for k, v in provider_env.items():
        monkeypatch.setenv(k, v)
    user = {
        "userapi": {
            "base_url": f"{sim.base_url}/v1/sources/",
            "key_env": "USERAPI_KEY",
            "breaker": {"min_calls": 4, "open_s": 30},
            "max_in_flight": 2,
        }
    }
    monkeypatch.setenv("PROJ_DEPENDENCIES", json.dumps(user))
    monkeypatch.setenv("USERAPI_KEY", "sk-user-0123456789")
    reset_settings()
    runtime.reset_runtime()
    yield sim
    runtime.reset_runtime()
    monkeypatch.undo()
    reset_settings()


def _chat(client: openai.OpenAI) -> str:
    r = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello Acme"}]
    )
    return r.choices[0].message.content or ""


def test_openai_sdk_through_proj_http(deps: SimAdmin) -> None:
    sim = deps
    with proj.http("ai") as http_client:
        client = openai.OpenAI(
            base_url=f"{sim.base_url}/v1", api_key="placeholder", http_client=http_client
        )
        content = _chat(client)
        assert "Acme" in content
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "Hello Acme"}],
                stream=True,
            )
        )
        assert len(chunks) > 1
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == content
        assert [m.id for m in client.models.list()]
    stats = sim.stats()
    assert stats["unauthorized"] == 0  # the dependency's key went out, not the placeholder
    assert stats["counts"]["chat"]["ok"] == 2


def test_async_openai_sdk_streams_through_proj_ahttp(deps: SimAdmin) -> None:
    sim = deps

    async def main() -> int:
        async with proj.ahttp("ai") as http_client:
            client = openai.AsyncOpenAI(
                base_url=f"{sim.base_url}/v1", api_key="placeholder", http_client=http_client
            )
            stream = await client.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "Summarise Acme"}],
                stream=True,
            )
            return len([c async for c in stream])

    assert asyncio.run(main()) > 1


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:
        _Recorder.seen.append(dict(self.headers))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def other_host() -> Iterator[str]:
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_requests_off_the_dependency_are_refused_before_the_key_is_attached(
    deps: SimAdmin, other_host: str
) -> None:
    with proj.http("userapi") as client:
        with pytest.raises(RequestRefused, match="another host"):
            client.get(f"{other_host}/steal")
        with pytest.raises(RequestRefused, match="outside"):
            client.get("../../admin/config")  # httpx resolves it to /admin/config
        with pytest.raises(RequestRefused, match="dot segments"):
            client.get("x%2F..%2F..%2F..%2Fadmin%2Fconfig")
        assert client.get("ok1").status_code == 200
    assert _Recorder.seen == []  # nothing, let alone the key, reached the other host
    with proj.http("userapi") as client:
        openai_client = openai.OpenAI(
            base_url=f"{other_host}/v1", api_key="x", http_client=client, max_retries=0
        )
        with pytest.raises((RequestRefused, openai.APIConnectionError)):
            _chat(openai_client)
    assert _Recorder.seen == []


def test_lookup_values_cannot_reach_other_paths(deps: SimAdmin) -> None:
    from proj.provider import runtime
    from proj.provider.errors import PermanentError
    from proj.tasks import calls

    with pytest.raises(PermanentError, match="refused"):
        calls.company("../../admin/config")
    assert deps.stats()["totals"]["company"] == 0
    runtime.reset_runtime()


def test_proj_http_opens_the_breaker_on_5xx_and_refuses_while_open(
    deps: SimAdmin, redis_client: redis_lib.Redis
) -> None:
    sim = deps
    sim.configure({"routes": {"source": {"error_rate": 1.0, "error_status": 503}}})
    with proj.http("userapi") as client:
        for i in range(4):
            assert client.get(f"s{i}").status_code == 503
        proj.breaker("userapi").flush()
        with pytest.raises(proj.BreakerOpen) as err:
            client.get("s5")
    assert err.value.wait_s > 25
    assert sim.count("source") == 4
    assert redis_client.hget(keys.breaker("userapi"), "state") == b"open"


def test_a_429_pushes_the_shared_limit_for_every_caller(
    deps: SimAdmin, redis_client: redis_lib.Redis
) -> None:
    sim = deps
    sim.configure({"routes": {"source": {"rate_limit_next": 1, "retry_after_s": 2}}})
    with proj.http("userapi") as client:
        assert client.get("a").status_code == 429
        lim = proj.limiter("userapi")
        with pytest.raises(proj.RateLimitWait) as err:
            lim.acquire(max_wait_s=0.5)  # every caller now waits out the Retry-After
    assert 1.0 < err.value.wait_s <= 2.0
    assert redis_client.exists(keys.rate_limit("userapi"))


def test_in_flight_cap_holds_per_process(deps: SimAdmin) -> None:
    sim = deps
    # Requests an earlier test gave up on may still be running on the simulator; its peak
    # starts from what is in flight when counters reset, so start from none.
    wait_until(lambda: sim.stats()["in_flight"]["source"] == 0, 15, "earlier requests to end")
    sim.reset()
    sim.configure({"routes": {"source": {"latency_ms": 200}}})

    async def main() -> None:
        async with proj.ahttp("userapi") as client:
            rs = await asyncio.gather(*(client.get(f"c{i}") for i in range(6)))
        assert [r.status_code for r in rs] == [200] * 6

    asyncio.run(main())
    assert sim.stats()["max_in_flight"]["source"] <= 2


def test_undeclared_or_unset_dependency_is_a_clear_error(deps: SimAdmin) -> None:
    with pytest.raises(proj.ConfigError, match="no dependency named 'nope'; declared: ai"):
        proj.http("nope")
    with pytest.raises(proj.ConfigError, match="PROJ_NOTIFY_WEBHOOK_URL is not set"):
        proj.http("webhook")


def test_httpx_status_error_request_keeps_no_key_in_logs(deps: SimAdmin) -> None:
    with proj.http("userapi") as client:
        r = client.get("k1")
    assert "sk-user" not in repr(r.request.url)
    assert isinstance(r, httpx.Response)
