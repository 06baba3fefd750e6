"""The simulator speaks the protocol of the official ``openai`` SDK, over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from proj.sim.admin import SimAdmin
from tests.integration.conftest import API_KEY

MESSAGES: list[Any] = [
    {"role": "system", "content": "Answer in JSON."},
    {"role": "user", "content": "Acme Corp needs the Widget upgrade urgently, budget is fine."},
]


@pytest.fixture
def client(sim: SimAdmin) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=f"{sim.base_url}/v1", api_key=API_KEY, max_retries=0)
    yield c
    c.close()


@pytest.fixture
def http(sim: SimAdmin) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=sim.base_url, headers=headers, timeout=10) as c:
        yield c


def _plain(client: openai.OpenAI) -> Any:
    return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


def test_chat_completion_answers_through_the_sdk(client: openai.OpenAI) -> None:
    answer = _plain(client)
    assert answer.object == "chat.completion"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.role == "assistant"
    content = answer.choices[0].message.content
    assert content is not None and "Acme" in json.loads(content)["entities"]
    assert answer.usage is not None and answer.usage.total_tokens > 0


def test_chat_stream_joins_to_the_plain_answer(client: openai.OpenAI) -> None:
    plain = _plain(client)
    with client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    ) as stream:
        chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    *content_chunks, usage_chunk = chunks
    assert len(content_chunks) > 2
    assert "".join(c.choices[0].delta.content or "" for c in content_chunks) == (
        plain.choices[0].message.content
    )
    assert content_chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in content_chunks[:-1])
    assert all(c.usage is None for c in content_chunks)
    assert usage_chunk.choices == []
    assert usage_chunk.usage == plain.usage


def test_chat_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    with client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    ) as stream:
        chunks = list(stream)
    assert len(chunks) > 1
    assert all(len(c.choices) == 1 and c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_chat_stream_is_server_sent_events(http: httpx.Client) -> None:
    body = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = r.text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(e.startswith("data: {") for e in events[:-2])


def test_async_client_streams_the_answer(sim: SimAdmin, client: openai.OpenAI) -> None:
    plain = _plain(client).choices[0].message.content

    async def main() -> list[Any]:
        async with openai.AsyncOpenAI(
            base_url=f"{sim.base_url}/v1", api_key=API_KEY, max_retries=0
        ) as aclient:
            stream = await aclient.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, stream=True
            )
            async with stream:
                return [chunk async for chunk in stream]

    chunks = asyncio.run(main())
    assert len(chunks) > 1
    assert chunks[0].model == "gpt-4o"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == plain
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_models_list_includes_the_simulated_models(client: openai.OpenAI) -> None:
    models = list(client.models.list())
    ids = {m.id for m in models}
    assert {"gpt-4o-mini", "gpt-4o"} <= ids
    assert all(m.object == "model" and m.owned_by and m.created > 0 for m in models)
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("gpt-nope")
    assert err.value.code == "model_not_found"


def test_chat_empty_messages_is_a_bad_request(sim: SimAdmin, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=[])
    assert err.value.param == "messages"
    assert "messages" in err.value.message
    assert err.value.type == "invalid_request_error"
    stats = sim.stats()
    assert stats["bad_request"]["chat"] == 1
    assert stats["totals"]["chat"] == 0  # not an outcome of the simulated route
    assert sim.arrivals("chat") == []


def test_chat_non_json_body_is_a_bad_request(sim: SimAdmin, http: httpx.Client) -> None:
    r = http.post(
        "/v1/chat/completions",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "body" and "JSON" in error["message"]
    assert error["code"] is None
    r = http.post("/v1/chat/completions", json=["a", "list"])
    assert r.status_code == 400 and r.json()["error"]["param"] == "body"
    assert sim.stats()["bad_request"]["chat"] == 2
    assert sim.count("chat") == 0


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": MESSAGES}, "model"),
        ({"model": "gpt-4o-mini"}, "messages"),
        ({"model": "gpt-4o-mini", "messages": "hello"}, "messages"),
        ({"model": "gpt-4o-mini", "messages": ["hello"]}, "messages.[0]"),
        ({"model": "gpt-4o-mini", "messages": [{"content": "hi"}]}, "messages.[0].role"),
        ({"model": "gpt-4o-mini", "messages": [{"role": "user"}]}, "messages.[0].content"),
    ],
)
def test_chat_invalid_field_is_a_bad_request_naming_it(
    http: httpx.Client, body: dict[str, Any], param: str
) -> None:
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert param in error["message"]


def test_chat_rate_limit_surfaces_as_rate_limit_error(sim: SimAdmin, client: openai.OpenAI) -> None:
    sim.configure({"routes": {"chat": {"rate_limit_next": 2, "retry_after_s": 3}}})
    with pytest.raises(openai.RateLimitError) as err:
        _plain(client)
    assert err.value.response.headers["retry-after"] == "3"
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    assert sim.count("chat", "rate_limited") == 2
    assert _plain(client).choices[0].finish_reason == "stop"  # the next one goes through


def test_chat_stream_simulated_error_is_a_json_error_before_the_stream(
    sim: SimAdmin, client: openai.OpenAI
) -> None:
    sim.configure({"routes": {"chat": {"error_rate": 1.0, "error_status": 503}}})
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    assert err.value.status_code == 503
    assert err.value.response.headers["content-type"].startswith("application/json")
    assert sim.count("chat", "error") == 1
    assert sim.stats()["in_flight"]["chat"] == 0


def test_sdk_without_the_key_is_unauthorized(sim: SimAdmin) -> None:
    with openai.OpenAI(base_url=f"{sim.base_url}/v1", api_key="sk-wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            _plain(bad)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    stats = sim.stats()
    assert stats["unauthorized"] == 2
    assert stats["totals"]["chat"] == 0


def test_chat_stream_counts_in_admin_stats_like_a_plain_one(
    sim: SimAdmin, client: openai.OpenAI
) -> None:
    _plain(client)
    with client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    ) as stream:
        assert len(list(stream)) > 1
    stats = sim.stats()
    assert stats["counts"]["chat"]["ok"] == 2
    assert stats["totals"]["chat"] == 2
    assert stats["in_flight"]["chat"] == 0
    assert stats["max_in_flight"]["chat"] == 1
    assert stats["bad_request"]["chat"] == 0
    assert len(sim.arrivals("chat")) == 2


def test_chat_stream_caller_that_hangs_up_is_no_longer_in_flight(
    sim: SimAdmin, http: httpx.Client
) -> None:
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    with contextlib.suppress(httpx.TimeoutException):
        http.post("/v1/chat/completions", json=body, params={"delay_ms": 30000}, timeout=0.5)
    deadline = time.monotonic() + 5
    while sim.stats()["in_flight"]["chat"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sim.stats()["in_flight"]["chat"] == 0
    assert sim.count("chat", "ok") == 1
