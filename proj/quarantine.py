"""The quarantine: task messages a worker could not run, kept raw for an operator.

A worker that reads a message it cannot decode or validate (:mod:`proj.poison` names the
problem) stores it here with its queue and the reason, acknowledges it off its queue, logs
one line and goes on serving the rest. ``proj quarantine list|show|replay|drop`` works on
what is kept.

``proj:quarantine`` (hash: entry id -> JSON) and ``proj:quarantine:index`` (zset: entry id
-> time) keep at most PROJ_QUARANTINE_MAX entries for PROJ_QUARANTINE_TTL_S;
``proj:quarantine:counts`` counts messages by kind of problem.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

import redis
from kombu.exceptions import ContentDisallowed

from proj import keys, poison
from proj.entries import Entries
from proj.poison import Problem
from proj.resilience.lua import LuaScript

logger = logging.getLogger("proj.quarantine")

# Add one entry, then keep the store within its bounds (age, then count).
# KEYS[1] entries hash, KEYS[2] index zset, KEYS[3] counts hash
# ARGV[1] id, ARGV[2] JSON, ARGV[3] now (s), ARGV[4] max entries, ARGV[5] TTL (s), ARGV[6] kind
_ADD = LuaScript(
    """
local now, max, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[6], 1)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - ttl)) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
local excess = redis.call('ZCARD', KEYS[2]) - max
if excess > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, excess - 1)) do
    redis.call('HDEL', KEYS[1], id)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1)
end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ttl) end
return excess
"""
)

# Message properties worth carrying to a replay (the rest are the transport's own).
_PROPERTIES = ("priority", "correlation_id", "reply_to")


def examine(message: Any, tasks: Mapping[str, Any]) -> Problem | None:
    """What is wrong with a kombu task message for a worker with these ``tasks``, or None.
    Decoding is cached on the message: Celery reads the same decoded body afterwards."""
    headers = message.headers
    problem = poison.examine_headers(headers, tasks)
    if problem is not None:
        return problem
    try:
        body = message.decode()
    except ContentDisallowed:
        return Problem(
            poison.CONTENT, f"content type {poison.shown(message.content_type)} is not accepted"
        )
    except Exception as err:  # any decoder's error: the body is what is wrong
        return Problem(
            poison.CONTENT,
            f"body does not decode as {poison.shown(message.content_type)}: "
            f"{poison.cut(f'{type(err).__name__}: {err}')}",
        )
    task = tasks[headers["task"]]
    check = getattr(task, "__header__", None) if getattr(task, "typing", True) else None
    return poison.examine_body(headers["task"], body, check)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def entry_of(message: Any, problem: Problem, *, worker: str, body_max: int) -> dict[str, Any]:
    """The quarantine entry for a message: everything needed to show and replay it."""
    raw = message.body
    body = raw.encode() if isinstance(raw, str) else bytes(raw or b"")
    headers = message.headers if isinstance(message.headers, Mapping) else {}
    delivery = message.delivery_info or {}
    properties = message.properties or {}
    return {
        "id": uuid.uuid4().hex,
        "at": time.time(),
        "queue": _text(delivery.get("routing_key")) or "",
        "exchange": _text(delivery.get("exchange")) or "",
        "kind": problem.kind,
        "reason": problem.detail,
        "task": _text(headers.get("task")),
        "task_id": _text(headers.get("id")),
        "worker": worker,
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "headers": dict(headers),
        "properties": {k: properties[k] for k in _PROPERTIES if properties.get(k) is not None},
        "body": base64.b64encode(body[:body_max]).decode(),
        "body_size": len(body),
        "body_cut": len(body) > body_max,
    }


def body_of(entry: Mapping[str, Any]) -> bytes:
    return base64.b64decode(entry["body"])


class Quarantine(Entries):
    """The quarantine store (synchronous: the worker's consumer and the CLI)."""

    def __init__(self, client: redis.Redis, *, max_entries: int, ttl_s: int) -> None:
        super().__init__(client, keys.QUARANTINE, keys.QUARANTINE_INDEX)
        self.max_entries = max_entries
        self.ttl_s = ttl_s

    def add(self, entry: Mapping[str, Any]) -> None:
        _ADD.run(
            self.r,
            [keys.QUARANTINE, keys.QUARANTINE_INDEX, keys.QUARANTINE_COUNTS],
            [
                entry["id"],
                json.dumps(entry, default=str),
                entry["at"],
                self.max_entries,
                self.ttl_s,
                entry["kind"],
            ],
        )

    def counts(self) -> dict[str, int]:
        raw: Mapping[Any, Any] = self.r.hgetall(keys.QUARANTINE_COUNTS)
        return {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()}


def republish(app: Any, entry: Mapping[str, Any]) -> None:
    """Publish a quarantined message again, as it came, to the queue it came from."""
    if entry.get("body_cut"):
        raise ValueError(
            f"{entry['id']}: its body was cut to fit the quarantine; it cannot be replayed"
        )
    name = entry["queue"]
    queue = app.amqp.queues.get(name)
    with app.producer_or_acquire() as producer:
        producer.publish(
            body_of(entry),
            exchange=queue.exchange if queue is not None else entry["exchange"],
            routing_key=name,
            declare=[queue] if queue is not None else [],
            headers=entry["headers"],
            content_type=entry["content_type"],
            content_encoding=entry["content_encoding"],
            retry=True,
            **entry["properties"],
        )
