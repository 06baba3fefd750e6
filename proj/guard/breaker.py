"""``proj.Breaker``: a ``pybreaker.CircuitBreaker`` whose state is shared by every process on
every host, that opens on a failure rate, lets exactly one probe through per open period
cluster-wide, guards ``async def`` functions, and holds no lock while the guarded call runs.

The rules are :mod:`proj.resilience.breaker` (pure); the state is a
:mod:`proj.resilience.breaker_store` (Redis, or the in-memory twin). To keep Redis off the
hot path a process trusts a ``closed`` answer for ``cache_s`` (0.1 s), remembers an ``open``
answer until the breaker may half-open, and sends ordinary outcomes in batches from a
background thread (:mod:`proj.guard.flusher`); probe outcomes, and every outcome under
pybreaker's ``fail_max`` rule (where order matters), go at once. A process therefore learns
that a breaker opened elsewhere within ``cache_s``.

Low-level use (the guarded HTTP transports, the task base class)::

    permit = cb.admit()                  # or: await cb.aadmit(); BreakerOpen when open
    ...the call...
    cb.record(permit, "success")         # "failure", "ignored"; or: await cb.arecord(...)
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pybreaker

from proj.guard import callstats, flusher
from proj.guard.breaker_calls import GuardedCalls
from proj.guard.breaker_listeners import (
    LogListener,
    add_global_listener,
    global_listeners,
    ignore_exceptions,
)
from proj.guard.breaker_view import STORE_ERRORS, PybreakerView
from proj.resilience import breaker as rules
from proj.resilience.breaker import Admission, BreakerOpen, BreakerPolicy, Outcome
from proj.resilience.breaker_store import AsyncBreakerStore, BreakerStore

T = TypeVar("T")
logger = logging.getLogger("proj.breaker")

#: How long a process remembers an operator's hold before asking again.
FORCED_OPEN_CACHE_S = 1.0


@dataclass(frozen=True)
class Permit:
    """Leave to make one call; ``probe_id`` is set when the call is a half-open probe."""

    probe_id: str | None = None


class Breaker(GuardedCalls, PybreakerView, pybreaker.CircuitBreaker):  # type: ignore[misc,override]
    """A named circuit breaker on shared state. Make one with :func:`proj.breaker`.

    pybreaker's API works as pybreaker users expect: ``call``, the decorator, ``calling()``,
    listeners, ``exclude`` types and predicates, ``fail_max``, ``reset_timeout``,
    ``success_threshold``, ``open()/half_open()/close()``, ``current_state``,
    ``fail_counter`` and ``CircuitBreakerError`` (:class:`BreakerOpen` is one, and carries
    ``wait_s``). ``call``, ``acall`` and the decorator take ``async def`` functions too.
    """

    def __init__(
        self,
        name: str,
        policy: BreakerPolicy,
        store: BreakerStore,
        astore: Callable[[], AsyncBreakerStore],
        *,
        exclude: Iterable[type[BaseException] | Callable[[BaseException], bool]] | None = None,
        listeners: Sequence[pybreaker.CircuitBreakerListener] | None = None,
        throw_new_error_on_trip: bool = True,
        cache_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        register: Callable[[str, BreakerPolicy], None] | None = None,
    ) -> None:
        # pybreaker's own attributes, which its inherited methods use.
        self._lock = threading.RLock()
        self._excluded_exceptions: list[Any] = list(exclude or [])
        self._listeners: list[Any] = list(listeners or [])
        self._name = name
        self._throw_new_error_on_trip = throw_new_error_on_trip
        self.policy = policy
        #: False: every call goes through and nothing is counted (PROJ_BREAKER_ENABLED).
        self.enabled = True
        self.store = store
        self._astore = astore
        self.cache_s = cache_s
        self.clock = clock
        self._register = register
        self._reset_process_state()

    def _reset_process_state(self) -> None:
        self._pid = os.getpid()
        self._buffer_lock = threading.Lock()
        self._ok = 0
        self._failed = 0
        self._orphans: list[str] = []  # probe ids possibly granted to cancelled callers
        self._known = rules.CLOSED  # the last state this process learned
        self._trust_until = 0.0
        self._deny_until = 0.0
        self._registered = False
        self._warned_at = -1e9
        flusher.register(self)

    def _check_fork(self) -> None:
        if self._pid != os.getpid():  # a forked child: the parent's buffer is not ours
            self._reset_process_state()

    def __repr__(self) -> str:
        return f"<proj.Breaker {self.name!r} {self._known}>"

    # --- admission and outcomes (the low-level API) ----------------------------------------
    def _cached(self) -> Permit | None:
        """Decide from what this process knows, or None to ask the store."""
        self._check_fork()
        if not self.enabled:
            return Permit()
        now = self.clock()
        if self._known == rules.CLOSED and now < self._trust_until:
            return Permit()
        if self._known != rules.CLOSED and now < self._deny_until:
            callstats.stats().refused(self.name)
            raise BreakerOpen(self.name, self._deny_until - now, self._known)
        return None

    def _admitted(self, adm: Admission) -> Permit:
        self._learn(adm.state, adm.wait_s, self.clock())
        self._announce(adm.transition)
        if adm.verdict == "deny":
            callstats.stats().refused(self.name)
            raise BreakerOpen(self.name, adm.wait_s, adm.state)
        return Permit(adm.probe_id)

    def admit(self) -> Permit:
        """A permit to call now, or :class:`BreakerOpen` with how long to wait."""
        permit = self._cached()
        if permit is not None:
            return permit
        self._ensure_registered()
        try:
            adm = self.store.admit(self.name, self.policy, uuid.uuid4().hex)
        except STORE_ERRORS as exc:
            self._warn("state store unreachable; allowing the call", exc)
            return Permit()
        return self._admitted(adm)

    async def aadmit(self) -> Permit:
        """:meth:`admit` for asyncio callers."""
        permit = self._cached()
        if permit is not None:
            return permit
        self._ensure_registered()
        probe_id = uuid.uuid4().hex
        try:
            adm = await self._astore().admit(self.name, self.policy, probe_id)
        except STORE_ERRORS as exc:
            self._warn("state store unreachable; allowing the call", exc)
            return Permit()
        except BaseException:
            # Cancelled while the store may have granted a probe nobody will make: free it
            # (from the flusher thread; this loop may be going away).
            with self._buffer_lock:
                self._orphans.append(probe_id)
            flusher.poke()
            raise
        return self._admitted(adm)

    def record(self, permit: Permit, outcome: Outcome) -> tuple[str, str] | None:
        """Report how a permitted call went. Returns the transition it caused when known
        now (a probe, or under ``fail_max``); ordinary outcomes are sent in batches."""
        if permit.probe_id is None and not self._buffer(outcome):
            return None
        ok, failed = int(outcome == "success"), int(outcome == "failure")
        try:
            state, moved, wait = self.store.record(
                self.name, self.policy, ok=ok, failed=failed, probe_id=permit.probe_id
            )
        except STORE_ERRORS as exc:
            self._warn("could not record an outcome", exc)
            return None
        return self._recorded(state, moved, wait)

    async def arecord(self, permit: Permit, outcome: Outcome) -> tuple[str, str] | None:
        """:meth:`record` for asyncio callers."""
        if permit.probe_id is None and not self._buffer(outcome):
            return None
        ok, failed = int(outcome == "success"), int(outcome == "failure")
        try:
            state, moved, wait = await self._astore().record(
                self.name, self.policy, ok=ok, failed=failed, probe_id=permit.probe_id
            )
        except STORE_ERRORS as exc:
            self._warn("could not record an outcome", exc)
            return None
        return self._recorded(state, moved, wait)

    def _buffer(self, outcome: Outcome) -> bool:
        """Buffer an ordinary outcome; True when it must be sent now instead."""
        if outcome == "ignored" or not self.enabled:
            return False
        if self.policy.fail_max is not None:
            return True  # consecutive counts need every outcome in order
        self._check_fork()
        with self._buffer_lock:
            if outcome == "success":
                self._ok += 1
            else:
                self._failed += 1
        flusher.poke()
        return False

    def flush(self) -> None:
        """Send buffered outcomes now (the flusher thread calls this)."""
        self._check_fork()
        if not self._registered and self._register is not None:
            try:
                self._register(self.name, self.policy)
                self._registered = True
            except STORE_ERRORS as exc:
                self._warn("could not register", exc)
        with self._buffer_lock:
            ok, failed, self._ok, self._failed = self._ok, self._failed, 0, 0
            orphans, self._orphans = self._orphans, []
        try:
            for probe_id in orphans:
                self.store.record(self.name, self.policy, probe_id=probe_id)  # frees its slot
            if not (ok or failed):
                return
            state, moved, wait = self.store.record(self.name, self.policy, ok=ok, failed=failed)
        except STORE_ERRORS as exc:
            self._warn("could not record outcomes", exc)
            return
        self._recorded(state, moved, wait)

    def _recorded(
        self, state: str, moved: tuple[str, str] | None, wait_s: float
    ) -> tuple[str, str] | None:
        self._learn(state, wait_s, self.clock())
        self._announce(moved)
        return moved

    def _learn(self, state: str, wait_s: float, now: float) -> None:
        """Remember the shared state: ``closed`` for ``cache_s``, ``open`` until it may
        half-open; an operator's hold only briefly, so ``proj breakers close`` takes effect."""
        self._known = state
        if state == rules.CLOSED:
            self._trust_until = now + self.cache_s
        elif state == rules.FORCED_OPEN:
            self._deny_until = now + min(wait_s, FORCED_OPEN_CACHE_S)
        else:
            self._deny_until = now + wait_s

    def _announce(self, moved: tuple[str, str] | None) -> None:
        if moved is None:
            return
        old, new = (self._state_object(s) for s in moved)
        listeners: list[pybreaker.CircuitBreakerListener] = [*self._listeners, *global_listeners]
        for listener in listeners:
            try:
                listener.state_change(self, old, new)
            except Exception:
                logger.exception("breaker %s: listener %r failed", self.name, listener)

    def _ensure_registered(self) -> None:
        """Have the flusher thread list this breaker in Redis (for ``proj breakers``)."""
        if not self._registered and self._register is not None:
            flusher.poke()

    def _warn(self, what: str, exc: BaseException) -> None:
        now = self.clock()
        if now - self._warned_at >= 10.0:  # once per 10 s, not once per call
            self._warned_at = now
            logger.warning("breaker %s: %s (%s)", self.name, what, exc)


__all__ = [
    "STORE_ERRORS",
    "Breaker",
    "BreakerOpen",
    "LogListener",
    "Permit",
    "add_global_listener",
    "ignore_exceptions",
]
