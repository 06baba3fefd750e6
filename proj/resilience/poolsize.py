"""Resizing a worker's prefork pool without stalling it and without losing a job.

The moves are those of Celery's ``pool_grow``/``pool_shrink`` control commands (the pool's
target size and the consumer's prefetch count, so the worker reserves as many tasks as it has
processes), with two differences, both found by ``bench.adaptive``:

- **growth** forks the new processes now, ``GROW_CHUNK`` per event-loop turn, and raises the
  prefetch as they come. ``Pool.grow`` alone only raises a target that billiard's maintenance
  timer acts on up to 5 s later, and then forks every missing process in one go while the main
  loop dispatches nothing (a 40-process step stopped the worker for 6-8 s; see also
  :func:`proj.signals.freeze_gc_for_fork`);
- **shrinking** retires processes: a retired process gets no new job, and ends once it has
  none. billiard's ``Pool.shrink`` picks processes that have not *acknowledged* a job, so it
  could SIGTERM a process a job had just been written to (``WorkerLostError``; with
  ``acks_late`` the task ran again), and it can only shrink when a process happens to be idle
  at the instant it is called, which a worker with a backlog almost never is.

It reads and updates Celery's ``AsynPool`` bookkeeping (``_cache``, ``_busy_workers``,
``_fileno_to_inq``), the same structures its own ``on_inqueue_close`` maintains. Prefork only.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("proj.concurrency")

GROW_CHUNK = 4  # processes forked per event-loop turn while growing
REAP_INTERVAL_S = 0.05  # how often retired processes are checked for their last job


class PoolResizer:
    def __init__(self, worker: Any, hub: Any = None) -> None:
        self.worker = worker
        self.hub = hub
        self.pending_grow = 0
        self.to_retire = 0  # processes to retire once they are up (forked, not yet started)
        self.retiring: list[Any] = []
        self._reaper: Any = None

    @staticmethod
    def supports(pool: Any) -> bool:
        """Whether ``pool`` (a worker's ``w.pool``) is a started prefork pool."""
        from celery.concurrency.asynpool import AsynPool

        return isinstance(getattr(pool, "_pool", None), AsynPool)

    @property
    def _pool(self) -> Any:
        return self.worker.pool._pool  # Celery's AsynPool (billiard)

    def settling(self) -> bool:
        """Whether the last resize is still under way (processes to fork or to end)."""
        self.reap()
        return self.pending_grow > 0 or self.to_retire > 0 or bool(self.retiring)

    def resize(self, delta: int) -> None:
        if delta > 0:
            cancel = min(delta, self.to_retire)  # processes not retired yet
            self.to_retire -= cancel
            self.pending_grow += delta - cancel
            self._grow_some()
        elif delta < 0:
            cancel = min(-delta, self.pending_grow)  # processes not forked yet
            self.pending_grow -= cancel
            self.to_retire += -delta - cancel
            self.reap()
            if self._reaper is None and self.settling() and self.hub is not None:
                self._reaper = self.hub.call_repeatedly(REAP_INTERVAL_S, self._reap_tick)

    def _reap_tick(self) -> None:
        self.reap()
        if not (self.to_retire or self.retiring) and self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None

    def _grow_some(self) -> None:
        n = min(GROW_CHUNK, self.pending_grow)
        if n <= 0:
            return
        self.pending_grow -= n
        pool = self.worker.pool
        pool.grow(n)
        pool.maintain_pool()  # fork them now, not at billiard's next maintenance tick
        self.worker.consumer._update_prefetch_count(n)
        if self.pending_grow:
            if self.hub is not None:
                self.hub.call_soon(self._grow_some)  # after the loop has dispatched again
            else:
                self._grow_some()

    def _busy(self) -> tuple[set[int], set[int]]:
        """Pids of processes with a job (acknowledged, scheduled or being written), and the
        in-queue fds the pool counts busy."""
        pool = self._pool
        pids: set[int] = set()
        for job in list(pool._cache.values()):
            pids.update(p for p in job.worker_pids() if p)
            for proc in (job._scheduled_for, job._write_to):
                if proc is not None:
                    pids.add(proc.pid)
        return pids, set(pool._busy_workers) | set(pool._active_writes)

    def _retire_one(self) -> bool:
        """Stop giving jobs to one started process (an idle one if any) and count it out of the
        pool. False when every started process is already retiring."""
        pool = self._pool
        busy_pids, busy_fds = self._busy()
        candidates = [
            p
            for p in pool._pool
            if pool._fileno_to_inq.get(p.inqW_fd) is p and p not in self.retiring
        ]
        if not candidates:
            return False
        idle = [p for p in candidates if p.pid not in busy_pids and p.inqW_fd not in busy_fds]
        proc = (idle or candidates)[0]
        pool.on_inqueue_close(proc.inqW_fd, proc)  # no job is scheduled for it from now on
        pool._processes -= 1
        if pool._putlock is not None:
            pool._putlock.shrink()
        pool.on_shrink(1)
        self.worker.consumer._update_prefetch_count(-1)
        self.retiring.append(proc)
        return True

    def reap(self) -> None:
        """Retire what is still to retire, and end the retired processes that have no job left."""
        while self.to_retire > 0 and self._retire_one():
            self.to_retire -= 1
        if not self.retiring:
            return
        busy_pids, busy_fds = self._busy()
        keep = []
        for proc in self.retiring:
            if not proc.is_alive():
                continue
            if proc.pid in busy_pids or proc.inqW_fd in busy_fds:
                keep.append(proc)
            else:
                proc.terminate_controlled()
        self.retiring = keep
