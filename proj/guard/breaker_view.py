"""pybreaker's view of a :class:`proj.Breaker`: its knobs (``fail_max``, ``reset_timeout``,
``success_threshold``, kept in the policy), its state and counters (read from the shared
store) and manual control (``open()``, ``half_open()``, ``close()``). A mixin of
:class:`proj.Breaker`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import pybreaker
import redis

from proj.resilience import breaker as rules
from proj.resilience.breaker import BreakerPolicy, Snapshot
from proj.resilience.breaker_store import BreakerStore

#: What the store may raise when Redis is unreachable; the breaker then lets calls through.
STORE_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)


class _ForcedOpenState(pybreaker.CircuitOpenState):
    """An operator's hold (``proj breakers open``): open until someone closes it."""

    def __init__(self, cb: pybreaker.CircuitBreaker) -> None:
        super().__init__(cb)
        self._name = rules.FORCED_OPEN


class PybreakerView:
    """The pybreaker-compatible half of :class:`proj.Breaker`."""

    policy: BreakerPolicy
    store: BreakerStore
    clock: Callable[[], float]
    _name: str | None
    _known: str
    _throw_new_error_on_trip: bool

    if TYPE_CHECKING:

        def _check_fork(self) -> None: ...
        def _warn(self, what: str, exc: BaseException) -> None: ...
        def _learn(self, state: str, wait_s: float, now: float) -> None: ...
        def _announce(self, moved: tuple[str, str] | None) -> None: ...

    @property
    def name(self) -> str:
        return self._name or ""

    @name.setter
    def name(self, name: str) -> None:
        self._name = name

    # --- pybreaker's knobs, kept in the policy ---------------------------------------------
    @property
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

    @property
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
        cb = cast(pybreaker.CircuitBreaker, self)  # the mixin lives in proj.Breaker only
        if name == rules.CLOSED:
            return pybreaker.CircuitClosedState(cb)
        if name == rules.HALF_OPEN:
            return pybreaker.CircuitHalfOpenState(cb, None)
        if name == rules.FORCED_OPEN:
            return _ForcedOpenState(cb)
        return pybreaker.CircuitOpenState(cb)

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
