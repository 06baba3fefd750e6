"""``proj.http(name)`` and ``proj.ahttp(name)``: httpx clients for a declared dependency
whose transport guards every request.

For each request, in order:

1. **stay on the dependency**: an absolute URL to another host, or a path that leaves the
   base URL (``..`` segments, also percent-encoded), is refused with :class:`RequestRefused`
   before anything is sent or any key attached;
2. **the breaker** (:func:`proj.breaker` of the dependency's name): while it is open the
   request is refused with :class:`~proj.BreakerOpen` (a ``pybreaker.CircuitBreakerError``
   carrying ``wait_s``);
3. **the global rate limit**: waits for its slot, or :class:`~proj.RateLimitWait` when the
   slot is further off than ``PROJ_RATE_LIMIT_MAX_WAIT_S``;
4. **the in-flight cap** (``max_in_flight``, per process);
5. **the key**, from the variable the declaration names, in ``key_header``;
6. the request; then its outcome: 5xx, 408, timeouts and connection errors are failures of
   the breaker; a 429 pushes the shared limit forward by its ``Retry-After`` (every worker
   waits), counts for the adaptive controller as overload and neither way for the breaker;
   other 4xx count neither way. The outcome is recorded when the response is closed, so a
   body that breaks off counts as a failure.

The clients work as the ``http_client=`` of SDKs built on httpx, e.g.
``openai.OpenAI(base_url=..., api_key=..., http_client=proj.http("ai"))``.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from proj.errors import ConfigError
from proj.guard.guarded_call import Guard, GuardedCall
from proj.guard.request_rules import RequestRefused
from proj.resilience.ratelimit import parse_retry_after
from proj.settings import get_settings

#: Request extension: the caller settles the outcome itself (``call.settle(outcome)``), e.g.
#: after checking that a 2xx body is usable.
DEFER_OUTCOME = "proj.defer_outcome"
#: Request extension: whole-call limit in seconds, instead of the dependency's timeout_s.
TIMEOUT = "proj.timeout_s"
#: Response extension: the :class:`GuardedCall`.
CALL = "proj.call"


def _retry_after(response: httpx.Response) -> float | None:
    return parse_retry_after(response.headers.get("Retry-After"))


class _SyncStream(httpx.SyncByteStream):
    def __init__(self, inner: Any, call: GuardedCall, defer: bool) -> None:
        self.inner, self.call, self.defer = inner, call, defer

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self.inner
        except Exception:
            self.call.broken = True
            raise

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            if not self.defer:
                self.call.settle()


class _AsyncStream(httpx.AsyncByteStream):
    def __init__(self, inner: Any, call: GuardedCall, defer: bool) -> None:
        self.inner, self.call, self.defer = inner, call, defer

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.inner:
                yield chunk
        except Exception:
            self.call.broken = True
            raise

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            if not self.defer:
                await self.call.asettle()


def _watch(
    response: httpx.Response, call: GuardedCall, request: httpx.Request, *, sync: bool
) -> httpx.Response:
    """Settle ``call`` when ``response`` is closed (a body that breaks off is a failure), at
    once if its body was read already, and free its in-flight slot if it is dropped unclosed.
    """
    response.extensions = {**response.extensions, CALL: call}
    if response.is_stream_consumed or response.is_closed:
        call.settle_now()
        return response
    defer = bool(request.extensions.get(DEFER_OUTCOME))
    if sync:
        response.stream = _SyncStream(response.stream, call, defer)
    else:
        response.stream = _AsyncStream(response.stream, call, defer)
    weakref.finalize(response, call.abandon)
    return response


class GuardedTransport(httpx.BaseTransport):
    """A synchronous httpx transport that guards every request for one dependency."""

    def __init__(self, guard: Guard, inner: httpx.BaseTransport | None = None) -> None:
        self.guard = guard
        self.inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        g = self.guard
        g.prepare(request)
        permit = g.breaker.admit() if g.breaker is not None else None
        try:
            g.limiter.acquire()
            if g._slots is not None:
                g._slots.acquire()
        except BaseException:
            if permit is not None and g.breaker is not None:
                g.breaker.record(permit, "ignored")  # frees a probe's slot
            raise
        call = GuardedCall(g, permit, g._slots)
        try:
            response = self.inner.handle_request(request)
        except httpx.TransportError:
            call.settle("failure")
            raise
        except BaseException:
            call.settle("ignored")
            raise
        call.status = response.status_code
        if response.status_code == 429:
            # Settled now: the overload signal must not wait for the pause, and a 429 counts
            # the same whatever its body says.
            call.settle()
            wait = _retry_after(response)
            if wait:
                g.limiter.push(wait)
            elif g.pause_s:
                time.sleep(g.pause_s)  # hold this caller a moment, or it meets another 429
        return _watch(response, call, request, sync=True)

    def close(self) -> None:
        self.inner.close()


class AsyncGuardedTransport(httpx.AsyncBaseTransport):
    """An asyncio httpx transport that guards every request for one dependency. The
    request's wait for its answer is limited to the dependency's ``timeout_s`` (or the
    request's :data:`TIMEOUT` extension): a provider that never answers is a timeout, and
    a failure of its breaker."""

    def __init__(
        self,
        guard: Guard,
        inner: httpx.AsyncBaseTransport | None = None,
        *,
        owns_inner: bool = True,
    ) -> None:
        self.guard = guard
        self.inner = inner or httpx.AsyncHTTPTransport()
        self.owns_inner = owns_inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        g = self.guard
        g.prepare(request)
        permit = await g.breaker.aadmit() if g.breaker is not None else None
        sem = g.aslots()
        try:
            await g.limiter.aacquire()
            if sem is not None:
                await sem.acquire()
        except BaseException:
            if permit is not None and g.breaker is not None:
                await g.breaker.arecord(permit, "ignored")  # frees a probe's slot
            raise
        call = GuardedCall(g, permit, sem)
        limit = float(request.extensions.get(TIMEOUT) or g.dep.timeout_s)
        try:
            async with asyncio.timeout(limit):
                response = await self.inner.handle_async_request(request)
        except TimeoutError:
            await call.asettle("failure")
            raise httpx.ReadTimeout(f"no answer within {limit}s", request=request) from None
        except httpx.TransportError:
            await call.asettle("failure")
            raise
        except BaseException:
            await call.asettle("ignored")
            raise
        call.status = response.status_code
        if response.status_code == 429:
            await call.asettle()  # as in GuardedTransport
            wait = _retry_after(response)
            if wait:
                await g.limiter.apush(wait)
            elif g.pause_s:
                await asyncio.sleep(g.pause_s)
        return _watch(response, call, request, sync=False)

    async def aclose(self) -> None:
        if self.owns_inner:
            await self.inner.aclose()


_lock = threading.Lock()
_guards: dict[str, Guard] = {}


def guard(name: str) -> Guard:
    """The process's guard of dependency ``name`` (:class:`ConfigError` if not declared)."""
    with _lock:
        g = _guards.get(name)
        if g is None:
            dep = get_settings().dependency(name)
            if dep.base_url is None and not dep.any_host:
                raise ConfigError(f"dependency {name!r}: {', '.join(dep.missing)}")
            g = _guards[name] = Guard(dep)
        return g


def reset() -> None:
    """Forget every guard (tests, and after the settings change)."""
    with _lock:
        _guards.clear()


def http(name: str, **kwargs: Any) -> httpx.Client:
    """An ``httpx.Client`` for the declared dependency ``name``: its base URL, its timeout,
    and a transport that guards every request (see the module's docstring). ``kwargs`` go to
    ``httpx.Client``; ``transport=`` is the transport underneath the guard."""
    g = guard(name)
    inner = kwargs.pop("transport", None)
    kwargs.setdefault("timeout", g.dep.timeout_s)
    return httpx.Client(
        base_url=g.dep.base_url or "", transport=GuardedTransport(g, inner), **kwargs
    )


def ahttp(name: str, **kwargs: Any) -> httpx.AsyncClient:
    """:func:`http` for asyncio: an ``httpx.AsyncClient``."""
    g = guard(name)
    inner = kwargs.pop("transport", None)
    kwargs.setdefault("timeout", g.dep.timeout_s)
    return httpx.AsyncClient(
        base_url=g.dep.base_url or "", transport=AsyncGuardedTransport(g, inner), **kwargs
    )


__all__ = [
    "AsyncGuardedTransport",
    "GuardedCall",
    "GuardedTransport",
    "RequestRefused",
    "ahttp",
    "http",
]
