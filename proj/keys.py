"""Every Redis key proj writes, in one place. All start with ``proj:``.

Keys that one Lua script or transaction touches together share a Redis Cluster hash tag (the
part in braces decides the slot): a breaker's three keys carry ``{<breaker>}``, a batch's keys
``{<batch id>}``, a parking lot's ``{<lot>}``, the dead letters ``{dlq}`` and the quarantine
``{quarantine}``. What spans slots (the watchdog's index beside a batch, the set of lots beside
a lot, the result cache and in-flight markers beside a batch) is kept by separate single-key
commands, in an order that needs no atomicity across slots. So everything proj keeps in Redis
works on Redis Cluster as on one Redis, with the same code
(``tests/integration/test_redis_cluster.py``). Keys an earlier version wrote under names
without a hash tag are moved by :mod:`proj.keys_upgrade`."""

from __future__ import annotations

PREFIX = "proj"

#: The key layout's version: 2 since the hash tags. ``KEYS_VERSION`` holds the version whose
#: layout the keys are in (:mod:`proj.keys_upgrade` moves an older layout's keys once).
VERSION = 2
KEYS_VERSION = f"{PREFIX}:keys:version"


def breaker(name: str) -> str:
    """Hash: state, opened_at_ms, probes_total (no TTL while open; a day otherwise)."""
    return f"{PREFIX}:cb:{{{name}}}"


def breaker_window(name: str) -> str:
    """Hash of per-bucket outcome counts, ``o:<bucket>`` and ``f:<bucket>`` (TTL: the window)."""
    return f"{PREFIX}:cb:{{{name}}}:win"


def breaker_probes(name: str) -> str:
    """Sorted set of half-open probe ids scored by lease expiry (ms)."""
    return f"{PREFIX}:cb:{{{name}}}:probes"


BREAKER_PATTERN = f"{PREFIX}:cb:*"
BREAKER_REGISTRY = f"{PREFIX}:breakers"
"""Hash: breaker name -> JSON of its policy, written by each process that uses it (no TTL),
so ``proj breakers`` lists every breaker, proj's and its users', with its own rule."""


def rate_limit(name: str) -> str:
    """String: the limit's theoretical arrival time in ms (GCRA); TTL until it is in the past."""
    return f"{PREFIX}:rl:{name}"


RATE_LIMIT_PATTERN = f"{PREFIX}:rl:*"


def concurrency_window(node: str) -> str:
    """Hash of per-second call outcomes of one worker node, ``o:<s>`` / ``f:<s>`` (TTL 2 min)."""
    return f"{PREFIX}:cc:{node}:win"


def concurrency_status(node: str) -> str:
    """Hash: the adaptive controller's view of one worker node (TTL 1 min, refreshed)."""
    return f"{PREFIX}:cc:{node}:status"


CONCURRENCY_STATUS_PATTERN = f"{PREFIX}:cc:*:status"


#: The priority steps of every queue (``broker_transport_options``): 0 is the most urgent.
PRIORITY_STEPS = tuple(range(10))
#: kombu's Redis transport names a queue's list for step ``n > 0`` ``queue + SEP + n``
#: (``kombu.transport.redis.Channel.sep``).
PRIORITY_SEP = "\x06\x16"


def queue_lists(queue: str) -> list[str]:
    """The Redis lists of one queue, a list per priority step (kombu's, not proj's own)."""
    return [queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]


def worker(node: str) -> str:
    """Hash: a live worker's node, queues, pool size and pid, rewritten every few seconds by
    the worker itself (TTL a few intervals: a worker that died drops out)."""
    return f"{PREFIX}:worker:{node}"


WORKER_PATTERN = f"{PREFIX}:worker:*"

CALL_STATS = f"{PREFIX}:stats:calls"
"""Hash: counts of guarded calls by every process (:mod:`proj.guard.callstats`), field
``calls|dependency|outcome``, ``seconds|...``, ``tokens|dependency|model|kind``,
``cost|dependency|model``; no TTL (they only grow, as Prometheus counters do)."""


def concurrency_memory(queues: str) -> str:
    """Hash: the size and the ceiling adaptive workers of these queues (comma-joined, sorted)
    last settled at, so the next worker starts there (TTL 7 days)."""
    return f"{PREFIX}:cc:queues:{queues}:memory"


def batch(batch_id: str, part: str | None = None) -> str:
    """A batch's hash (``part`` None) or one of its parts: items, keys, state, results, errors,
    attempts, leases, delayed, runners (zset: runner id -> lease expiry ms), order,
    positions (index -> the item's places in the request that submitted it). All expire
    PROJ_BATCH_TTL_S after the batch's last update."""
    return f"{PREFIX}:batch:{{{batch_id}}}" + (f":{part}" if part else "")


BATCH_PARTS = (
    "items",
    "keys",
    "state",
    "results",
    "errors",
    "attempts",
    "leases",
    "delayed",
    "runners",
    "order",
    "positions",
)
BATCHES = f"{PREFIX}:batches"  # zset: batch id -> start time


def cache(pipeline: str, key: str) -> str:
    """String: the result of an item with this idempotency key (TTL PROJ_CACHE_TTL_S). Each
    cache key and in-flight marker is read and written by single-key commands (any slot)."""
    return f"{PREFIX}:cache:{pipeline}:{key}"


def inflight(pipeline: str, key: str) -> str:
    """String: JSON of the batch, item and runner computing this key right now (TTL: the item
    lease; a marker whose runner's lease lapsed is taken over at once)."""
    return f"{PREFIX}:inflight:{pipeline}:{key}"


# The dead letters and the quarantine: each store's keys under one hash tag (its scripts and
# transactions touch the entries and their index together).
DLQ = f"{PREFIX}:{{dlq}}"  # hash: entry id -> JSON (input, error, traceback)
DLQ_INDEX = f"{PREFIX}:{{dlq}}:index"  # zset: entry id -> time

QUARANTINE = f"{PREFIX}:{{quarantine}}"  # hash: entry id -> JSON (raw message, queue, reason)
QUARANTINE_INDEX = f"{PREFIX}:{{quarantine}}:index"  # zset: entry id -> time
QUARANTINE_COUNTS = f"{PREFIX}:{{quarantine}}:counts"  # hash: problem kind -> messages ever

BATCH_LEASES = f"{PREFIX}:batches:leases"
"""Zset: batch id -> when the watchdog should look at it again (ms, Redis clock; no TTL). A
hint written after each lease step (:mod:`proj.batch.lease`), removed when the batch is seen
finished: the batch's own hash and runners decide whether it is adopted."""


def parked(lot: str, part: str | None = None) -> str:
    """Deferred task messages of one lot (``breaker:ai``, ...): the zset of entry ids by due
    time (``part`` None), ``msgs`` (hash: id -> signature JSON), ``moving`` (zset: id -> claim
    expiry). One hash tag per lot, so a lot's keys stay together on Redis Cluster."""
    return f"{PREFIX}:parked:{{{lot}}}" + (f":{part}" if part else "")


PARKED_LOTS = f"{PREFIX}:parked:lots"
"""Set of lot names with parked messages (its own slot: :class:`proj.parking.Parking` keeps it
beside a lot's keys with separate commands)."""


def api_task(task_id: str) -> str:
    """String: the task name and API key of a task enqueued through ``proj api`` (TTL
    PROJ_API_TASK_TTL_S): ``GET /v1/tasks/{id}`` answers for these alone."""
    return f"{PREFIX}:api:task:{task_id}"
