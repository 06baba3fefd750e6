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

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import threading
import time
import types
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pybreaker
import redis

from proj.guard import flusher
from proj.resilience import breaker as rules
from proj.resilience.breaker import Admission, BreakerOpen, BreakerPolicy, Outcome, Snapshot
from proj.resilience.breaker_store import AsyncBreakerStore, BreakerStore
from proj.resilience.deferral import Deferral

T = TypeVar("T")
logger = logging.getLogger("proj.breaker")

#: How long a process remembers an operator's hold before asking again.
FORCED_OPEN_CACHE_S = 1.0

#: What the store may raise when Redis is unreachable; the breaker then lets calls through.
STORE_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

#: Exceptions that say nothing about the dependency: they count neither way. The Celery layer
#: adds its control-flow exceptions (``Retry``, ``Reject``, ``Ignore``).
_ignored: list[type[BaseException]] = [
    Deferral,
    asyncio.CancelledError,
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
]

#: Listeners every breaker of this process calls (proj's log line, the Celery event).
_global_listeners: list[pybreaker.CircuitBreakerListener] = []


def ignore_exceptions(*types_: type[BaseException]) -> None:
    """Exceptions that no breaker counts, as success or failure."""
    _ignored.extend(t for t in types_ if t not in _ignored)


def add_global_listener(listener: pybreaker.CircuitBreakerListener) -> None:
    """A listener of every breaker in this process (its ``state_change`` at least)."""
    if listener not in _global_listeners:
        _global_listeners.append(listener)


@dataclass(frozen=True)
class Permit:
    """Leave to make one call; ``probe_id`` is set when the call is a half-open probe."""

    probe_id: str | None = None


class _ForcedOpenState(pybreaker.CircuitOpenState):
    """An operator's hold (``proj breakers open``): open until someone closes it."""

    def __init__(self, cb: pybreaker.CircuitBreaker) -> None:
        super().__init__(cb)
        self._name = rules.FORCED_OPEN


class Breaker(pybreaker.CircuitBreaker):
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

    @property
    def name(self) -> str:
        return self._name or ""

    @name.setter
    def name(self, name: str) -> None:
        self._name = name

    # --- pybreaker's knobs, kept in the policy ---------------------------------------------
    @property  # type: ignore[override]
    def fail_max(self) -> int | None:
        """Failures in a row that open it (pybreaker's rule); None: the failure-rate rule."""
        return self.policy.fail_max

    @fail_max.setter
    def fail_max(self, number: int | None) -> None:
        self.policy = self.policy.model_copy(update={"fail_max": number})

    @property
    def reset_timeout(self) -> float:
        """Seconds open before a probe may run (``open_s``)."""
        return self.policy.open_s

    @reset_timeout.setter
    def reset_timeout(self, timeout: float) -> None:
        self.policy = self.policy.model_copy(update={"open_s": float(timeout)})

    @property
    def success_threshold(self) -> int:
        return self.policy.success_threshold

    @success_threshold.setter
    def success_threshold(self, threshold: int) -> None:
        self.policy = self.policy.model_copy(update={"success_threshold": threshold})

    # --- state, read from the store --------------------------------------------------------
    def metrics(self) -> Snapshot:
        """State, calls and failures in the window, failures in a row, next probe time."""
        return self.store.snapshot(self.name, self.policy)

    def _read(self) -> Snapshot | None:
        self._check_fork()
        try:
            snap = self.metrics()
        except STORE_ERRORS as exc:
            self._warn("state store unreachable", exc)
            return None
        self._known = snap.state
        return snap

    @property
    def current_state(self) -> str:
        """The shared state: ``closed``, ``open``, ``half-open`` or ``forced-open``."""
        snap = self._read()
        return snap.state if snap else self._known

    @property  # type: ignore[override]
    def state(self) -> pybreaker.CircuitBreakerState:
        return self._state_object(self.current_state)

    @state.setter
    def state(self, state_str: str) -> None:
        self._force(state_str)

    @property
    def fail_counter(self) -> int:
        """Failures in a row (each success resets it), as pybreaker counts them."""
        snap = self._read()
        return snap.fail_counter if snap else 0

    @property
    def success_counter(self) -> int:
        """Successful probes in a row while half-open."""
        snap = self._read()
        return snap.success_counter if snap else 0

    def _state_object(self, name: str) -> pybreaker.CircuitBreakerState:
        if name == rules.CLOSED:
            return pybreaker.CircuitClosedState(self)
        if name == rules.HALF_OPEN:
            return pybreaker.CircuitHalfOpenState(self, None)
        if name == rules.FORCED_OPEN:
            return _ForcedOpenState(self)
        return pybreaker.CircuitOpenState(self)

    # --- manual control, as in pybreaker ----------------------------------------------------
    def open(self) -> bool:
        """Open it now, for ``reset_timeout``, in every process. Returns
        ``throw_new_error_on_trip`` as pybreaker does."""
        self._force(rules.OPEN)
        return self._throw_new_error_on_trip

    def half_open(self) -> None:
        """Let the next call through as a probe."""
        self._force(rules.HALF_OPEN)

    def close(self) -> None:
        """Close it and reset its counts, in every process."""
        self._force(rules.CLOSED)

    def _force(self, state: str) -> None:
        self._check_fork()
        moved = self.store.force(self.name, state)
        now = self.clock()
        wait = self.policy.open_s if state in (rules.OPEN, rules.FORCED_OPEN) else 0.0
        self._learn(state, wait, now)
        self._announce(moved)

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
            raise BreakerOpen(self.name, self._deny_until - now, self._known)
        return None

    def _admitted(self, adm: Admission) -> Permit:
        self._learn(adm.state, adm.wait_s, self.clock())
        self._announce(adm.transition)
        if adm.verdict == "deny":
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
        listeners: list[pybreaker.CircuitBreakerListener] = [*self._listeners, *_global_listeners]
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

    # --- what an exception means -------------------------------------------------------------
    def classify(self, exc: BaseException | None) -> Outcome:
        """``success`` for no exception and for excluded ones (as pybreaker counts them),
        ``ignored`` for control flow (deferrals, cancellation, Celery's ``Retry``),
        ``failure`` for the rest."""
        if exc is None:
            return "success"
        if isinstance(exc, tuple(_ignored)):
            return "ignored"
        if isinstance(exc, Exception) and not self.is_system_error(exc):
            return "success"
        return "failure"

    def _listen(self, event: str, *args: Any, **kwargs: Any) -> None:
        for listener in [*self._listeners, *_global_listeners]:
            try:
                getattr(listener, event)(self, *args, **kwargs)
            except Exception:
                logger.exception("breaker %s: listener %r failed", self.name, listener)

    def _outcome(self, permit: Permit, exc: BaseException | None) -> None:
        """Count one guarded call; raises :class:`BreakerOpen` if this failure opened it and
        ``throw_new_error_on_trip`` is set (pybreaker's behaviour)."""
        outcome = self.classify(exc)
        if outcome == "failure":
            self._listen("failure", exc)
        elif outcome == "success":
            self._listen("success")
        moved = self.record(permit, outcome)
        self._trip(moved, exc)

    async def _aoutcome(self, permit: Permit, exc: BaseException | None) -> None:
        outcome = self.classify(exc)
        if outcome == "failure":
            self._listen("failure", exc)
        elif outcome == "success":
            self._listen("success")
        moved = await self.arecord(permit, outcome)
        self._trip(moved, exc)

    def _trip(self, moved: tuple[str, str] | None, exc: BaseException | None) -> None:
        if moved is not None and moved[1] == rules.OPEN and self._throw_new_error_on_trip:
            if moved[0] == rules.HALF_OPEN:
                message = "Trial call failed, circuit breaker opened"
            else:
                message = "Failures threshold reached, circuit breaker opened"
            raise BreakerOpen(self.name, self.policy.open_s, rules.OPEN, message) from exc

    # --- guarded calls -----------------------------------------------------------------------
    def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``func`` through the breaker. For an ``async def`` function this returns the
        awaitable of :meth:`acall`."""
        if inspect.iscoroutinefunction(func):
            return self.acall(func, *args, **kwargs)
        if inspect.isasyncgenfunction(func):
            raise TypeError(
                f"breaker {self.name!r} cannot guard an async generator ({func!r}): "
                "guard the calls it makes instead"
            )
        permit = self.admit()
        self._listen("before_call", func, *args, **kwargs)
        try:
            ret = func(*args, **kwargs)
        except BaseException as exc:
            self._outcome(permit, exc)
            raise
        if isinstance(ret, types.GeneratorType):
            return self._generator_call(ret, permit)
        self._outcome(permit, None)
        return ret

    async def acall(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Await ``func(*args, **kwargs)`` through the breaker."""
        permit = await self.aadmit()
        self._listen("before_call", func, *args, **kwargs)
        try:
            ret = await func(*args, **kwargs)
        except BaseException as exc:
            await self._aoutcome(permit, exc)
            raise
        await self._aoutcome(permit, None)
        return ret

    def call_async(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """pybreaker's name for async calls (Tornado there); here it is :meth:`acall`."""
        return self.acall(func, *args, **kwargs)

    def _generator_call(self, gen: types.GeneratorType[Any, Any, Any], permit: Permit) -> Any:
        try:
            value = yield next(gen)
            while True:
                value = yield gen.send(value)
        except StopIteration:
            self._outcome(permit, None)
            return
        except BaseException as exc:
            with contextlib.suppress(BreakerOpen):
                self._outcome(permit, exc)
            gen.throw(exc)

    @contextlib.contextmanager
    def calling(self) -> Iterator[None]:
        """``with cb.calling(): ...`` guards the block."""
        permit = self.admit()
        self._listen("before_call", self.calling)
        try:
            yield
        except BaseException as exc:
            self._outcome(permit, exc)
            raise
        self._outcome(permit, None)

    @contextlib.asynccontextmanager
    async def acalling(self) -> AsyncIterator[None]:
        """``async with cb.acalling(): ...`` guards the block."""
        permit = await self.aadmit()
        self._listen("before_call", self.acalling)
        try:
            yield
        except BaseException as exc:
            await self._aoutcome(permit, exc)
            raise
        await self._aoutcome(permit, None)

    def __call__(self, *call_args: Any, **call_kwargs: Any) -> Any:
        """Decorate a function (``def`` or ``async def``) so every call goes through it."""
        call_kwargs.pop("__pybreaker_call_async", None)

        def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
            if inspect.isasyncgenfunction(func):
                raise TypeError(
                    f"breaker {self.name!r} cannot guard an async generator ({func!r}): "
                    "guard the calls it makes instead"
                )
            if inspect.iscoroutinefunction(func):

                @functools.wraps(func)
                async def awrapper(*args: Any, **kwargs: Any) -> Any:
                    return await self.acall(func, *args, **kwargs)

                return awrapper

            @functools.wraps(func)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return self.call(func, *args, **kwargs)

            return wrapper

        return decorate(*call_args) if call_args else decorate


class LogListener(pybreaker.CircuitBreakerListener):
    """Logs every state change this process caused (each change is caused exactly once)."""

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        new = new_state.name
        level = logging.WARNING if new != rules.CLOSED else logging.INFO
        logger.log(level, "breaker %s: %s -> %s", cb.name, getattr(old_state, "name", "-"), new)


__all__ = [
    "Breaker",
    "BreakerOpen",
    "LogListener",
    "Permit",
    "add_global_listener",
    "ignore_exceptions",
]
