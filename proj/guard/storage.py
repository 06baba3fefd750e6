"""``proj.BreakerStorage``: shared state for a plain ``pybreaker.CircuitBreaker``.

    pybreaker.CircuitBreaker(fail_max=3, reset_timeout=0.5,
                             state_storage=proj.BreakerStorage("payments"))

State, both counters and ``opened_at`` live in the breaker's hash in proj's Redis
(``proj:cb:{name}``, the same hash :class:`proj.Breaker` keeps), so every process on every
host shares them. What differs from pybreaker's ``CircuitRedisStorage``: ``opened_at`` keeps
milliseconds (pybreaker's rounds to whole seconds, so a 0.5 s ``reset_timeout`` could last
1.5 s); clients made with ``decode_responses=True`` work; and when Redis cannot be reached
the storage answers with the last state it saw and never writes a fallback over the shared
state. pybreaker's own rules run in each process: under pybreaker every process that finds
the timeout elapsed probes at once. For one probe per open period use :func:`proj.breaker`.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import pybreaker
import redis

from proj import keys
from proj.resilience.breaker import FORCED_OPEN, OPEN
from proj.resilience.lua import LuaScript, text

logger = logging.getLogger("proj.breaker")

#: The hash is forgotten this long after its last write (an unused breaker's state).
TTL_MS = 7 * 86400 * 1000

# Set opened_at_ms if it is later than the stored one (two processes opening at once keep
# the later time, as pybreaker's storage does).
# KEYS[1] the breaker's hash; ARGV[1] opened_at in ms, [2] TTL ms. Returns the stored value.
_SET_OPENED_AT = LuaScript(
    """
local current = tonumber(redis.call('HGET', KEYS[1], 'opened_at_ms') or '0')
local new = tonumber(ARGV[1])
if new > current then
  redis.call('HSET', KEYS[1], 'opened_at_ms', ARGV[1])
  current = new
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return tostring(current)
"""
)


class BreakerStorage(pybreaker.CircuitBreakerStorage):
    """A ``pybreaker.CircuitBreakerStorage`` in proj's Redis, shared by every process."""

    def __init__(
        self, name: str, state: str = pybreaker.STATE_CLOSED, *, client: redis.Redis | None = None
    ) -> None:
        super().__init__(name)
        self._client = client
        self._key = keys.breaker(name)
        self._last_state = state
        self._last: dict[str, str | None] = {}  # fields as last read, for when Redis is down
        self._warned_at = -1e9
        try:
            pipe = self.client.pipeline(transaction=True)  # one key: one slot on a cluster
            pipe.hsetnx(self._key, "state", state)
            pipe.pexpire(self._key, TTL_MS)
            pipe.execute()
            self.client.hset(keys.BREAKER_REGISTRY, name, '{"rule": "pybreaker"}')
        except (redis.RedisError, OSError) as exc:
            self._warn("could not initialise", exc)

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            from proj.guard.connections import sync_client

            return sync_client()
        return self._client

    def _warn(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 10.0:
            self._warned_at = now
            logger.warning("breaker storage %s: %s (%s)", self.name, what, exc)

    def _get(self, field: str) -> str | None:
        """A field of the shared hash; the value last seen when Redis cannot be reached."""
        try:
            value = self.client.hget(self._key, field)
        except (redis.RedisError, OSError) as exc:
            self._warn(f"could not read {field}", exc)
            if field not in self._last:
                raise _Unreachable from exc
            return self._last[field]
        self._last[field] = None if value is None else text(value)
        return self._last[field]

    def _write(self, *commands: tuple[str, ...]) -> None:
        try:
            pipe = self.client.pipeline(transaction=True)
            for cmd in commands:
                pipe.execute_command(*cmd)
            pipe.pexpire(self._key, TTL_MS)
            pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self._warn("could not write", exc)

    @property
    def state(self) -> str:
        """The shared state; the last one seen when Redis cannot be reached. An operator's
        hold (``proj breakers open``) reads as ``open``, for as long as it lasts."""
        try:
            value = self._get("state")
        except _Unreachable:
            return self._last_state
        if value is not None:
            self._last_state = value
        return OPEN if self._last_state == FORCED_OPEN else self._last_state

    @state.setter
    def state(self, state: str) -> None:
        self._last_state = str(state)
        self._write(("HSET", self._key, "state", str(state)))

    def increment_counter(self) -> None:
        self._write(("HINCRBY", self._key, "fail_counter", "1"))

    def reset_counter(self) -> None:
        self._write(("HSET", self._key, "fail_counter", "0"))

    def increment_success_counter(self) -> None:
        self._write(("HINCRBY", self._key, "success_counter", "1"))

    def reset_success_counter(self) -> None:
        self._write(("HSET", self._key, "success_counter", "0"))

    def _int(self, field: str) -> int:
        try:
            value = self._get(field)
        except _Unreachable:
            return 0
        return int(value) if value else 0

    @property
    def counter(self) -> int:
        return self._int("fail_counter")

    @property
    def success_counter(self) -> int:
        return self._int("success_counter")

    @property
    def opened_at(self) -> datetime | None:
        """When it last opened, to the millisecond (UTC)."""
        try:
            value = self._get("opened_at_ms")
        except _Unreachable:
            return None
        if not value:
            return None
        if self._last_state == FORCED_OPEN:  # held open: pybreaker must not half-open it
            return datetime.now(UTC) + timedelta(days=365)
        return datetime.fromtimestamp(float(value) / 1000, UTC)

    @opened_at.setter
    def opened_at(self, when: datetime) -> None:
        if when.tzinfo is None:  # pybreaker passes UTC; a naive time is taken as UTC
            when = when.replace(tzinfo=UTC)
        ms = f"{when.timestamp() * 1000:.3f}"
        try:
            _SET_OPENED_AT.run(self.client, [self._key], [ms, TTL_MS])
        except (redis.RedisError, OSError) as exc:
            self._warn("could not write opened_at", exc)


class _Unreachable(Exception):
    pass


__all__ = ["BreakerStorage"]
