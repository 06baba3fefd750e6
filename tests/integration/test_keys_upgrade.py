"""Keys an earlier version wrote are moved to this version's names on a real Redis: every part
of a batch, a breaker's keys, the dead letters and the quarantine, with their TTLs; a key
already written under its new name is never overwritten; run again, nothing moves; and a
Redis that is down costs a worker one log line, not its start."""

from __future__ import annotations

import logging

import pytest
import redis as redis_lib

from proj import keys
from proj.batch.dlq import DeadLetters
from proj.keys_upgrade import upgrade, upgrade_quietly
from proj.stack.procs import free_port


def _legacy(r: redis_lib.Redis) -> None:
    r.hset("proj:cb:payments", mapping={"state": "open", "opened_at_ms": 1})
    r.hset("proj:cb:payments:win", "f:1", 3)
    r.zadd("proj:cb:payments:probes", {"p1": 5})
    r.hset("proj:batch:b1", mapping={"pipeline": "company", "status": "running"})
    r.expire("proj:batch:b1", 600)
    r.hset("proj:batch:b1:items", "0", '{"domain": "a.com"}')
    r.zadd("proj:batch:b1:runners", {"n/1/a": 1})
    r.hset("proj:batch:2024:jan:results", "0", "{}")
    r.hset("proj:dlq", "b1:0", '{"id": "b1:0", "at": 1, "batch_id": "b1"}')
    r.zadd("proj:dlq:index", {"b1:0": 1})
    r.hset("proj:quarantine", "q1", "{}")
    r.zadd("proj:quarantine:index", {"q1": 1})
    r.hset("proj:quarantine:counts", "body", 1)


def test_legacy_keys_move_to_their_new_names_once(redis_client: redis_lib.Redis) -> None:
    _legacy(redis_client)
    redis_client.hset(keys.QUARANTINE_COUNTS, "header", 2)  # this version counted already
    untouched = {keys.breaker("ai"): "x", keys.batch("b2"): "y", keys.BATCHES: "z"}
    for k, v in untouched.items():
        redis_client.set(k, v)

    assert upgrade(redis_client) == (11, 1)
    assert redis_client.hget(keys.breaker("payments"), "state") == b"open"
    assert redis_client.hget(keys.breaker_window("payments"), "f:1") == b"3"
    assert redis_client.zscore(keys.breaker_probes("payments"), "p1") == 5
    assert redis_client.hget(keys.batch("b1"), "status") == b"running"
    assert 0 < redis_client.ttl(keys.batch("b1")) <= 600  # its TTL went with it
    assert redis_client.hget(keys.batch("b1", "items"), "0") == b'{"domain": "a.com"}'
    assert redis_client.zscore(keys.batch("b1", "runners"), "n/1/a") == 1
    assert redis_client.exists(keys.batch("2024:jan", "results"))
    assert [e["id"] for e in DeadLetters(redis_client).entries()] == ["b1:0"]
    assert redis_client.hget(keys.QUARANTINE, "q1") == b"{}"
    assert redis_client.hgetall(keys.QUARANTINE_COUNTS) == {b"header": b"2"}  # not overwritten
    assert redis_client.hget("proj:quarantine:counts", "body") == b"1"  # kept where it was
    assert {k: redis_client.get(k) for k in untouched} == {
        k: v.encode() for k, v in untouched.items()
    }

    assert upgrade(redis_client) == (0, 1)  # nothing left to move


def test_a_worker_start_logs_one_line_when_keys_moved_and_none_otherwise(
    redis_client: redis_lib.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    from proj.signals import upgrade_keys

    caplog.set_level(logging.INFO, logger="proj.keys")
    redis_client.hset("proj:dlq", "b1:0", "{}")
    upgrade_keys()  # the worker's start-up step, on the session's Redis
    assert [r.getMessage() for r in caplog.records] == [
        "moved 1 Redis key(s) of an earlier version to new names"
    ]
    assert redis_client.hget(keys.DLQ, "b1:0") == b"{}"
    caplog.clear()
    upgrade_keys()  # the next worker: nothing to move, nothing said
    assert caplog.records == []
    assert redis_client.get(keys.KEYS_VERSION) == b"2"  # later starts do not scan again


def test_a_redis_that_is_down_costs_one_line_and_no_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = redis_lib.Redis(port=free_port(), socket_connect_timeout=1)
    with caplog.at_level(logging.INFO, logger="proj.keys"):
        upgrade_quietly(client)
    assert len(caplog.records) == 1
    assert "Redis unreachable" in caplog.records[0].getMessage()
