"""A submitted batch as its submitter holds it: its id, what was rejected, and a watch.

Each call is one event loop and one Redis connection; a watch (``wait``) keeps both for the
whole watch and reconnects after a lost connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from proj.batch.progress import with_store
from proj.batch.store import BatchStore, Progress
from proj.errors import ProjError
from proj.pipelines.validation import Rejected
from proj.resilience.backoff import Backoff
from proj.settings import Settings, get_settings

#: A finished batch's last step (summary, dead letters) runs right after it is marked
#: finished; a watcher waits for it this long at most, plus the time the watchdog takes to
#: send another runner when the first died in it (:func:`finalize_wait_s`).
FINALIZE_WAIT_S = 30.0


def finalize_wait_s(settings: Settings) -> float:
    """How long after a batch finished a watcher waits for its last step: a runner's lease to
    lapse twice (the one that died in it, and one sent again) and a watchdog interval."""
    b = settings.batch
    return FINALIZE_WAIT_S + 2 * b.runner_lease_s + b.watchdog_interval_s


def reconnect_delay_s(failures: int, interval_s: float, cap_s: float = 2.0) -> float:
    """How long a watcher waits before its next try after ``failures`` failed polls in a row:
    the poll interval, doubling, at most ``cap_s``."""
    return Backoff(interval_s, cap_s).delay(failures)


@dataclass
class BatchHandle:
    """A submitted batch. Everything it knows lives in Redis, so any process can watch it."""

    batch_id: str
    rejected: list[Rejected] = field(default_factory=list)
    accepted: int = 0
    duplicates: int = 0
    existing: bool = False  # the id was already submitted: nothing new was enqueued

    @property
    def _settings(self) -> Settings:
        return get_settings()

    async def _progress(self, store: BatchStore) -> Progress:
        p = await store.progress(self.batch_id)
        if p is None:
            raise ProjError(f"batch {self.batch_id!r} not found (expired, or never submitted)")
        return p

    def progress(self) -> Progress:
        return with_store(self._progress, self._settings)

    def report(self) -> tuple[Progress, dict[int, Any]]:
        """The batch's progress and its failures (index -> error), on one connection."""

        async def both(store: BatchStore) -> tuple[Progress, dict[int, Any]]:
            return await self._progress(store), await store.errors(self.batch_id)

        return with_store(both, self._settings)

    def wait(
        self,
        timeout_s: float | None = None,
        *,
        interval_s: float = 0.25,
        on_progress: Callable[[Progress], None] | None = None,
        on_connection: Callable[[Exception | None], None] | None = None,
    ) -> Progress:
        """Poll until the batch is finished and its last step has run; calls ``on_progress`` at
        each poll.

        One event loop and one Redis connection for the whole watch. A lost connection is
        tried again (see :func:`reconnect_delay_s`) until ``timeout_s``; ``on_connection``
        hears the error when it is lost and None when it is back."""

        last_step_wait = finalize_wait_s(self._settings)

        async def watch(store: BatchStore) -> Progress:
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            failures = 0
            while True:
                try:
                    p = await self._progress(store)
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    failures += 1
                    if failures == 1 and on_connection is not None:
                        on_connection(exc)
                    if deadline is not None and time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(reconnect_delay_s(failures, interval_s))
                    continue
                if failures:
                    failures = 0
                    if on_connection is not None:
                        on_connection(None)
                if on_progress is not None:
                    on_progress(p)
                if p.status == "finished" and (
                    p.finalized is not None or time.time() - (p.finished or 0) > last_step_wait
                ):
                    return p  # and its summary is stored (or its last step is not coming)
                if deadline is not None and time.monotonic() > deadline:
                    msg = f"batch {self.batch_id} not finished after {timeout_s}s: {p}"
                    raise TimeoutError(msg)
                await asyncio.sleep(interval_s)

        return with_store(watch, self._settings)

    def results(self) -> dict[int, Any]:
        return with_store(lambda s: s.results(self.batch_id), self._settings)

    def errors(self) -> dict[int, Any]:
        return with_store(lambda s: s.errors(self.batch_id), self._settings)
