"""``proj status``: every worker's queues and concurrency, every rate limit's wait, and the
deferred tasks parked in Redis."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

from proj import broker, keys
from proj.parking import Parking
from proj.resilience.ratelimit import current_wait_ms
from proj.settings import Settings


@dataclass(frozen=True)
class WorkerRow:
    node: str
    queues: str
    processes: int
    bounds: str  # "2..100 adaptive" or "fixed"
    success_rate: str
    note: str
    paused: str = ""  # off-peak queues it is not consuming now: "nightly@2026-12-07T22:00+00:00"


@dataclass(frozen=True)
class LimitRow:
    name: str
    rate: str
    wait_s: float


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def connect(settings: Settings) -> redis.Redis:
    """The one Redis client a status reading (``proj status``, a metrics scrape) uses."""
    return redis.Redis.from_url(settings.broker.redis_url, socket_connect_timeout=5)


def workers(client: redis.Redis) -> list[WorkerRow]:
    """Live workers (the hashes each writes every few seconds: :mod:`proj.presence`) joined
    with their adaptive controllers' status. Redis only: no broadcast to wait out."""
    found = [
        {_s(k): _s(v) for k, v in client.hgetall(key).items()}
        for key in client.scan_iter(match=keys.WORKER_PATTERN, count=500)
    ]
    rows = []
    for w in sorted((w for w in found if w.get("node")), key=lambda w: w["node"]):
        node = w["node"]
        status = {_s(k): _s(v) for k, v in client.hgetall(keys.concurrency_status(node)).items()}
        processes = int(w.get("processes") or 0)
        if status:
            rate = status.get("success_rate") or ""
            rows.append(
                WorkerRow(
                    node,
                    w.get("queues", ""),
                    processes,
                    f"{status['minimum']}..{status['maximum']} adaptive",
                    f"{float(rate):.1%}" if rate else "-",
                    status.get("reason", ""),
                    w.get("paused", ""),
                )
            )
        else:
            rows.append(
                WorkerRow(
                    node, w.get("queues", ""), processes, "fixed", "-", "", w.get("paused", "")
                )
            )
    return rows


def queues(client: redis.Redis, settings: Settings) -> dict[str, int]:
    """Messages waiting: every declared queue (on the broker: :mod:`proj.broker`), the
    quarantine, the dead letters."""
    b = settings.broker
    same = b.broker_url == b.redis_url
    out = broker.depths(b.broker_url, settings.queue_config.names, client if same else None)
    pipe = client.pipeline(transaction=False)
    pipe.hlen(keys.QUARANTINE)
    pipe.hlen(keys.DLQ)
    quarantined, dead = (int(n) for n in pipe.execute())
    return {**out, "quarantine": quarantined, "dead_letters": dead}


def limits(client: redis.Redis, settings: Settings) -> list[LimitRow]:
    """Configured limits, and any dependency a 429 pushed back, with the wait right now."""
    sec, usec = client.time()
    now_ms = sec * 1000 + usec / 1000
    names = set(settings.limits.specs)
    for key in client.scan_iter(match=keys.RATE_LIMIT_PATTERN, count=500):
        names.add(_s(key).split(":", 2)[2])
    rows = []
    for name in sorted(names):
        limit = settings.rate_limit(name)
        tat = float(client.get(keys.rate_limit(name)) or 0)
        wait = current_wait_ms(tat, now_ms, settings.enforced_rate_limit(name)) / 1000
        rows.append(LimitRow(name, str(limit) if limit else "none (429 pushes only)", wait))
    return rows


def parked(client: redis.Redis) -> dict[str, int]:
    """Deferred tasks waiting in Redis, per lot (``breaker:ai``, ``limit:crm``, ...)."""
    return Parking(client).counts()


def age(updated: float) -> str:
    return f"{max(0.0, time.time() - updated):.0f}s ago"
