"""Runner leases: which runners of a batch are alive, and who starts a batch whose runners died.

A runner holds a lease in ``proj:batch:{id}:runners`` (zset: runner id -> expiry ms on the
Redis clock) and renews it every third of PROJ_BATCH_RUNNER_LEASE_S. The batch's hash keeps
``watch_at`` (ms): a grace for runners on their way (dispatched, not yet joined). The batch
may be adopted once it has no live runner and its grace is past; every worker's watchdog
(:mod:`proj.batch.watchdog`) looks for such batches, and one atomic step adopts one, so one
worker re-dispatches it.

Each step is one Lua script over one batch's keys (one hash slot on Redis Cluster,
:mod:`proj.batch.lease_lua`). It returns when the watchdog should look at the batch next (the
latest runner lease or the grace), which the caller writes to ``proj:batches:leases`` with a
separate command, or that the batch is finished or gone (the caller removes it). That index is
a hint, stale in either direction for a moment (two callers' writes may land in either order;
on Redis Cluster its node's clock is not the batch's): a look too early finds a live runner or
a grace, and the adoption step writes the right time back; a look too late (a grace written
over the lease of a runner that had just joined) waits at most that grace. A batch leaves the
index only once a step found it finished or gone, for good; a finished batch written back late
is removed at its next look; a running one is written back by each heartbeat of its runners.

A runner is dead once its lease is gone (lapsed, or taken by the runner that replaces it).
Whoever notices a dead runner (a runner joining or renewing, the watchdog adopting) makes every
item lease of the batch claimable now: the dead runner's items run again at once, and a live
runner's items, claimed again, find its in-flight marker and wait for its result. In-flight
markers name their runner, so the marker of a dead runner is taken over at once instead of
waited out (PROJ_BATCH_LEASE_S). A marker is in another slot than its runner's lease: the
lease is read first, then the marker is swapped if it still holds what was read. A runner
whose lease lapsed and that renews it between those two steps (its heartbeat takes a lapsed
lease again) goes on computing an item whose marker is now another runner's: that item is
computed twice and stored once (results are written with HSETNX and counted on that first
write; both runners cache the same input's result).

| runner | in ``:runners`` | its items | its markers |
|---|---|---|---|
| alive | expiry in the future, renewed | leased to it | kept |
| dead (SIGKILL, lost Redis, crashed) | expired or removed | claimable again | taken over |
| surplus (the batch already has its runners) | never added | - | - |

A batch stays in the index after it is finished until its last step (dead letters, the
pipeline's summary, the completion callback) has run: if the runner that finished it died in
that step, the watchdog adopts it like any other and one runner runs the step again.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from proj import keys
from proj.batch import lease_lua as lua
from proj.resilience.lua import Arg, text

logger = logging.getLogger("proj.batch")

#: What :meth:`RunnerLeases.join` answers a runner that is to run only the last step of a
#: finished batch (the runner that finished it died in it).
LAST_STEP = 2

#: A last step adopted this many times in a row is given up (``last_step_failed``).
LAST_STEP_TRIES = 5

#: The adoption grace never grows past this (10 minutes).
ADOPTION_GRACE_CAP_S = 600.0


def new_runner_id(node: str | None) -> str:
    """A runner's identity: its worker node, process and a random part (a redelivered
    message runs as a new runner)."""
    return f"{node or 'local'}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


def heartbeat_s(lease_s: float) -> float:
    """How often a runner renews a lease of ``lease_s``: three chances before it lapses."""
    return lease_s / 3


@dataclass(frozen=True)
class Marker:
    """Who computes an item's key right now: ``proj:inflight:<pipeline>:<key>``'s value."""

    batch_id: str
    index: int
    runner: str

    def dumps(self) -> str:
        return json.dumps({"batch": self.batch_id, "index": self.index, "runner": self.runner})

    @classmethod
    def loads(cls, raw: object) -> Marker | None:
        """The marker in ``raw``; None for none, or one that names no runner."""
        if raw is None:
            return None
        try:
            d = json.loads(text(raw))
            return cls(str(d["batch"]), int(d["index"]), str(d["runner"]))
        except (ValueError, TypeError, KeyError):
            return None


def _ms(s: float) -> int:
    return int(s * 1000)


async def _index(r: aioredis.Redis, batch_id: str, due: Any) -> None:
    """Write a step's ``due`` to the watchdog's index: a time (ms), or -1 the batch leaves it;
    0 leaves the index as it is."""
    if int(due) > 0:
        await r.zadd(keys.BATCH_LEASES, {batch_id: int(due)})
    elif int(due) < 0:
        await r.zrem(keys.BATCH_LEASES, batch_id)


def _index_sync(r: redis.Redis, batch_id: str, due: Any) -> None:
    if int(due) > 0:
        r.zadd(keys.BATCH_LEASES, {batch_id: int(due)})
    elif int(due) < 0:
        r.zrem(keys.BATCH_LEASES, batch_id)


class RunnerLeases:
    """The lease steps, on an asyncio client (runners, the submitter) or a synchronous one
    (the watchdog). Each runs one script in the batch's slot, then writes the index."""

    def __init__(self, lease_s: float, ttl_s: int) -> None:
        self.lease_ms = _ms(lease_s)
        self.ttl_s = ttl_s

    @staticmethod
    def _keys(batch_id: str) -> list[str]:
        return [keys.batch(batch_id, p) for p in (None, "runners", "leases")]

    async def join(
        self,
        r: aioredis.Redis,
        batch_id: str,
        runner: str,
        *,
        replaces: str | None = None,
        forced: bool = False,
    ) -> int:
        """1 joined, 2 joined to run the last step of a finished batch whose runner died in it,
        0 surplus (the batch has its runners), -1 done or gone."""
        args: list[Arg] = [runner, self.lease_ms, replaces or "", "1" if forced else "0"]
        joined, due = await lua.JOIN.arun(r, self._keys(batch_id), [*args, self.ttl_s])
        await _index(r, batch_id, due)
        return int(joined)

    async def heartbeat(self, r: aioredis.Redis, batch_id: str, runner: str) -> tuple[bool, int]:
        """(whether its lease had lapsed, dead runners found)."""
        lapsed, dead, due = await lua.HEARTBEAT.arun(
            r, self._keys(batch_id), [runner, self.lease_ms]
        )
        await _index(r, batch_id, due)
        return bool(lapsed), int(dead)

    async def leave(self, r: aioredis.Redis, batch_id: str, runner: str, *, orphaned: bool) -> None:
        due = await lua.LEAVE.arun(r, self._keys(batch_id), [runner, "1" if orphaned else "0"])
        await _index(r, batch_id, due)

    async def expect(self, r: aioredis.Redis, batch_id: str, runners: int | None = None) -> None:
        """Runners were dispatched: they have a lease's time to start."""
        args: list[Arg] = [self.lease_ms, "" if runners is None else runners]
        await _index(r, batch_id, await lua.EXPECT.arun(r, self._keys(batch_id), args))

    async def take_marker(
        self, r: aioredis.Redis, marker_key: str, seen: object, new: Marker, ttl_ms: int
    ) -> bool:
        """Make ``marker_key`` ``new``'s if it still holds ``seen`` (None: no marker) and the
        runner it names is dead. A marker that names no runner is waited out."""
        owner = Marker.loads(seen)
        if seen is not None and owner is None:
            return False
        if owner is not None:
            runners = keys.batch(owner.batch_id, "runners")
            if int(await lua.LIVE.arun(r, [runners], [owner.runner])):
                return False
        args: list[Arg] = ["" if seen is None else text(seen), new.dumps(), ttl_ms]
        return bool(await lua.SWAP.arun(r, [marker_key], args))

    # --- the watchdog (synchronous) ------------------------------------------------------
    def orphans(self, r: redis.Redis, limit: int = 20) -> list[str]:
        """Batches the index says may have lost their runners (:meth:`adopt` decides)."""
        return [text(b) for b in lua.ORPHANS.run(r, [keys.BATCH_LEASES], [limit])]

    def adopt(self, r: redis.Redis, batch_id: str) -> tuple[int, bool, int] | None:
        """(runners to dispatch, urgent, adoptions in a row) if this caller adopted the batch."""
        args: list[Arg] = [self.lease_ms, _ms(ADOPTION_GRACE_CAP_S), LAST_STEP_TRIES]
        out: list[Any] = lua.ADOPT.run(r, self._keys(batch_id), args)
        _index_sync(r, batch_id, -1 if int(out[0]) == -2 else out[0])
        if int(out[0]) == -2:
            logger.error(
                "batch %s: its last step (dead letters, summary, callback) failed %d times in "
                "a row; given up (the batch is finished, its results are kept)",
                batch_id,
                LAST_STEP_TRIES,
            )
        if len(out) == 1:
            return None
        return int(out[1]), bool(int(out[2])), int(out[3])
