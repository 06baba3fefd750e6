"""Counts of the calls each process makes through the guarded client, for ``proj metrics``:
per dependency, outcome and pipeline, calls and seconds; per dependency, model and pipeline (AI
calls), tokens and cost in US dollars; per breaker, calls refused; per global rate limit,
grants, seconds waited and callers deferred; and per queue and category, the task runs of
every worker: how they ended, their run time, their wait from publish to start (in buckets),
and the cost of their AI calls (:mod:`proj.figures` reads them back).

The *pipeline* of a call is the work it was made for: the batch pipeline whose item it computes
(``leads``, ``company``, ...), else the Celery task running it (``proj.leads.enrich_lead``, a
user's ``billing.charge``), else ``-``. The worker layer sets it (the task base and the batch
runner); :func:`working_on` sets it for other code. It is a context variable, so it follows a
call onto the event loop and into the tasks started there.

Counted in memory, added to one Redis hash by the flusher thread (:mod:`proj.guard.flusher`),
so a call costs no Redis round trip.

Every label comes from configuration (declared dependencies, the models asked for, pipeline and
task names), never from traffic, so the hash stays small. The hash has no TTL: its counts only
grow, as Prometheus counters do, and ``proj metrics`` reads it whole at each scrape.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from proj import keys
from proj.figures import wait_bucket
from proj.guard import connections, flusher

logger = logging.getLogger("proj.guard")

SEP = "|"  # dependency and model names never hold it (checked by the metrics reader)
NO_PIPELINE = "-"

#: What the calls made here are for (see the module's docstring).
PIPELINE: ContextVar[str] = ContextVar("proj_pipeline", default=NO_PIPELINE)
#: The queue and category of the task making the calls (its cost counts for them).
ROUTE: ContextVar[tuple[str, str] | None] = ContextVar("proj_route", default=None)


@contextmanager
def working_on(pipeline: str) -> Iterator[None]:
    """Count the calls made inside (on this thread or task) for ``pipeline``."""
    token = PIPELINE.set(pipeline)
    try:
        yield
    finally:
        PIPELINE.reset(token)


class CallStats:
    """The counts of one process, sent in batches."""

    #: Figures only: a second late is fine, and a busy worker sends one pipeline a second,
    #: not twenty (:mod:`proj.guard.flusher`).
    flush_interval_s = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._counts: defaultdict[str, float] = defaultdict(float)
        flusher.register(self)

    def _add(self, *counts: tuple[str, float]) -> None:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's counts are not ours
                self._pid, self._counts = os.getpid(), defaultdict(float)
            for field, n in counts:
                self._counts[field] += n
        flusher.poke()

    def call(self, dependency: str, outcome: str, seconds: float) -> None:
        """One call ended: ``outcome`` success, failure or ignored (a 429, our own 4xx)."""
        labels = f"{dependency}{SEP}{outcome}{SEP}{PIPELINE.get()}"
        self._add((f"calls{SEP}{labels}", 1), (f"seconds{SEP}{labels}", seconds))

    def usage(
        self, dependency: str, model: str, prompt: int, completion: int, cost: float | None
    ) -> None:
        """Tokens and cost of one AI call (no cost for a model without a price)."""
        labels = f"{dependency}{SEP}{model}{SEP}{PIPELINE.get()}"
        self._add(
            (f"tokens{SEP}{labels}{SEP}prompt", prompt),
            (f"tokens{SEP}{labels}{SEP}completion", completion),
            *([(f"cost{SEP}{labels}", cost)] if cost is not None else []),
            *self._route_cost(cost),
        )

    @staticmethod
    def _route_cost(cost: float | None) -> list[tuple[str, float]]:
        route = ROUTE.get()
        if cost is None or route is None:
            return []
        return [(f"qcost{SEP}{route[0]}{SEP}{route[1]}", cost)]

    def task(
        self, queue: str, category: str, outcome: str, wait_s: float | None, run_s: float
    ) -> None:
        """A task run ended on a worker: ``outcome`` succeeded, failed, retried or deferred;
        ``wait_s`` from its publish to its start, when the message says when it was sent."""
        base = f"{queue}{SEP}{category}"
        counts = [(f"truns{SEP}{base}{SEP}{outcome}", 1.0), (f"trun_s{SEP}{base}", run_s)]
        if wait_s is not None:
            counts += [(f"twait{SEP}{base}{SEP}{wait_bucket(wait_s)}", 1.0)]
            counts += [(f"twait_s{SEP}{base}", wait_s)]
        self._add(*counts)

    def refused(self, breaker: str) -> None:
        """A breaker refused a call (open, or half-open with its probe out)."""
        self._add((f"refused{SEP}{breaker}", 1))

    def granted(self, limit: str, waited_s: float) -> None:
        """A global rate limit let a call through after ``waited_s``."""
        self._add((f"granted{SEP}{limit}", 1), (f"waited{SEP}{limit}", waited_s))

    def deferred(self, limit: str) -> None:
        """A caller's slot was further off than it may wait (:class:`RateLimitWait`)."""
        self._add((f"deferred{SEP}{limit}", 1))

    def flush(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, defaultdict(float)
        if not counts:
            return
        try:
            pipe = connections.sync_client().pipeline(transaction=False)
            for field, n in counts.items():
                pipe.hincrbyfloat(keys.CALL_STATS, field, n)
            pipe.execute()
        except Exception as exc:  # Redis away: these counts are lost, the calls are not
            logger.debug("call stats not sent: %s", exc)


_stats: CallStats | None = None
_stats_lock = threading.Lock()


def stats() -> CallStats:
    """This process's counts."""
    global _stats
    if _stats is None:
        with _stats_lock:
            if _stats is None:
                _stats = CallStats()
    return _stats


def read(client: Any) -> dict[tuple[str, ...], float]:
    """The counts of every process, from the hash: field parts -> value."""
    raw = client.hgetall(keys.CALL_STATS)
    out: dict[tuple[str, ...], float] = {}
    for k, v in raw.items():
        name = k.decode() if isinstance(k, bytes) else str(k)
        out[tuple(name.split(SEP))] = float(v)
    return out
