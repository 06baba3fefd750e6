"""The provider client: one dependency (name, base URL, key) on a shared httpx client.

Calls go through the httpx API on the ``httpx-aiohttp`` transport
(:mod:`proj.provider.transport`).
The API key lives only in the client's headers: never in task arguments, results or logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx

from proj.dependencies import Dependency
from proj.guard import callstats
from proj.guard.http import (
    CALL,
    DEFER_OUTCOME,
    TIMEOUT,
    AsyncGuardedTransport,
    Guard,
    GuardedCall,
    RequestRefused,
)
from proj.provider.errors import (
    MalformedResponse,
    PermanentError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    error_for_status,
)
from proj.resilience.breaker import Outcome
from proj.settings import ModelPrice


def guarded_client(
    dep: Dependency,
    transport: httpx.AsyncBaseTransport,
    *,
    connect_timeout_s: float = 5.0,
    prices: dict[str, ModelPrice] | None = None,
) -> ProviderClient:
    """A :class:`ProviderClient` for ``dep`` on ``transport`` (which it does not close)."""
    http = httpx.AsyncClient(
        base_url=dep.base_url or "",
        transport=AsyncGuardedTransport(Guard(dep), transport, owns_inner=False),
        timeout=httpx.Timeout(None, connect=connect_timeout_s),
        follow_redirects=False,
    )
    return ProviderClient(dep.name, http, timeout_s=dep.timeout_s, prices=prices)


def _shown(url: httpx.URL) -> str:
    """A URL as errors and logs may show it: no query string (it may carry a token)."""
    return f"{url.scheme}://{url.host}{f':{url.port}' if url.port else ''}{url.path}"


def _is_timeout(exc: httpx.TransportError) -> bool:
    """True for a real timeout. httpx-aiohttp reports every aiohttp connection error as
    ``ConnectTimeout``, so look at the aiohttp exception underneath."""
    if isinstance(exc, httpx.ReadTimeout) and exc.__cause__ is None:
        return True  # the guarded transport's own deadline
    cause = exc.__cause__
    if cause is None:
        return isinstance(exc, httpx.TimeoutException)
    return isinstance(cause, (TimeoutError, aiohttp.ServerTimeoutError))


@dataclass(frozen=True)
class Usage:
    """Tokens and cost of one AI call; ``cost_usd`` is None for a model with no price."""

    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd,
        }


def price(
    model: str, prompt_tokens: int, completion_tokens: int, prices: dict[str, ModelPrice]
) -> float | None:
    """Cost in US dollars from the price table, or None when the model is not in it."""
    p = prices.get(model)
    if p is None:
        return None
    return (prompt_tokens * p.input_per_1m_usd + completion_tokens * p.output_per_1m_usd) / 1e6


@dataclass(frozen=True)
class ChatResult:
    content: str
    usage: Usage
    latency_s: float

    def json(self) -> dict[str, Any]:
        """The content parsed as a JSON object, or :class:`MalformedResponse`."""
        try:
            value = json.loads(self.content)
        except ValueError:
            raise MalformedResponse(f"chat content is not JSON: {self.content[:120]!r}") from None
        if not isinstance(value, dict):
            raise MalformedResponse(f"chat content is not a JSON object: {self.content[:120]!r}")
        return value


class ProviderClient:
    """Typed calls to one declared dependency, through its guarded client
    (:mod:`proj.guard.http`: breaker, global rate limit, 429 pause, outcome reporting, the
    key). All methods raise :class:`ProviderError` subclasses, or a
    :class:`~proj.resilience.deferral.Deferral` (open breaker, rate-limit wait) without
    calling."""

    def __init__(
        self,
        name: str,
        http: httpx.AsyncClient,
        *,
        timeout_s: float = 30.0,
        prices: dict[str, ModelPrice] | None = None,
    ) -> None:
        self.name = name
        self._http = http
        self.timeout_s = timeout_s
        self.prices = prices or {}

    def __repr__(self) -> str:
        return f"ProviderClient({self.name!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        timeout_s: float | None = None,
        parse: Callable[[Any], Any] | None = None,
    ) -> Any:
        """One guarded call; the parsed JSON body of a 2xx answer (passed through ``parse``,
        which raises :class:`MalformedResponse` for an answer it cannot use: that counts as a
        failure of the provider). ``path`` is relative to the dependency's base URL (or
        absolute, for an ``any_host`` dependency)."""
        limit = timeout_s or self.timeout_s
        try:
            request = self._http.build_request(
                method,
                path,
                params=params,
                json=json_body,
                headers={"Accept": "application/json"},
                extensions={DEFER_OUTCOME: True, TIMEOUT: limit},
            )
        except (httpx.InvalidURL, ValueError) as exc:
            raise PermanentError(f"{self.name}: invalid URL: {exc}", dependency=self.name) from None
        where = _shown(request.url)
        try:
            # The transport waits for the breaker, the rate limit and the in-flight cap, then
            # limits the wait for the answer to ``limit`` (a timeout is a provider failure).
            response = await self._http.send(request, stream=True)
        except RequestRefused as exc:
            raise PermanentError(str(exc), dependency=self.name) from None
        except httpx.TransportError as exc:
            raise self._transport_error(exc, where, limit) from None
        call: GuardedCall = response.extensions[CALL]
        try:
            try:
                async with asyncio.timeout(limit):
                    body = await response.aread()
            except BaseException:
                with contextlib.suppress(Exception):  # the connection is not reused
                    await response.aclose()
                raise
        except TimeoutError:
            call.broken = True
            await call.asettle()
            raise ProviderTimeout(
                f"{self.name}: the answer from {where} did not arrive within {limit}s",
                dependency=self.name,
            ) from None
        except httpx.TransportError as exc:
            call.broken = True
            await call.asettle()
            raise self._transport_error(exc, where, limit) from None
        except BaseException:
            await call.asettle("ignored")  # cancelled: says nothing about the provider
            raise
        outcome: Outcome | None = None  # by status
        try:
            error = error_for_status(
                response.status_code,
                response.headers,
                dependency=self.name,
                url=where,
                body=body[:300].decode(errors="replace"),
            )
            if error is not None:
                raise error
            try:
                value = json.loads(body)
            except ValueError:
                outcome = "failure"  # a 2xx we cannot use: the provider is not well
                raise MalformedResponse(
                    f"{self.name}: body from {where} is not JSON: {body[:80]!r}",
                    dependency=self.name,
                    status=response.status_code,
                ) from None
            try:
                return value if parse is None else parse(value)
            except MalformedResponse:
                outcome = "failure"
                raise
        finally:
            await call.asettle(outcome)

    def _transport_error(
        self, exc: httpx.TransportError, where: str, limit: float
    ) -> ProviderError:
        if _is_timeout(exc):
            return ProviderTimeout(
                f"{self.name}: no answer from {where} within {limit}s ({type(exc).__name__})",
                dependency=self.name,
            )
        return ProviderConnectionError(
            f"{self.name}: {type(exc).__name__} on {where}: {exc}", dependency=self.name
        )

    async def get_json(
        self, path: str, *, params: dict[str, Any] | None = None, timeout_s: float | None = None
    ) -> Any:
        return await self.request_json("GET", path, params=params, timeout_s=timeout_s)

    async def post_json(self, path: str, body: Any, *, timeout_s: float | None = None) -> Any:
        return await self.request_json("POST", path, json_body=body, timeout_s=timeout_s)

    async def chat(
        self,
        *,
        model: str,
        messages: list[dict[str, str]],
        json_mode: bool = True,
        max_tokens: int | None = None,
        timeout_s: float | None = None,
    ) -> ChatResult:
        """An OpenAI-compatible chat completion, with tokens and cost from ``usage``."""
        body: dict[str, Any] = {"model": model, "messages": messages, "temperature": 0}
        if json_mode:
            body["response_format"] = {"type": "json_object"}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        started = time.monotonic()

        def parse(data: Any) -> tuple[str, Usage]:
            try:
                content = data["choices"][0]["message"]["content"]
                usage = data.get("usage") or {}
                prompt = int(usage.get("prompt_tokens", 0))
                completion = int(usage.get("completion_tokens", 0))
                answered_model = str(data.get("model") or model)
            except (KeyError, IndexError, TypeError, ValueError, AttributeError):
                raise MalformedResponse(
                    f"{self.name}: chat completion without choices[0].message",
                    dependency=self.name,
                ) from None
            if not isinstance(content, str):
                raise MalformedResponse(
                    f"{self.name}: chat content is not text", dependency=self.name
                )
            cost = price(model, prompt, completion, self.prices)
            # Labelled by the model asked for (configured), not the one answering (traffic).
            callstats.stats().usage(self.name, model, prompt, completion, cost)
            return content, Usage(answered_model, prompt, completion, cost)

        content, usage = await self.request_json(
            "POST", "/v1/chat/completions", json_body=body, timeout_s=timeout_s, parse=parse
        )
        return ChatResult(content, usage, time.monotonic() - started)


__all__ = ["ChatResult", "ProviderClient", "ProviderError", "Usage", "price"]
