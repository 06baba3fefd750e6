"""Keys an earlier version wrote, moved to the names this version reads.

Hash tags (:mod:`proj.keys`) renamed keys: a breaker's ``proj:cb:<name>``, ``...:win`` and
``...:probes`` became ``proj:cb:{<name>}...``, a batch's ``proj:batch:<id>`` and its parts
``proj:batch:{<id>}...``, the dead letters ``proj:dlq`` and ``proj:dlq:index``
``proj:{dlq}...``, the quarantine ``proj:quarantine``, ``...:index`` and ``...:counts``
``proj:{quarantine}...``. Unmoved, what they hold (an open breaker, a running batch, dead
letters, quarantined messages) would no longer be read.

:func:`upgrade` renames each such key whose new name is free (RENAMENX: its TTL goes with
it, and a key already written under the new name is never overwritten; the old one is then
left where it is, and counted). Run again, it finds nothing to move, so every worker runs it
at start (:func:`upgrade_quietly`). It is for one Redis: earlier versions did not run on
Redis Cluster (and a key cannot be renamed into another slot there).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import redis

from proj import keys
from proj.resilience.lua import text

logger = logging.getLogger("proj.keys")

_FIXED = {
    f"{keys.PREFIX}:dlq": keys.DLQ,
    f"{keys.PREFIX}:dlq:index": keys.DLQ_INDEX,
    f"{keys.PREFIX}:quarantine": keys.QUARANTINE,
    f"{keys.PREFIX}:quarantine:index": keys.QUARANTINE_INDEX,
    f"{keys.PREFIX}:quarantine:counts": keys.QUARANTINE_COUNTS,
}
_BREAKER_HEAD = f"{keys.PREFIX}:cb:"
_BATCH_HEAD = f"{keys.PREFIX}:batch:"
#: Where legacy breaker and batch keys are looked for (SCAN).
PATTERNS = (_BREAKER_HEAD + "*", _BATCH_HEAD + "*")


def new_name(key: str) -> str | None:
    """The name this version gives the legacy key ``key``; None for any other key (one of
    this version's, with a hash tag, or not proj's). A part is told by its suffix (``:win``,
    ``:probes``; a batch part's name): a breaker or batch whose own name ends so would be
    taken for a part."""
    if key in _FIXED:
        return _FIXED[key]
    for head in (_BREAKER_HEAD, _BATCH_HEAD):
        rest = key[len(head) :] if key.startswith(head) else ""
        if rest and not rest.startswith("{"):
            return _breaker(rest) if head == _BREAKER_HEAD else _batch(rest)
    return None


def _breaker(rest: str) -> str:
    name, _, part = rest.rpartition(":")
    if name and part == "win":
        return keys.breaker_window(name)
    if name and part == "probes":
        return keys.breaker_probes(name)
    return keys.breaker(rest)


def _batch(rest: str) -> str:
    batch_id, _, part = rest.rpartition(":")
    if batch_id and part in keys.BATCH_PARTS:
        return keys.batch(batch_id, part)
    return keys.batch(rest)


def _legacy_keys(client: redis.Redis) -> Iterator[str]:
    yield from _FIXED
    for pattern in PATTERNS:
        for key in client.scan_iter(match=pattern, count=1000):
            yield text(key)


def upgrade(client: redis.Redis) -> tuple[int, int]:
    """Move every legacy key whose new name is free: (keys moved, legacy keys left because
    their new name is taken)."""
    moved = kept = 0
    for old in _legacy_keys(client):
        new = new_name(old)
        if new is None:
            continue
        try:
            if client.renamenx(old, new):
                moved += 1
            else:
                kept += 1
        except redis.ResponseError:  # no such key: none was written, or another worker moved it
            continue
    return moved, kept


def upgrade_quietly(client: redis.Redis) -> None:
    """:func:`upgrade` at a worker's start, once per Redis (``proj:keys:version`` marks it
    done, so later starts do not scan the keyspace again): one line if it moved anything, one
    if Redis cannot be reached (the worker starts all the same; its next start tries again)."""
    try:
        if client.get(keys.KEYS_VERSION) == str(keys.VERSION).encode():
            return
        moved, kept = upgrade(client)
        client.set(keys.KEYS_VERSION, keys.VERSION)
    except (redis.RedisError, OSError) as exc:
        logger.warning("keys of earlier versions not checked: Redis unreachable (%s)", exc)
        return
    if moved or kept:
        left = f"; {kept} left under the old name (the new one holds data already)" if kept else ""
        level = logging.WARNING if kept else logging.INFO
        logger.log(level, "moved %d Redis key(s) of an earlier version to new names%s", moved, left)
