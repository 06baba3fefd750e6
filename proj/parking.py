"""The parking store: deferred task messages waiting in Redis, by lot, until they are due.

Per lot (see :mod:`proj.resilience.parking`), all under one hash tag:
``proj:parked:{lot}`` (zset: entry id -> due time, ms), ``proj:parked:{lot}:msgs`` (hash: entry
id -> the task's signature as JSON) and ``proj:parked:{lot}:moving`` (zset: entry id -> when a
mover's claim lapses, ms). ``proj:parked:lots`` is the set of lots movers go through.

A lot's keys change together (one script or transaction in the lot's slot); the set of lots
lives in another slot on Redis Cluster, so it is kept with separate commands, ordered so that
a parked message is never left in a lot the set lacks (:meth:`Parking.park`).

A mover *claims* due entries (one Lua step: out of the due zset, into ``moving`` with a
lease), publishes them, then *releases* them. A mover that dies between the two leaves its
claims to lapse; the next tick of any mover puts them back, due at once. A message published
twice that way is recognised by its task id when it runs (see ``ProjTask``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import redis

from proj import keys
from proj.resilience.lua import LuaScript, text

# Claim up to ARGV[2] entries due by ARGV[1] (ms), leased until ARGV[3] (ms).
# KEYS[1] due zset, KEYS[2] messages hash, KEYS[3] moving zset. Returns [id, json, id, json...]
_CLAIM = LuaScript(
    """
local out = {}
local n = tonumber(ARGV[2])
if n <= 0 then return out end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, n)) do
  local v = redis.call('HGET', KEYS[2], id)
  redis.call('ZREM', KEYS[1], id)
  if v then
    redis.call('ZADD', KEYS[3], ARGV[3], id)
    table.insert(out, id)
    table.insert(out, v)
  end
end
return out
"""
)

# Claims that lapsed by ARGV[1] (ms) are due again at once. KEYS as above. Returns how many.
_RECOVER = LuaScript(
    """
local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[3], id)
  if redis.call('HEXISTS', KEYS[2], id) == 1 then
    redis.call('ZADD', KEYS[1], ARGV[1], id)
  end
end
return #ids
"""
)


def _keys(lot: str) -> list[str]:
    return [keys.parked(lot), keys.parked(lot, "msgs"), keys.parked(lot, "moving")]


class Parking:
    """Synchronous access: tasks park, movers claim and release, ``proj status`` counts."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def park(self, lot: str, due_s: float, message: str) -> str:
        """Keep ``message`` (a task signature, serialised by the caller) until ``due_s``
        (epoch seconds)."""
        # The set of lots is in another slot: the lot joins it before and after its message
        # is stored (messages enter a lot only here). A message would be stranded only if the
        # last write to the set for its lot were a drop_empty's SREM. That drop looked after
        # its SREM and found no message (else it added the lot back), so the message was
        # stored after the SREM, and this second add came later still: the SREM was not the
        # last write. The first add covers a parker that dies before its second (unless a drop
        # falls in between: then the next park in that lot brings the lot back).
        entry_id = uuid.uuid4().hex
        due, msgs, _ = _keys(lot)
        self.r.sadd(keys.PARKED_LOTS, lot)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(msgs, entry_id, message)
        pipe.zadd(due, {entry_id: int(due_s * 1000)})
        pipe.execute()
        self.r.sadd(keys.PARKED_LOTS, lot)
        return entry_id

    def lots(self) -> list[str]:
        return sorted(text(v) for v in self.r.smembers(keys.PARKED_LOTS))

    def claim(self, lot: str, now_s: float, n: int, lease_s: float) -> list[tuple[str, str]]:
        """Up to ``n`` entries due by ``now_s``, each claimed by this caller alone."""
        now_ms = int(now_s * 1000)
        raw = _CLAIM.run(self.r, _keys(lot), [now_ms, n, now_ms + int(lease_s * 1000)])
        return [(text(raw[i]), text(raw[i + 1])) for i in range(0, len(raw), 2)]

    def release(self, lot: str, entry_ids: Sequence[str]) -> None:
        """Forget entries whose messages were published."""
        if not entry_ids:
            return
        _, msgs, moving = _keys(lot)
        pipe = self.r.pipeline(transaction=True)
        pipe.hdel(msgs, *entry_ids)
        pipe.zrem(moving, *entry_ids)
        pipe.execute()

    def unclaim(self, lot: str, entry_ids: Sequence[str], due_s: float) -> None:
        """Put claimed entries back (their publish failed), due at ``due_s``."""
        if not entry_ids:
            return
        due, _, moving = _keys(lot)
        pipe = self.r.pipeline(transaction=True)
        pipe.zrem(moving, *entry_ids)
        pipe.zadd(due, dict.fromkeys(entry_ids, int(due_s * 1000)))
        pipe.execute()

    def recover(self, lot: str, now_s: float) -> int:
        """Claims that lapsed (their mover died) are due again at once."""
        return int(_RECOVER.run(self.r, _keys(lot), [int(now_s * 1000)]))

    def counts(self) -> dict[str, int]:
        """Entries waiting per lot (due or not, claimed or not)."""
        lots = self.lots()
        pipe = self.r.pipeline(transaction=False)
        for lot in lots:
            pipe.hlen(keys.parked(lot, "msgs"))
        return {lot: int(n) for lot, n in zip(lots, pipe.execute(), strict=True)}

    def drop_empty(self, lot: str) -> None:
        """Forget a lot with nothing in it (a new park adds it back)."""
        # Out of the set first, then look (see park): a message stored before the look is
        # seen and the lot goes back; one stored after it is followed by its parker's add.
        self.r.srem(keys.PARKED_LOTS, lot)
        if self.r.exists(keys.parked(lot, "msgs")):
            self.r.sadd(keys.PARKED_LOTS, lot)
