"""One dependency's protections in one process (:class:`Guard`: breaker, limiter, in-flight
cap, the key), and one request that went out under them (:class:`GuardedCall`), settled once
with its outcome. The transports of :mod:`proj.guard.http` use them, and so can any client."""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from typing import Any

import httpx
from httpx import _models as httpx_models

from proj.dependencies import Dependency
from proj.guard import callstats, outcomes, registry
from proj.guard.breaker import Breaker, Permit
from proj.guard.limiter import Limiter
from proj.guard.request_rules import RequestRefused, classify_status, refusal
from proj.resilience.breaker import Outcome
from proj.settings import get_settings


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
        self.started = time.monotonic()

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
        callstats.stats().call(
            self.guard.dep.name, breaker_outcome, time.monotonic() - self.started
        )
        breaker = self.guard.breaker
        if self.permit is None or breaker is None:
            return None
        return breaker, self.permit, breaker_outcome
