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
from urllib.parse import unquote

import httpx
from httpx import _models as httpx_models

from proj.dependencies import Dependency
from proj.errors import ConfigError, ProjError
from proj.guard import outcomes, registry
from proj.guard.breaker import Breaker, Permit
from proj.guard.limiter import Limiter
from proj.resilience.breaker import Outcome
from proj.resilience.ratelimit import parse_retry_after
from proj.settings import get_settings

#: Request extension: the caller settles the outcome itself (``call.settle(outcome)``), e.g.
#: after checking that a 2xx body is usable.
DEFER_OUTCOME = "proj.defer_outcome"
#: Request extension: whole-call limit in seconds, instead of the dependency's timeout_s.
TIMEOUT = "proj.timeout_s"
#: Response extension: the :class:`GuardedCall`.
CALL = "proj.call"


class RequestRefused(ProjError):
    """A request that would leave its dependency: refused before anything was sent."""


def _dot_segment(raw_segment: str) -> bool:
    r"""A segment some server would read as ``.`` or ``..``: percent-encoded, with a
    ``;param`` (Tomcat), or hiding more segments behind an encoded ``/`` or a ``\`` (IIS)."""
    decoded = unquote(unquote(raw_segment))  # twice: %252e
    parts = decoded.replace("\\", "/").split("/")
    return any(p.split(";", 1)[0] in (".", "..") for p in parts)


def refusal(dep: Dependency, url: httpx.URL) -> str | None:
    """Why a request to ``url`` may not go out through ``dep``, or None. Pure."""
    if url.scheme not in ("http", "https"):
        return f"scheme {url.scheme!r} is not http(s)"
    raw = url.raw_path.decode("ascii", "replace").split("?", 1)[0]
    segments = raw.split("/")
    if any(_dot_segment(seg) for seg in segments[1:]):
        return "the path has dot segments"
    if dep.any_host:
        return None
    if dep.base_url is None:
        return "the dependency has no base URL"
    base = httpx.URL(dep.base_url)
    if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port):
        return "it goes to another host than the dependency's"
    # Compared as sent (raw) and as a server that decodes %2F would route it.
    prefix = base.raw_path.decode("ascii", "replace").split("?", 1)[0].rstrip("/")
    for path in (raw, unquote(raw)):
        if path != prefix and not path.startswith(prefix + "/"):
            return "its path is outside the dependency's base URL"
    return None


def classify_status(status: int) -> tuple[Outcome, bool | None]:
    """(breaker outcome, adaptive signal) of an answer: ``None`` is no signal. Pure."""
    if status == 429:
        return "ignored", False
    if status >= 500 or status == 408:
        return "failure", False
    if status >= 400:
        return "ignored", None
    return "success", True


class Guard:
    """One dependency's protections in one process, shared by all its clients."""

    def __init__(self, dep: Dependency) -> None:
        self.dep = dep
        settings = get_settings()
        self.pause_s = settings.limits.pause_s
        self.breaker: Breaker | None = registry.breaker(dep.name) if dep.enabled else None
        self.limiter: Limiter = registry.limiter(dep.name)
        if dep.api_key is not None:
            # httpx hides Authorization in the repr of headers; hide ours the same way.
            httpx_models.SENSITIVE_HEADERS.add(dep.key_header.lower())
        cap = dep.max_in_flight
        self._slots = threading.BoundedSemaphore(cap) if cap else None
        self._aslots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def prepare(self, request: httpx.Request) -> None:
        """Refuse a request off the dependency; attach the key to one that stays on it."""
        why = refusal(self.dep, request.url)
        if why is not None:
            shown = "<hidden>" if self.dep.secret_url else f"{request.url.host}{request.url.path}"
            raise RequestRefused(
                f"dependency {self.dep.name!r}: request to {shown} refused: {why} "
                f"(base URL {self.dep.shown_url()})"
            )
        if self.dep.api_key is not None:
            key = self.dep.api_key.get_secret_value()
            header = self.dep.key_header
            request.headers[header] = f"Bearer {key}" if header.lower() == "authorization" else key

    def aslots(self) -> asyncio.Semaphore | None:
        if not self.dep.max_in_flight:
            return None
        loop = asyncio.get_running_loop()
        sem = self._aslots.get(loop)
        if sem is None:
            sem = self._aslots[loop] = asyncio.Semaphore(self.dep.max_in_flight)
        return sem


class GuardedCall:
    """One request that went out: its permit, its in-flight slot and, once settled, its
    outcome. Settled once, when the response is closed (or by the caller, see
    :data:`DEFER_OUTCOME`)."""

    def __init__(self, guard: Guard, permit: Permit | None, slot: Any) -> None:
        self.guard = guard
        self.permit = permit
        self._slot = slot
        self.status: int | None = None
        self.broken = False  # the body broke off
        self.settled = False

    def _decide(self, outcome: Outcome | None) -> tuple[Outcome, bool | None]:
        if outcome is not None:
            return outcome, outcome == "success" if outcome != "ignored" else None
        if self.broken:
            return "failure", False
        return classify_status(self.status or 0)

    def _release(self) -> None:
        slot, self._slot = self._slot, None
        if slot is not None:
            slot.release()

    def settle_now(self) -> None:
        """Settle without I/O on an event loop (ordinary outcomes are buffered; a probe's is
        sent from the flusher thread's client)."""
        self.settle()

    def abandon(self) -> None:
        """The response was dropped without being closed: free the slot, count nothing."""
        if not self.settled:
            self.settled = True
            self._release()

    def settle(self, outcome: Outcome | None = None) -> None:
        """Record the outcome (``None``: by status) and free the in-flight slot."""
        record = self._settle(outcome)
        if record is not None:
            record[0].record(record[1], record[2])

    async def asettle(self, outcome: Outcome | None = None) -> None:
        """:meth:`settle` for asyncio callers."""
        record = self._settle(outcome)
        if record is not None:
            await record[0].arecord(record[1], record[2])

    def _settle(self, outcome: Outcome | None) -> tuple[Breaker, Permit, Outcome] | None:
        """Settle once: free the slot, report the signal; what the breaker must record."""
        if self.settled:
            return None
        self.settled = True
        self._release()
        breaker_outcome, signal = self._decide(outcome)
        outcomes.report_call(signal, overload=self.status == 429)
        breaker = self.guard.breaker
        if self.permit is None or breaker is None:
            return None
        return breaker, self.permit, breaker_outcome


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
