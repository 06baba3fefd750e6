"""A global rate limit per dependency: GCRA on the Redis server's clock, shared by every
worker on every host.

GCRA keeps one number per limit, the theoretical arrival time (TAT). A call at ``now`` may go
at ``max(TAT, now) + T - tau`` where ``T`` is the emission interval (period / rate) and ``tau``
is ``T x burst``. proj *reserves* the slot when the wait is short (at most
``PROJ_RATE_LIMIT_MAX_WAIT_S``): the caller sleeps exactly that long, with no polling. A longer
wait is not reserved; the task is deferred by that wait instead. A 429's ``Retry-After`` pushes
the TAT forward, so every worker holds off, not only the one that saw it. A dependency with no
configured rate still gets such pushes (``T = 0``).
"""

from __future__ import annotations

import email.utils
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from proj.resilience.deferral import Deferral

_SPEC = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d*(?:\.\d+)?)\s*(s|sec|m|min|h|hour)\s*$")
_UNIT_S = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}


@dataclass(frozen=True)
class RateLimit:
    """``rate`` calls per ``per_s`` seconds, ``burst`` of them at once."""

    rate: float
    per_s: float = 1.0
    burst: int = 1

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.per_s <= 0 or self.burst < 1:
            raise ValueError(f"rate and period must be > 0 and burst >= 1, got {self}")

    @property
    def interval_ms(self) -> float:
        return self.per_s * 1000.0 / self.rate

    @property
    def tolerance_ms(self) -> float:
        return self.interval_ms * self.burst

    def __str__(self) -> str:
        per = {1.0: "s", 60.0: "m", 3600.0: "h"}.get(self.per_s, f"{self.per_s:g}s")
        return f"{self.rate:g}/{per}" + (f" burst {self.burst}" if self.burst > 1 else "")


def parse_rate(spec: Any) -> RateLimit:
    """``"50/s"``, ``"3000/m"``, ``"10/5s"``, or ``{"rate": "50/s", "burst": 5}``."""
    burst = 1
    if isinstance(spec, dict):
        burst = int(spec.get("burst", 1))
        spec = spec.get("rate")
    m = _SPEC.match(str(spec))
    if not m:
        raise ValueError(f"a rate is like '50/s', '3000/m' or '10/5s', got {spec!r}")
    count, mult, unit = m.groups()
    period = (float(mult) if mult else 1.0) * _UNIT_S[unit]
    return RateLimit(float(count), period, burst)


class RateLimitWait(Deferral):
    """The dependency's rate limit has no slot soon enough: come back in ``wait_s``."""

    def __init__(self, name: str, wait_s: float) -> None:
        super().__init__(f"rate limit {name!r}: next slot in {wait_s:.2f}s")
        self.name = name
        self.wait_s = wait_s

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.wait_s))


@dataclass(frozen=True)
class Reservation:
    granted: bool
    wait_ms: float
    tat_ms: float  # the new TAT (unchanged when not granted)


def reserve(
    tat_ms: float, now_ms: float, limit: RateLimit | None, max_wait_ms: float, quantity: int = 1
) -> Reservation:
    """GCRA with reservation. Pure; the Lua script does the same on the server."""
    t = limit.interval_ms if limit else 0.0
    tau = limit.tolerance_ms if limit else 0.0
    tat = max(tat_ms, now_ms)
    new_tat = tat + t * quantity
    wait = max(0.0, new_tat - tau - now_ms)
    if wait > max_wait_ms:
        return Reservation(False, wait, tat_ms)
    return Reservation(True, wait, new_tat)


def push(tat_ms: float, until_ms: float, limit: RateLimit | None) -> float:
    """The TAT after a 429 asked everyone to wait until ``until_ms``."""
    t = limit.interval_ms if limit else 0.0
    tau = limit.tolerance_ms if limit else 0.0
    return max(tat_ms, until_ms - t + tau)


def current_wait_ms(tat_ms: float, now_ms: float, limit: RateLimit | None) -> float:
    """How long a call arriving now would wait."""
    return reserve(tat_ms, now_ms, limit, float("inf")).wait_ms


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date (RFC 9110)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())
