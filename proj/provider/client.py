"""The provider client: one dependency (name, base URL, key) on a shared httpx client.

Calls go through the httpx API on the ``httpx-aiohttp`` transport: httpx's own pool slows
down badly with hundreds of requests in flight (encode/httpx#3215), aiohttp's does not.
The API key lives only in the client's headers: never in task arguments, results or logs.
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from pydantic import SecretStr

from proj.provider.errors import (
    MalformedResponse,
    PermanentError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    error_for_status,
)
from proj.resilience.breaker import Outcome
from proj.resilience.breaker_client import Breaker, classify
from proj.resilience.limiter import Limiter
from proj.resilience.outcomes import OutcomeRecorder
from proj.settings import ModelPrice


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """httpx's default TLS context (certifi's CAs, or SSL_CERT_FILE / SSL_CERT_DIR), made once
    per process. Loading the CA bundle costs ~25 ms of CPU: made in a worker's main process
    before it forks (:func:`proj.signals.prepare_for_fork`), every pool process inherits it
    instead of paying that at start-up, all at once when the pool grows."""
    return httpx.create_ssl_context()


def make_http_client(*, max_connections: int, connect_timeout_s: float) -> httpx.AsyncClient:
    """The per-process HTTP client every dependency shares (one aiohttp connection pool)."""
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    return httpx.AsyncClient(
        transport=AiohttpTransport(verify=shared_ssl_context(), limits=limits),
        timeout=httpx.Timeout(None, connect=connect_timeout_s),
        follow_redirects=False,
    )


def _is_timeout(exc: httpx.TransportError) -> bool:
    """True for a real timeout. httpx-aiohttp reports every aiohttp connection error as
    ``ConnectTimeout``, so look at the aiohttp exception underneath."""
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
    """Calls to one named dependency. All methods raise :class:`ProviderError` subclasses."""

    def __init__(
        self,
        name: str,
        base_url: str,
        http: httpx.AsyncClient,
        *,
        api_key: SecretStr | None = None,
        timeout_s: float = 30.0,
        prices: dict[str, ModelPrice] | None = None,
        breaker: Breaker | None = None,
        limiter: Limiter | None = None,
        outcomes: OutcomeRecorder | None = None,
        rate_limited_pause_s: float = 0.0,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._http = http
        self._headers = {"Accept": "application/json"}
        if api_key is not None:
            self._headers["Authorization"] = f"Bearer {api_key.get_secret_value()}"
        self.timeout_s = timeout_s
        self.prices = prices or {}
        self.breaker = breaker
        self.limiter = limiter
        self.outcomes = outcomes
        self.rate_limited_pause_s = rate_limited_pause_s

    def __repr__(self) -> str:  # never show the key
        return f"ProviderClient({self.name!r}, {self.base_url!r})"

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        timeout_s: float | None = None,
    ) -> Any:
        """One call through the dependency's breaker and rate limit; the parsed JSON body of a
        2xx answer.

        Raises a :class:`~proj.resilience.deferral.Deferral` without calling when the breaker
        is open or no rate-limit slot is free soon enough. A 429 pushes the shared limit
        forward. Every outcome but our own 4xx is reported to the adaptive controller.
        """
        permit = await self.breaker.allow() if self.breaker is not None else None
        outcome: Outcome = "ignored"
        try:
            if self.limiter is not None:
                await self.limiter.acquire()
            value = await self._request(method, path, params, json_body, timeout_s)
            outcome = "success"
            return value
        except RateLimited as exc:
            self._report(False)
            if self.limiter is not None and exc.retry_after_s:
                await self.limiter.push(exc.retry_after_s)
            elif self.rate_limited_pause_s:
                # Over capacity with no Retry-After: hold this caller's slot a moment, or it
                # turns straight to the next call and meets another 429.
                await asyncio.sleep(self.rate_limited_pause_s)
            raise
        except ProviderError as exc:
            outcome = classify(exc)
            if not isinstance(exc, PermanentError):
                self._report(False)
            raise
        finally:
            if outcome == "success":
                self._report(True)
            if self.breaker is not None and permit is not None:
                await self.breaker.record(permit, outcome)

    def _report(self, ok: bool) -> None:
        if self.outcomes is not None:
            self.outcomes.record(ok)

    async def _request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        json_body: Any,
        timeout_s: float | None,
    ) -> Any:
        url = self.url(path)
        limit = timeout_s or self.timeout_s
        try:
            async with asyncio.timeout(limit):
                response = await self._http.request(
                    method, url, params=params, json=json_body, headers=self._headers
                )
                body = await response.aread()
        except TimeoutError:
            raise ProviderTimeout(
                f"{self.name}: no answer from {url} within {limit}s", dependency=self.name
            ) from None
        except httpx.TransportError as exc:
            if _is_timeout(exc):
                raise ProviderTimeout(
                    f"{self.name}: {type(exc).__name__} on {url}", dependency=self.name
                ) from None
            raise ProviderConnectionError(
                f"{self.name}: {type(exc).__name__} on {url}: {exc}", dependency=self.name
            ) from None
        error = error_for_status(
            response.status_code,
            response.headers,
            dependency=self.name,
            url=url,
            body=body[:300].decode(errors="replace"),
        )
        if error is not None:
            raise error
        try:
            return json.loads(body)
        except ValueError:
            raise MalformedResponse(
                f"{self.name}: body from {url} is not JSON: {body[:80]!r}",
                dependency=self.name,
                status=response.status_code,
            ) from None

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
        data = await self.post_json("/v1/chat/completions", body, timeout_s=timeout_s)
        try:
            content = data["choices"][0]["message"]["content"]
            usage = data.get("usage") or {}
            prompt = int(usage.get("prompt_tokens", 0))
            completion = int(usage.get("completion_tokens", 0))
            answered_model = str(data.get("model") or model)
        except (KeyError, IndexError, TypeError, ValueError):
            raise MalformedResponse(
                f"{self.name}: chat completion without choices[0].message", dependency=self.name
            ) from None
        if not isinstance(content, str):
            raise MalformedResponse(f"{self.name}: chat content is not text", dependency=self.name)
        cost = price(model, prompt, completion, self.prices)
        return ChatResult(
            content, Usage(answered_model, prompt, completion, cost), time.monotonic() - started
        )


__all__ = ["ChatResult", "ProviderClient", "ProviderError", "Usage", "make_http_client", "price"]
