"""Operator views and commands over the shared breaker state (``proj breakers``).

Every breaker any process made (proj's own and its users') is listed in
``proj:breakers`` with its rule, so the listing shows each with its own threshold; breakers
with state in Redis but never listed (made by an older version) are shown with the defaults.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from proj.errors import ConfigError
from proj.resilience import breaker as rules
from proj.resilience.breaker import BreakerPolicy, Snapshot
from proj.resilience.breaker_store import RedisBreakerStore
from proj.settings import Settings


@dataclass(frozen=True)
class BreakerView:
    snapshot: Snapshot
    policy: BreakerPolicy | None  # None: a plain pybreaker breaker (its rule lives in its code)


def _store(settings: Settings) -> RedisBreakerStore:
    return RedisBreakerStore(
        redis.Redis.from_url(settings.broker.redis_url, socket_connect_timeout=5)
    )


def _policies(settings: Settings, store: RedisBreakerStore) -> dict[str, BreakerPolicy | None]:
    out: dict[str, BreakerPolicy | None] = dict.fromkeys(settings.dependency_breakers())
    for name in store.names():
        out.setdefault(name, settings.breaker_policy(name))
    for name, raw in store.registered().items():
        try:
            data = json.loads(raw)
            out[name] = None if data.get("rule") == "pybreaker" else BreakerPolicy(**data)
        except (ValueError, TypeError):
            out[name] = settings.breaker_policy(name)
    for name in out:
        if out[name] is None and name in settings.dependency_breakers():
            out[name] = settings.breaker_policy(name)
    return out


def known(settings: Settings) -> list[str]:
    """Every breaker name known to this deployment."""
    store = _store(settings)
    try:
        return sorted(_policies(settings, store))
    finally:
        store.client.close()


def views(settings: Settings) -> list[BreakerView]:
    """State, failure rate, calls in window and next probe time of every breaker."""
    store = _store(settings)
    try:
        out = []
        for name, policy in sorted(_policies(settings, store).items()):
            snap = store.snapshot(name, policy or settings.breaker_policy(name))
            if policy is None and snap.state == rules.OPEN:
                snap = Snapshot(
                    name, snap.state, snap.calls, snap.failures, None, snap.probes_total,
                    snap.fail_counter, snap.success_counter,
                )  # fmt: skip
            out.append(BreakerView(snap, policy))
        return out
    finally:
        store.client.close()


def force(settings: Settings, name: str, state: str) -> tuple[str, str] | None:
    """Hold a breaker open (``forced-open``) or close it; returns the transition, if any.
    An unknown name is an error that lists the known ones."""
    store = _store(settings)
    try:
        names = _policies(settings, store)
        if name not in names:
            raise ConfigError(
                f"no breaker named {name!r}; known: {', '.join(sorted(names)) or 'none'}"
            )
        return store.force(name, state)
    finally:
        store.client.close()
