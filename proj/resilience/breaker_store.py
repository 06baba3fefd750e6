"""Where breaker state lives: Redis (shared by every worker on every host) or memory (tests,
single process). Both run the rules of :mod:`proj.resilience.breaker`; one test suite runs
against both.

Redis data model (keys in :mod:`proj.keys`)::

    proj:cb:{name}          hash   state, opened_at_ms, probes_total, fail_counter,
                                   success_counter (pybreaker's counters)
    proj:cb:{name}:win      hash   o:<bucket> / f:<bucket> outcome counts (TTL 2 windows)
    proj:cb:{name}:probes   zset   probe id -> lease expiry ms (TTL 2 leases)

Times come from the Redis server's clock (``TIME``), so hosts need not agree on theirs;
tests pass ``now_ms`` to drive the clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import redis.asyncio as aioredis

from proj import keys
from proj.resilience import breaker as rules
from proj.resilience.breaker import Admission, BreakerPolicy, BreakerState, Snapshot
from proj.resilience.breaker_lua import (
    ADMIT_SCRIPT,
    FORCE_SCRIPT,
    RECORD_SCRIPT,
    admission,
    admit_args,
    breaker_keys,
    check_forceable,
    forced,
    name_of,
    now_arg,
    record_args,
    recorded,
    state_from,
)
from proj.resilience.lua import Arg, LuaScript, SyncClient, text


def _ms(t: Any) -> int:
    """Redis TIME (seconds, microseconds) in ms."""
    sec, usec = t
    return int(sec) * 1000 + int(usec) // 1000


class BreakerStore(Protocol):
    """Where a breaker's state lives (synchronous API)."""

    def admit(
        self, name: str, policy: BreakerPolicy, probe_id: str, now_ms: int | None = None
    ) -> Admission: ...

    def record(
        self,
        name: str,
        policy: BreakerPolicy,
        *,
        ok: int = 0,
        failed: int = 0,
        probe_id: str | None = None,
        now_ms: int | None = None,
    ) -> tuple[str, tuple[str, str] | None, float]: ...

    def force(self, name: str, state: str, now_ms: int | None = None) -> tuple[str, str] | None: ...

    def snapshot(self, name: str, policy: BreakerPolicy, now_ms: int | None = None) -> Snapshot: ...

    def names(self) -> list[str]: ...


class AsyncBreakerStore(Protocol):
    """The same operations for asyncio callers."""

    async def admit(
        self, name: str, policy: BreakerPolicy, probe_id: str, now_ms: int | None = None
    ) -> Admission: ...

    async def record(
        self,
        name: str,
        policy: BreakerPolicy,
        *,
        ok: int = 0,
        failed: int = 0,
        probe_id: str | None = None,
        now_ms: int | None = None,
    ) -> tuple[str, tuple[str, str] | None, float]: ...

    async def force(
        self, name: str, state: str, now_ms: int | None = None
    ) -> tuple[str, str] | None: ...

    async def snapshot(
        self, name: str, policy: BreakerPolicy, now_ms: int | None = None
    ) -> Snapshot: ...

    async def names(self) -> list[str]: ...


class MemoryBreakerStore:
    """In-process twin of the Redis store: same rules, a dict for state."""

    def __init__(self) -> None:
        self.states: dict[str, BreakerState] = {}
        self._lock = threading.Lock()

    def _now(self, now_ms: int | None) -> int:
        return int(time.time() * 1000) if now_ms is None else now_ms

    def _state(self, name: str) -> BreakerState:
        return self.states.setdefault(name, BreakerState())

    def admit(
        self, name: str, policy: BreakerPolicy, probe_id: str, now_ms: int | None = None
    ) -> Admission:
        with self._lock:
            return rules.admit(policy, self._state(name), self._now(now_ms), probe_id)

    def record(
        self,
        name: str,
        policy: BreakerPolicy,
        *,
        ok: int = 0,
        failed: int = 0,
        probe_id: str | None = None,
        now_ms: int | None = None,
    ) -> tuple[str, tuple[str, str] | None, float]:
        with self._lock:
            s = self._state(name)
            now = self._now(now_ms)
            moved = rules.record(policy, s, now, ok=ok, failed=failed, probe_id=probe_id)
            return s.state, moved, rules.wait_s(policy, s, now)

    def force(self, name: str, state: str, now_ms: int | None = None) -> tuple[str, str] | None:
        with self._lock:
            return rules.force(self._state(name), state, self._now(now_ms))

    def snapshot(self, name: str, policy: BreakerPolicy, now_ms: int | None = None) -> Snapshot:
        with self._lock:
            return rules.snapshot(name, policy, self._state(name), self._now(now_ms))

    def names(self) -> list[str]:
        return sorted(self.states)


class AsyncAdapter:
    """A synchronous store behind the asyncio API, called in place (the memory twin, and
    tests): ``await adapter.admit(...)`` is ``store.admit(...)``."""

    def __init__(self, store: BreakerStore) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        fn = getattr(self.store, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        return call


class _ScriptSteps:
    """The steps that are one Lua script each, written once for both Redis stores, as
    redis-py writes its commands once for both clients: each returns ``self._run(...)``, a
    result from :class:`RedisBreakerStore` and an awaitable of it from
    :class:`AsyncRedisBreakerStore`."""

    def _run(
        self, script: LuaScript, keys: list[str], args: list[Arg], parse: Callable[[Any], Any]
    ) -> Any:
        raise NotImplementedError

    def admit(
        self, name: str, policy: BreakerPolicy, probe_id: str, now_ms: int | None = None
    ) -> Any:
        k = breaker_keys(name)
        args = admit_args(policy, probe_id, now_ms)
        return self._run(ADMIT_SCRIPT, [k[0], k[2]], args, lambda r: admission(r, probe_id))

    def record(
        self,
        name: str,
        policy: BreakerPolicy,
        *,
        ok: int = 0,
        failed: int = 0,
        probe_id: str | None = None,
        now_ms: int | None = None,
    ) -> Any:
        args = record_args(policy, ok, failed, probe_id, now_ms)
        return self._run(RECORD_SCRIPT, breaker_keys(name), args, recorded)

    def force(self, name: str, state: str, now_ms: int | None = None) -> Any:
        check_forceable(state)
        return self._run(FORCE_SCRIPT, breaker_keys(name), [now_arg(now_ms), state], forced)


class RedisBreakerStore(_ScriptSteps, SyncClient):
    """Breaker state in Redis; every step is one Lua script, so it is atomic cluster-wide.
    Works with clients made with or without ``decode_responses``."""

    def register(self, name: str, policy: BreakerPolicy) -> None:
        """List the breaker and its rule for ``proj breakers``."""
        self.client.hset(keys.BREAKER_REGISTRY, name, policy.model_dump_json())

    def registered(self) -> dict[str, str]:
        """Every listed breaker: name -> JSON of its policy."""
        raw = self.client.hgetall(keys.BREAKER_REGISTRY)
        return {text(k): text(v) for k, v in raw.items()}

    def _run(
        self, script: LuaScript, keys: list[str], args: list[Arg], parse: Callable[[Any], Any]
    ) -> Any:
        return parse(script.run(self.client, keys, args))

    def snapshot(self, name: str, policy: BreakerPolicy, now_ms: int | None = None) -> Snapshot:
        k = breaker_keys(name)
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(k[0])
        pipe.hgetall(k[1])
        raw, win = pipe.execute()
        # TIME on its own: a Redis Cluster pipeline takes only commands with keys.
        now = _ms(self.client.time()) if now_ms is None else now_ms
        return rules.snapshot(name, policy, state_from(raw, win), now)

    def names(self) -> list[str]:
        found = {name_of(k) for k in self.client.scan_iter(match=keys.BREAKER_PATTERN, count=500)}
        return sorted(n for n in found if n)


class AsyncRedisBreakerStore(_ScriptSteps):
    """:class:`RedisBreakerStore` for asyncio callers (a ``redis.asyncio`` client)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def _run(
        self, script: LuaScript, keys: list[str], args: list[Arg], parse: Callable[[Any], Any]
    ) -> Any:
        return parse(await script.arun(self.client, keys, args))

    async def snapshot(
        self, name: str, policy: BreakerPolicy, now_ms: int | None = None
    ) -> Snapshot:
        k = breaker_keys(name)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(k[0])
            pipe.hgetall(k[1])
            raw, win = await pipe.execute()
        now = _ms(await self.client.time()) if now_ms is None else now_ms
        return rules.snapshot(name, policy, state_from(raw, win), now)

    async def names(self) -> list[str]:
        found = set()
        async for key in self.client.scan_iter(match=keys.BREAKER_PATTERN, count=500):
            found.add(name_of(key))
        return sorted(n for n in found if n)
