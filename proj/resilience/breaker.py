"""The circuit breaker's rules: the policy and the pure state machine. No I/O.

pybreaker gives the vocabulary (state names, ``CircuitBreakerError``, ``fail_max``,
``success_threshold``) but counts only consecutive failures, lets every process probe at once
when its state is shared, and holds a lock for the whole guarded call. Here the decisions are
pure functions of a state and a clock (milliseconds); the Redis store
(:mod:`proj.resilience.breaker_store`) runs the same rules atomically in Lua, and
:class:`proj.guard.breaker.Breaker` puts pybreaker's API on top.

States: ``closed`` -> (failure rate > threshold over the window with at least ``min_calls``;
or, with ``fail_max`` set, that many consecutive failures) -> ``open`` -> (``open_s`` later, on
the next admit) -> ``half-open`` (at most ``probes`` calls at once, cluster-wide) ->
``success_threshold`` successful probes in a row close it, a failed one reopens it.
``forced-open`` is an operator's hold; only ``close`` ends it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import pybreaker
from pydantic import BaseModel, ConfigDict, Field

from proj.resilience.deferral import Deferral

CLOSED = pybreaker.STATE_CLOSED
OPEN = pybreaker.STATE_OPEN
HALF_OPEN = pybreaker.STATE_HALF_OPEN
FORCED_OPEN = "forced-open"

Outcome = Literal["success", "failure", "ignored"]
Verdict = Literal["allow", "probe", "deny"]


class BreakerPolicy(BaseModel):
    """Knobs of one breaker. Defaults follow the product design: open above 20% failures."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    failure_rate: float = Field(0.2, gt=0, lt=1, description="Opens when the rate is above this.")
    window_s: float = Field(10.0, gt=0, description="Sliding window length.")
    window_buckets: int = Field(10, ge=1, le=600, description="The window slides bucket by bucket.")
    min_calls: int = Field(20, ge=1, description="Below this many calls in the window, never open.")
    open_s: float = Field(30.0, gt=0, description="Time open before a probe may run.")
    probes: int = Field(1, ge=1, description="Concurrent half-open probes, cluster-wide.")
    probe_lease_s: float = Field(
        60.0, gt=0, description="A probe that never reports frees its slot."
    )
    half_open_wait_s: float = Field(
        1.0, gt=0, description="While a probe runs, others are told to come back this soon."
    )
    fail_max: int | None = Field(
        None, ge=1, description="pybreaker's rule: open after this many failures in a row."
    )
    success_threshold: int = Field(
        1, ge=1, description="Successful probes in a row that close a half-open breaker."
    )

    @property
    def bucket_ms(self) -> int:
        return max(1, int(self.window_s * 1000 / self.window_buckets))


class BreakerOpen(pybreaker.CircuitBreakerError, Deferral):
    """The dependency's breaker is open: wait ``wait_s`` and try again. Not a task failure."""

    def __init__(
        self, name: str, wait_s: float, state: str = OPEN, reason: str | None = None
    ) -> None:
        why = f"{reason}: " if reason else ""
        super().__init__(f"{why}circuit breaker {name!r} is {state}; retry in {wait_s:.1f}s")
        self.name = name
        self.wait_s = wait_s
        self.state = state
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.wait_s, self.state, self.reason))


@dataclass(frozen=True)
class Admission:
    verdict: Verdict
    wait_s: float = 0.0
    probe_id: str | None = None
    state: str = CLOSED
    transition: tuple[str, str] | None = None


@dataclass
class BreakerState:
    """Everything the decisions need; the Redis store keeps the same fields."""

    state: str = CLOSED
    opened_at_ms: int = 0
    buckets: dict[int, list[int]] = field(default_factory=dict)  # bucket -> [ok, fail]
    probes: dict[str, int] = field(default_factory=dict)  # probe id -> lease expiry (ms)
    probes_total: int = 0
    fail_counter: int = 0  # failures in a row (pybreaker's ``fail_counter``)
    success_counter: int = 0  # successful probes in a row while half-open

    def window(self, policy: BreakerPolicy, now_ms: int) -> tuple[int, int]:
        """(calls, failures) in the window ending now."""
        current = now_ms // policy.bucket_ms
        calls = fails = 0
        for b, (ok, fail) in self.buckets.items():
            if b > current - policy.window_buckets:
                calls += ok + fail
                fails += fail
        return calls, fails

    def open_until_ms(self, policy: BreakerPolicy) -> int:
        return self.opened_at_ms + int(policy.open_s * 1000)


def should_open(policy: BreakerPolicy, calls: int, failures: int, in_a_row: int = 0) -> bool:
    """With ``fail_max``: that many failures in a row. Otherwise: strictly above the failure
    rate, and only once the window holds ``min_calls``."""
    if policy.fail_max is not None:
        return in_a_row >= policy.fail_max
    return calls >= policy.min_calls and failures / calls > policy.failure_rate


def admit(policy: BreakerPolicy, s: BreakerState, now_ms: int, probe_id: str) -> Admission:
    """May a call go ahead now? Mutates ``s``. ``probe_id`` names the call if it is a probe."""
    if s.state == CLOSED:
        return Admission("allow", state=CLOSED)
    if s.state == FORCED_OPEN:
        return Admission("deny", policy.open_s, state=FORCED_OPEN)
    transition = None
    if s.state == OPEN:
        until = s.open_until_ms(policy)
        if now_ms < until:
            return Admission("deny", (until - now_ms) / 1000, state=OPEN)
        s.state, s.probes = HALF_OPEN, {}
        transition = (OPEN, HALF_OPEN)
    s.probes = {p: exp for p, exp in s.probes.items() if exp > now_ms}
    if len(s.probes) < policy.probes:
        s.probes[probe_id] = now_ms + int(policy.probe_lease_s * 1000)
        s.probes_total += 1
        return Admission("probe", probe_id=probe_id, state=HALF_OPEN, transition=transition)
    wait_ms = max(50, min(s.probes.values()) - now_ms)
    wait_s = min(wait_ms / 1000, policy.half_open_wait_s)
    return Admission("deny", wait_s, state=HALF_OPEN, transition=transition)


def record(
    policy: BreakerPolicy,
    s: BreakerState,
    now_ms: int,
    *,
    ok: int = 0,
    failed: int = 0,
    probe_id: str | None = None,
) -> tuple[str, str] | None:
    """Count outcomes (``ok``/``failed`` are counts, so callers may batch; a batch counts its
    successes before its failures). Returns the transition it caused, if any. A probe reports
    one outcome (ok=1 or failed=1, or neither for an ignored one, which frees its slot)."""
    if probe_id is not None:
        if s.state != HALF_OPEN:
            return None  # the breaker moved on without it
        # A probe that outlived its lease (a long task) still reports a real outcome: it
        # counts while the breaker is half-open, or a slow dependency could never close it.
        s.probes.pop(probe_id, None)
        if failed:
            s.fail_counter += failed
            s.state, s.opened_at_ms, s.probes, s.success_counter = OPEN, now_ms, {}, 0
            return (HALF_OPEN, OPEN)
        if ok:
            s.fail_counter = 0
            s.success_counter += ok
            if s.success_counter >= policy.success_threshold:
                s.state, s.buckets, s.probes, s.success_counter = CLOSED, {}, {}, 0
                return (HALF_OPEN, CLOSED)
        return None
    if s.state != CLOSED or not (ok or failed):
        return None  # late results of calls admitted before the breaker opened
    if ok:
        s.fail_counter = 0
    s.fail_counter += failed
    bucket = now_ms // policy.bucket_ms
    counts = s.buckets.setdefault(bucket, [0, 0])
    counts[0] += ok
    counts[1] += failed
    floor = bucket - policy.window_buckets
    s.buckets = {b: c for b, c in s.buckets.items() if b > floor}
    calls, fails = s.window(policy, now_ms)
    if should_open(policy, calls, fails, s.fail_counter):
        s.state, s.opened_at_ms, s.buckets, s.success_counter = OPEN, now_ms, {}, 0
        return (CLOSED, OPEN)
    return None


FORCEABLE = (CLOSED, OPEN, HALF_OPEN, FORCED_OPEN)


def force(s: BreakerState, state: str, now_ms: int) -> tuple[str, str] | None:
    """Set the state by hand, as pybreaker's ``open()``, ``half_open()`` and ``close()`` do:
    ``open`` starts an open period now, ``half-open`` admits the next probe, ``closed``
    resets every count; ``forced-open`` is an operator's hold that only ``closed`` ends."""
    old = s.state
    if state in (OPEN, FORCED_OPEN):
        s.state, s.opened_at_ms, s.probes, s.success_counter = state, now_ms, {}, 0
    elif state == HALF_OPEN:
        s.state, s.probes, s.success_counter = HALF_OPEN, {}, 0
    elif state == CLOSED:
        s.state, s.buckets, s.probes, s.fail_counter, s.success_counter = CLOSED, {}, {}, 0, 0
    else:
        raise ValueError(f"state must be one of {', '.join(FORCEABLE)}, got {state!r}")
    return None if old == state else (old, state)


@dataclass(frozen=True)
class Snapshot:
    """What ``proj breakers`` shows."""

    name: str
    state: str
    calls: int
    failures: int
    half_open_at: float | None  # epoch seconds
    probes_total: int
    fail_counter: int = 0
    success_counter: int = 0

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0


def wait_s(policy: BreakerPolicy, s: BreakerState, now_ms: int) -> float:
    """How long a caller should stay away now: until the open period ends (0 otherwise)."""
    if s.state != OPEN:
        return 0.0
    return max(0.0, (s.open_until_ms(policy) - now_ms) / 1000)


def snapshot(name: str, policy: BreakerPolicy, s: BreakerState, now_ms: int) -> Snapshot:
    calls, fails = s.window(policy, now_ms)
    at = s.open_until_ms(policy) / 1000 if s.state == OPEN else None
    return Snapshot(
        name, s.state, calls, fails, at, s.probes_total, s.fail_counter, s.success_counter
    )


def jitter_wait(wait_s: float, rnd: float, max_s: float, spread: float = 0.1) -> float:
    """A deferral: the wait plus up to ``spread`` of it (at least 0.1 s) of jitter, capped at
    ``max_s``. ``rnd`` is a number in [0, 1)."""
    spread = max(0.1, wait_s * spread)
    return min(max_s, max(0.0, wait_s) + spread * rnd) if math.isfinite(wait_s) else max_s
