"""A failure-rate circuit breaker: the policy, the pure state machine, and its in-memory twin.

pybreaker gives the vocabulary (its state names and ``CircuitBreakerError``; listeners have
the shape of its ``CircuitBreakerListener.state_change``) but not the behaviour we need: it
counts consecutive failures, its Redis storage lets every process probe at once, and its
``call()`` holds a lock for the whole guarded call. Here the decisions are pure functions of
a state and a clock; the Redis store (:mod:`proj.resilience.breaker_store`) runs the same
rules atomically in Lua.

States: ``closed`` -> (failure rate > threshold over the window, at least ``min_calls``) ->
``open`` -> (``open_s`` later, on the next admit) -> ``half-open`` (at most ``probes`` calls at
once, cluster-wide) -> a successful probe closes, a failed one reopens. ``forced-open`` is an
operator's hold; only ``close`` ends it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

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
    failure_rate: float = Field(0.2, gt=0, le=1, description="Opens when the rate is above this.")
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

    @property
    def bucket_ms(self) -> int:
        return max(1, int(self.window_s * 1000 / self.window_buckets))


class BreakerOpen(pybreaker.CircuitBreakerError, Deferral):
    """The dependency's breaker is open: wait ``wait_s`` and try again. Not a task failure."""

    def __init__(self, name: str, wait_s: float, state: str = OPEN) -> None:
        super().__init__(f"circuit breaker {name!r} is {state}; retry in {wait_s:.1f}s")
        self.name = name
        self.wait_s = wait_s
        self.state = state


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


def should_open(policy: BreakerPolicy, calls: int, failures: int) -> bool:
    """Strictly above the threshold, and only once the window holds ``min_calls``."""
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
    """Count outcomes (``ok``/``failed`` are counts, so callers may batch). Returns the
    transition it caused, if any. A probe reports one outcome (ok=1 or failed=1, or neither
    for an ignored one, which frees its slot)."""
    if probe_id is not None:
        if s.state != HALF_OPEN or s.probes.pop(probe_id, None) is None:
            return None  # a stale probe: the breaker moved on without it
        if failed:
            s.state, s.opened_at_ms, s.probes = OPEN, now_ms, {}
            return (HALF_OPEN, OPEN)
        if ok:
            s.state, s.buckets, s.probes = CLOSED, {}, {}
            return (HALF_OPEN, CLOSED)
        return None
    if s.state != CLOSED or not (ok or failed):
        return None  # late results of calls admitted before the breaker opened
    bucket = now_ms // policy.bucket_ms
    counts = s.buckets.setdefault(bucket, [0, 0])
    counts[0] += ok
    counts[1] += failed
    floor = bucket - policy.window_buckets
    s.buckets = {b: c for b, c in s.buckets.items() if b > floor}
    calls, fails = s.window(policy, now_ms)
    if should_open(policy, calls, fails):
        s.state, s.opened_at_ms, s.buckets = OPEN, now_ms, {}
        return (CLOSED, OPEN)
    return None


def force(s: BreakerState, state: str, now_ms: int) -> tuple[str, str] | None:
    """An operator's command: ``forced-open`` holds it open, ``closed`` resets it."""
    old = s.state
    if state == FORCED_OPEN:
        s.state, s.opened_at_ms, s.probes = FORCED_OPEN, now_ms, {}
    elif state == CLOSED:
        s.state, s.buckets, s.probes = CLOSED, {}, {}
    else:
        raise ValueError(f"can force {FORCED_OPEN!r} or {CLOSED!r}, got {state!r}")
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

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0


def snapshot(name: str, policy: BreakerPolicy, s: BreakerState, now_ms: int) -> Snapshot:
    calls, fails = s.window(policy, now_ms)
    at = s.open_until_ms(policy) / 1000 if s.state == OPEN else None
    return Snapshot(name, s.state, calls, fails, at, s.probes_total)


def jitter_wait(wait_s: float, rnd: float, max_s: float, spread: float = 0.1) -> float:
    """A deferral: the wait plus up to ``spread`` of it (at least 0.1 s) of jitter, capped at
    ``max_s``. ``rnd`` is a number in [0, 1)."""
    spread = max(0.1, wait_s * spread)
    return min(max_s, max(0.0, wait_s) + spread * rnd) if math.isfinite(wait_s) else max_s
