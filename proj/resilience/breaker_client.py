"""The breaker as a worker process uses it: ``allow()`` before a call, ``record()`` after.

No lock is held while a guarded call runs. To keep Redis off the hot path, a process trusts
a ``closed`` answer for ``cache_s`` (0.1 s by default), remembers an ``open`` answer until the
breaker may half-open, and sends ordinary outcomes to Redis in batches every ``flush_s``;
probe outcomes go at once. A process therefore learns that a breaker opened elsewhere within
``cache_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from proj.resilience import breaker as rules
from proj.resilience.breaker import Admission, BreakerOpen, BreakerPolicy, Outcome
from proj.resilience.breaker_store import BreakerStore

logger = logging.getLogger("proj.breaker")


class BreakerListener:
    """Hook for state changes, shaped like pybreaker's ``CircuitBreakerListener.state_change``
    (``cb`` is a :class:`Breaker`; states are pybreaker's state names)."""

    def state_change(self, cb: Breaker, old_state: str, new_state: str) -> None:
        """Called once per change, in the process that caused it."""


@dataclass(frozen=True)
class Permit:
    """Leave to make one call; ``probe_id`` is set when the call is a half-open probe."""

    probe_id: str | None = None


class Breaker:
    """One named breaker in one process, backed by a shared store."""

    def __init__(
        self,
        name: str,
        policy: BreakerPolicy,
        store: BreakerStore,
        *,
        cache_s: float = 0.1,
        flush_s: float = 0.05,
        listeners: Sequence[BreakerListener] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.policy = policy
        self.store = store
        self.cache_s = cache_s
        self.flush_s = flush_s
        self.listeners = list(listeners)
        self.clock = clock
        self.state = rules.CLOSED
        self._trust_until = 0.0
        self._deny_until = 0.0
        self._ok = 0
        self._failed = 0
        self._flusher: asyncio.Task[None] | None = None

    async def allow(self) -> Permit:
        """A permit, or :class:`BreakerOpen` with how long to wait."""
        now = self.clock()
        if self.state == rules.CLOSED and now < self._trust_until:
            return Permit()
        if self.state != rules.CLOSED and now < self._deny_until:
            raise BreakerOpen(self.name, self._deny_until - now, self.state)
        try:
            adm = await self.store.admit(self.name, self.policy, uuid.uuid4().hex)
        except Exception as exc:  # shared state unreachable: let calls through, say so
            logger.warning(
                "breaker %s: state store unreachable (%s); allowing the call", self.name, exc
            )
            return Permit()
        self._learn(adm.state, adm.wait_s, now)
        self._announce(adm.transition)
        if adm.verdict == "deny":
            raise BreakerOpen(self.name, adm.wait_s, adm.state)
        return Permit(adm.probe_id)

    async def record(self, permit: Permit, outcome: Outcome) -> None:
        """Report how a permitted call went. Ignored outcomes count neither way."""
        if permit.probe_id is not None:
            ok, failed = int(outcome == "success"), int(outcome == "failure")
            await self._send(ok, failed, permit.probe_id)
            return
        if outcome == "ignored":
            return
        if outcome == "success":
            self._ok += 1
        else:
            self._failed += 1
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def flush(self) -> None:
        """Send buffered outcomes now."""
        ok, failed, self._ok, self._failed = self._ok, self._failed, 0, 0
        if ok or failed:
            await self._send(ok, failed, None)

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.flush_s)
        await self.flush()

    async def _send(self, ok: int, failed: int, probe_id: str | None) -> None:
        try:
            state, moved = await self.store.record(
                self.name, self.policy, ok=ok, failed=failed, probe_id=probe_id
            )
        except Exception as exc:
            logger.warning("breaker %s: could not record outcomes (%s)", self.name, exc)
            return
        self._learn(state, self.policy.open_s if state != rules.CLOSED else 0.0, self.clock())
        self._announce(moved)

    def _learn(self, state: str, wait_s: float, now: float) -> None:
        self.state = state
        if state == rules.CLOSED:
            self._trust_until = now + self.cache_s
        else:
            self._deny_until = now + wait_s

    def _announce(self, moved: tuple[str, str] | None) -> None:
        if moved is None:
            return
        old, new = moved
        for listener in self.listeners:
            try:
                listener.state_change(self, old, new)
            except Exception:
                logger.exception("breaker listener %r failed", listener)

    async def aclose(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(BaseException):
                await self._flusher
        await self.flush()


class LogListener(BreakerListener):
    """Logs every state change this process caused (each change is caused exactly once)."""

    def state_change(self, cb: Breaker, old_state: str, new_state: str) -> None:
        level = logging.WARNING if new_state != rules.CLOSED else logging.INFO
        logger.log(level, "breaker %s: %s -> %s", cb.name, old_state, new_state)


class CeleryEventListener(BreakerListener):
    """Sends a ``proj-breaker-state`` Celery event, so Flower's event stream shows it."""

    def __init__(self, send: Callable[[dict[str, object]], None]) -> None:
        self._send = send

    def state_change(self, cb: Breaker, old_state: str, new_state: str) -> None:
        fields: dict[str, object] = {
            "breaker": cb.name,
            "old_state": old_state,
            "new_state": new_state,
            "open_s": cb.policy.open_s,
        }
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._send(fields)
            return
        loop.run_in_executor(None, self._send, fields)


def classify(exc: BaseException | None) -> Outcome:
    """Outcome of a call for the breaker: timeouts, connection errors, 5xx and malformed
    answers are failures; 429 and our own 4xx are ignored."""
    from proj.provider.errors import PermanentError, ProviderError, RateLimited

    if exc is None:
        return "success"
    if isinstance(exc, (RateLimited, PermanentError)):
        return "ignored"
    if isinstance(exc, ProviderError):
        return "failure"
    return "ignored"


__all__ = ["Admission", "Breaker", "BreakerListener", "BreakerOpen", "Permit", "classify"]
