"""A batch's state in Redis: its items, who is working on which, results, counters.

Data model (keys in :mod:`proj.keys`; every key expires PROJ_BATCH_TTL_S after the last write)::

    proj:batch:{id}            hash  pipeline, total, next (claim cursor), done, failed, cached,
                                     duplicates, pass (1, then 2 for the retry of failures),
                                     status (running|finished), started, updated, finished,
                                     runners (how many it should have), adopted (restarts by
                                     the watchdog in a row), watch_at (no adoption before, ms)
    proj:batch:{id}:items      hash  index -> item JSON
    proj:batch:{id}:keys       hash  index -> idempotency key
    proj:batch:{id}:order      hash  claim position -> index, when items carry a priority
                                     (highest first; absent: positions are indexes)
    proj:batch:{id}:positions  hash  index -> JSON list of the item's places in the request that
                                     submitted it, when invalid or repeated items make them
                                     differ from its index (``proj api``)
    proj:batch:{id}:state      hash  index -> done | failed
    proj:batch:{id}:results    hash  index -> result JSON (written once: HSETNX)
    proj:batch:{id}:errors     hash  index -> error JSON of its last failure
    proj:batch:{id}:attempts   hash  index -> attempts so far
    proj:batch:{id}:leases     zset  index -> lease expiry ms (claimed, in flight)
    proj:batch:{id}:delayed    zset  index -> ready ms (deferred or waiting to retry)
    proj:batch:{id}:runners    zset  runner id -> lease expiry ms (:mod:`proj.batch.lease`)

Shared by the batches of a pipeline, and the dead letters::

    proj:cache:<pipeline>:<key>     string  result JSON of an idempotency key (PROJ_CACHE_TTL_S)
    proj:inflight:<pipeline>:<key>  string  marker JSON: batch, item, runner computing it now
                                            (TTL the item lease)
    proj:{dlq}, proj:{dlq}:index            dead letters (:mod:`proj.batch.dlq`)

An item is claimed with a lease; a runner that dies leaves leases that expire, or are released
at once when its own lease is seen gone, and any runner (or ``proj batch resume``) claims those
items again. Results are written with HSETNX and the counters move only on that first
write, so an item is counted and stored once however often it is run. The atomic steps are Lua
scripts (:mod:`proj.batch.scripts`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis

from proj import keys
from proj.batch import dlq, scripts
from proj.batch.model import Progress, claim_order
from proj.batch.shared import SharedKeys
from proj.resilience.lua import text as _s

__all__ = ["BatchStore", "Progress", "claim_order"]


class BatchStore(SharedKeys):
    """Async access to batches in Redis (one instance per process and event loop): every key
    of a batch, the result cache and in-flight markers its items share with other batches, and
    its dead letters. Runners, the submitter and watchers go through it, never Redis itself."""

    def __init__(self, client: aioredis.Redis, ttl_s: int) -> None:
        self.r = client
        self.ttl_s = ttl_s
        self._create = client.register_script(scripts.CREATE)
        self._claim = client.register_script(scripts.CLAIM)
        self._complete = client.register_script(scripts.COMPLETE)
        self._delay = client.register_script(scripts.DELAY)
        self._second = client.register_script(scripts.SECOND_PASS)
        self._finish = client.register_script(scripts.FINISH)

    @staticmethod
    def k(batch_id: str, part: str | None = None) -> str:
        return keys.batch(batch_id, part)

    async def create(
        self,
        batch_id: str,
        pipeline: str,
        items: list[dict[str, Any]],
        item_keys: list[str],
        *,
        duplicates: int,
        urgent: bool,
        now: float,
        fresh: bool = False,
        meta: Mapping[str, str] | None = None,
        positions: Sequence[list[int]] | None = None,
    ) -> bool:
        """Store a new batch, all of it or nothing (one script: two submitters of one id
        cannot both write it, and a crash leaves no half-made batch). ``meta``: more fields of
        its hash (the API's request hash, callback URL). ``positions``: each item's places in the
        request it came in (when invalid items or duplicates left out make them differ from its
        index). Returns False if a batch with this id already exists."""
        fields: dict[str, Any] = {
            **(meta or {}),
            "pipeline": pipeline,
            "total": len(items),
            "next": 0,
            "done": 0,
            "failed": 0,
            "cached": 0,
            "duplicates": duplicates,
            "pass": 1,
            "status": "running",
            "urgent": int(urgent),
            "fresh": int(fresh),
            "started": now,
            "updated": int(now * 1000),
        }
        order = claim_order(items) or []
        # Strings already: Lua would print a float with 14 digits.
        args: list[str | int] = [
            self.ttl_s,
            json.dumps({k: str(v) for k, v in fields.items()}),
            len(items),
            "1" if order else "0",
            "1" if positions else "0",
        ]
        args += [json.dumps(item) for item in items]
        args += [*item_keys, *order, *(json.dumps(p) for p in positions or ())]
        created = await self._create(
            keys=self._keys(batch_id, None, "items", "keys", "order", "positions"), args=args
        )
        if not created:
            return False
        await self.r.zadd(keys.BATCHES, {batch_id: now})  # the listing, in another slot
        return True

    def _keys(self, batch_id: str, *parts: str | None) -> list[str]:
        return [self.k(batch_id, p) for p in parts]

    async def claim(self, batch_id: str, n: int, lease_s: float) -> list[int]:
        out = await self._claim(
            keys=self._keys(batch_id, None, "leases", "delayed", "state", "order"),
            args=[n, int(lease_s * 1000), self.ttl_s],
        )
        return [int(_s(i)) for i in out]

    async def load(
        self, batch_id: str, indexes: list[int]
    ) -> list[tuple[int, dict[str, Any], str]]:
        """(index, item, idempotency key) of claimed items."""
        if not indexes:
            return []
        items = await self.r.hmget(self.k(batch_id, "items"), indexes)
        ks = await self.r.hmget(self.k(batch_id, "keys"), indexes)
        return [
            (i, json.loads(it), _s(k))
            for i, it, k in zip(indexes, items, ks, strict=True)
            if it is not None
        ]

    async def complete(
        self, batch_id: str, outcomes: Iterable[tuple[int, str, str]]
    ) -> dict[str, str]:
        args: list[Any] = [self.ttl_s]
        for idx, how, payload in outcomes:
            args += [idx, how, payload]
        vals = await self._complete(
            keys=self._keys(batch_id, None, "leases", "state", "results", "errors"), args=args
        )
        return dict(
            zip(("done", "failed", "total", "pass", "status"), (_s(v) for v in vals), strict=True)
        )

    async def delay(self, batch_id: str, idx: int, wait_s: float, *, attempt: bool) -> int:
        return int(
            await self._delay(
                keys=self._keys(batch_id, "leases", "delayed", "attempts"),
                args=[idx, int(wait_s * 1000), "1" if attempt else "0"],
            )
        )

    async def count_attempt(self, batch_id: str, idx: int) -> int:
        """One more attempt of item ``idx`` (a failure); returns its attempts so far."""
        return int(await self.r.hincrby(self.k(batch_id, "attempts"), str(idx), 1))

    async def second_pass(self, batch_id: str) -> int:
        return int(
            await self._second(
                keys=self._keys(batch_id, None, "state", "delayed", "attempts", "leases")
            )
        )

    async def finish(self, batch_id: str) -> bool:
        return bool(await self._finish(keys=[self.k(batch_id)]))

    async def expire_leases(self, batch_id: str) -> int:
        """Make every current lease claimable now (``proj batch resume``)."""
        leases: list[bytes] = await self.r.zrange(self.k(batch_id, "leases"), 0, -1)  # type: ignore[assignment]
        if leases:
            await self.r.zadd(self.k(batch_id, "leases"), dict.fromkeys(leases, 0))
        return len(leases)

    async def progress(self, batch_id: str) -> Progress | None:
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(self.k(batch_id))
        pipe.zcard(self.k(batch_id, "leases"))
        pipe.zcard(self.k(batch_id, "delayed"))
        raw, leases, delayed = await pipe.execute()
        if not raw:
            return None
        h = {_s(k): _s(v) for k, v in raw.items()}
        return Progress(
            batch_id,
            h.get("pipeline", "?"),
            int(h.get("total", 0)),
            int(h.get("done", 0)),
            int(h.get("failed", 0)),
            int(h.get("cached", 0)),
            int(h.get("duplicates", 0)),
            int(leases),
            int(delayed),
            h.get("status", "?"),
            float(h.get("started", 0)),
            int(h.get("updated", 0)) / 1000,
            float(h["finished"]) / 1000 if h.get("finished") else None,
            float(h["finalized"]) if h.get("finalized") else None,
        )

    async def results(self, batch_id: str) -> dict[int, Any]:
        raw = await self.r.hgetall(self.k(batch_id, "results"))
        return {int(_s(k)): json.loads(v) for k, v in raw.items()}

    async def errors(self, batch_id: str) -> dict[int, Any]:
        raw = await self.r.hgetall(self.k(batch_id, "errors"))
        state = await self.r.hgetall(self.k(batch_id, "state"))
        failed = {_s(k) for k, v in state.items() if _s(v) == "failed"}
        return {int(_s(k)): json.loads(v) for k, v in raw.items() if _s(k) in failed}

    async def dead_letter(self, batch_id: str, pipeline: str, errors: Mapping[int, Any]) -> int:
        """Put the items that failed for good (``errors``: index -> error JSON as recorded)
        in the dead-letter store with their input; returns how many."""
        if not errors:
            return 0
        raw = await self.r.hmget(self.k(batch_id, "items"), [str(i) for i in errors])
        entries = [
            dlq.entry(batch_id, pipeline, idx, None if it is None else dict(json.loads(it)), err)
            for (idx, err), it in zip(errors.items(), raw, strict=True)
        ]
        await dlq.add_async(self.r, entries)
        return len(entries)

    async def batch_ids(self, limit: int = 50) -> list[str]:
        return [_s(b) for b in await self.r.zrevrange(keys.BATCHES, 0, limit - 1)]

    async def mark_finalized(self, batch_id: str) -> None:
        """The batch's last step has run: a watcher may read its summary now."""
        await self.set_meta(batch_id, finalized=str(time.time()))

    async def settled(
        self, batch_id: str, start: int, count: int, *, finished: bool
    ) -> list[tuple[int, list[int], str, Any]]:
        """Items ``start``, ``start + 1``, ... that are settled for good, up to ``count`` of
        them and up to the first that is not: (index, its positions in the request, "done" |
        "failed", result or error). Before the batch has ``finished``, a failed item is not
        settled (its second pass may still succeed)."""
        idx = list(range(start, start + count))
        states = await self.r.hmget(self.k(batch_id, "state"), idx)
        got: list[tuple[int, str]] = []
        for i, state in zip(idx, states, strict=True):
            if state is None or (not finished and _s(state) != "done"):
                break
            got.append((i, _s(state)))
        if not got:
            return []
        at = [i for i, _ in got]
        pipe = self.r.pipeline(transaction=False)  # one round trip, one slot
        for part in ("results", "errors", "positions"):
            pipe.hmget(self.k(batch_id, part), at)
        results, errors, places = await pipe.execute()
        out = []
        for (i, st), res, err, pos in zip(got, results, errors, places, strict=True):
            raw = res if st == "done" else err
            value = None if raw is None else json.loads(raw)
            out.append((i, [i] if pos is None else json.loads(pos), st, value))
        return out

    async def set_meta(self, batch_id: str, **fields: str) -> None:
        """More fields of a batch's hash (its summary, how its callback went), which then
        expires PROJ_BATCH_TTL_S from now, as after every write."""
        pipe = self.r.pipeline(transaction=True)  # one key
        pipe.hset(self.k(batch_id), mapping=dict(fields))  # type: ignore[arg-type]
        pipe.expire(self.k(batch_id), self.ttl_s)
        await pipe.execute()

    async def meta(self, batch_id: str, field: str) -> str | None:
        v = await self.r.hget(self.k(batch_id), field)
        return None if v is None else _s(v)

    async def metas(self, batch_id: str, *fields: str) -> dict[str, str]:
        """Those of these fields of a batch's hash that are set (one HMGET)."""
        values = await self.r.hmget(self.k(batch_id), list(fields))
        return {f: _s(v) for f, v in zip(fields, values, strict=True) if v is not None}
