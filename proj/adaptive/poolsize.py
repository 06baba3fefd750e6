"""Resizing a worker's prefork pool without stalling it and without losing a job.

The moves are those of Celery's ``pool_grow``/``pool_shrink`` control commands (the pool's
target size and the consumer's prefetch count, so the worker reserves as many tasks as it has
processes), with differences found by ``bench.adaptive``. Everything that blocks the worker's
main loop is paced, because that loop is what hands out jobs: while it forks or reaps, the
processes already up sit idle.

- **Growth** forks the new processes now, ``GROW_CHUNK`` at a time, and raises the prefetch
  as they come. ``Pool.grow`` alone only raises a target that billiard's maintenance timer
  acts on up to 5 s later, and then forks every missing process in one go while the main loop
  dispatches nothing (a 40-process step stopped the worker for 6-8 s; see also
  :func:`proj.signals.freeze_gc_for_fork`). After each chunk the loop gets at least as long as
  the forks took before the next one.
- **Shrinking** retires processes: a retired process gets no new job, and ends once it has
  none. billiard's ``Pool.shrink`` picks processes that have not *acknowledged* a job, so it
  could SIGTERM a process a job had just been written to (``WorkerLostError``; with
  ``acks_late`` the task ran again), and it can only shrink when a process happens to be idle
  at the instant it is called, which a worker with a backlog almost never is.
- **Ending** a process blocks the main loop for about 20 ms (billiard waits twice for 10 ms on
  its result pipe), so retired processes are ended one per ``REAP_INTERVAL_S``, and only once
  they have stayed unneeded for ``RETIRE_GRACE_S``: growth within that time takes a retired
  process back instead of forking one, which is what an AIMD sawtooth needs every few seconds.
  A process that exits on its own meanwhile (a crash, ``--max-tasks-per-child``) gets a retired
  one in its place: billiard counts retired processes and would not replace it.

It reads and updates Celery's ``AsynPool`` bookkeeping (``_cache``, ``_busy_workers``,
``_fileno_to_inq``, ``_all_inqueues``), the same structures its own ``on_inqueue_close`` and
``on_process_alive`` maintain. Prefork only.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("proj.concurrency")

GROW_CHUNK = 2  # processes forked at a time while growing
GROW_PAUSE_MIN_S = 0.005  # least pause between two chunks
REAP_INTERVAL_S = 0.1  # retired processes: checked this often, at most one ended each time
RETIRE_GRACE_S = 2.0  # an idle retired process is kept this long for growth to take back


class PoolResizer:
    def __init__(self, worker: Any, hub: Any = None) -> None:
        self.worker = worker
        self.hub = hub
        self.pending_grow = 0
        self.to_retire = 0  # processes to retire once they are up (forked, not yet started)
        self.retiring: dict[Any, float] = {}  # retired process -> when (monotonic)
        self._reaper: Any = None
        self._growing: Any = None

    @staticmethod
    def supports(pool: Any) -> bool:
        """Whether ``pool`` (a worker's ``w.pool``) is a started prefork pool."""
        from celery.concurrency.asynpool import AsynPool

        return isinstance(getattr(pool, "_pool", None), AsynPool)

    @property
    def _pool(self) -> Any:
        return self.worker.pool._pool  # Celery's AsynPool (billiard)

    def settling(self) -> bool:
        """Whether the last resize is still under way: processes to fork or to retire, or
        retired ones still running their last job. (Idle retired processes make no calls, so
        they do not change what the new size is judged on.)"""
        self.reap(end=False)
        if self.pending_grow > 0 or self.to_retire > 0:
            return True
        has_job = self._has_job()
        return any(has_job(p) for p in self.retiring)

    def resize(self, delta: int) -> None:
        if delta > 0:
            cancel = min(delta, self.to_retire)  # processes not retired yet
            self.to_retire -= cancel
            delta -= cancel
            while delta > 0 and self._revive_one():
                delta -= 1
            self.pending_grow += delta
            if self._growing is None:
                self._grow_some()
        elif delta < 0:
            cancel = min(-delta, self.pending_grow)  # processes not forked yet
            self.pending_grow -= cancel
            self.to_retire += -delta - cancel
            self.reap(end=False)
        if self._reaper is None and (self.to_retire or self.retiring) and self.hub is not None:
            self._reaper = self.hub.call_repeatedly(REAP_INTERVAL_S, self._reap_tick)

    def _reap_tick(self) -> None:
        self.reap()
        if not (self.to_retire or self.retiring) and self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None

    def _grow_some(self) -> None:
        self._growing = None
        n = min(GROW_CHUNK, self.pending_grow)
        if n <= 0:
            return
        self.pending_grow -= n
        pool = self.worker.pool
        started = time.perf_counter()
        pool.grow(n)
        pool.maintain_pool()  # fork them now, not at billiard's next maintenance tick
        self.worker.consumer._update_prefetch_count(n)
        if self.pending_grow:
            if self.hub is not None:
                # Leave the loop at least as long to hand out jobs as the forks took from it.
                pause = max(GROW_PAUSE_MIN_S, time.perf_counter() - started)
                self._growing = self.hub.call_later(pause, self._grow_some)
            else:
                self._grow_some()

    def _has_job(self) -> Callable[[Any], bool]:
        """A test of whether a process has a job now (acknowledged, scheduled or being
        written, or its in-queue counted busy by the pool)."""
        pool = self._pool
        pids: set[int] = set()
        for job in list(pool._cache.values()):
            pids.update(p for p in job.worker_pids() if p)
            for proc in (job._scheduled_for, job._write_to):
                if proc is not None:
                    pids.add(proc.pid)
        fds = set(pool._busy_workers) | set(pool._active_writes)
        return lambda proc: proc.pid in pids or proc.inqW_fd in fds

    def _count(self, n: int) -> None:
        """Count ``n`` processes into (or, negative, out of) the pool's size and prefetch."""
        pool = self._pool
        pool._processes += n
        if pool._putlock is not None:
            for _ in range(abs(n)):
                (pool._putlock.grow if n > 0 else pool._putlock.shrink)()
        self.worker.consumer._update_prefetch_count(n)

    def _retire_one(self) -> bool:
        """Stop giving jobs to one started process (an idle one if any) and count it out of the
        pool. False when every started process is already retiring."""
        pool = self._pool
        has_job = self._has_job()
        candidates = [
            p
            for p in pool._pool
            if pool._fileno_to_inq.get(p.inqW_fd) is p and p not in self.retiring
        ]
        if not candidates:
            return False
        idle = [p for p in candidates if not has_job(p)]
        proc = (idle or candidates)[0]
        pool.on_inqueue_close(proc.inqW_fd, proc)  # no job is scheduled for it from now on
        pool.on_shrink(1)
        self._count(-1)
        self.retiring[proc] = time.monotonic()
        return True

    def _revive_one(self, count: bool = True) -> bool:
        """Take back a retired process that is still up (an idle one if any), as the pool's
        own ``on_process_alive`` admits a new one, and (``count``) count it into the pool's
        size. False when there is none."""
        pool = self._pool
        alive = [p for p in self.retiring if p.is_alive() and p in pool._pool]
        if not alive:
            return False
        has_job = self._has_job()
        idle = [p for p in alive if not has_job(p)]
        proc = (idle or alive)[0]
        del self.retiring[proc]
        fd = proc.inqW_fd
        # What retiring it made the pool forget (``on_inqueue_close``): a process still running
        # its job is busy (the fair scheduler would otherwise queue a second job behind it, and
        # keep doing so, one slot of the pool lost for good), and a job still being written to
        # it keeps its writer (or the pool would register over it and never finish the write).
        if has_job(proc):
            pool._busy_workers.add(fd)
        writer = self.hub.writers.get(fd) if self.hub is not None else None
        if writer is not None and inspect.isgenerator(writer[0]):
            pool._active_writes.add(fd)
        pool._fileno_to_inq[fd] = proc
        pool._all_inqueues.add(fd)
        if count:
            self._count(+1)
        return True

    def _fill_in(self) -> None:
        """Put a retired process in the place of one that exited on its own (a crash,
        ``--max-tasks-per-child``). billiard replaces an exited process only when the pool holds
        fewer processes than its size, and it counts the retired ones: until they are ended the
        pool would run short."""
        pool = self._pool
        working = sum(1 for p in pool._pool if p not in self.retiring and p.is_alive())
        for _ in range(pool._processes - working):
            if not self._revive_one(count=False):
                return

    def reap(self, end: bool = True) -> None:
        """Retire what is still to retire and forget retired processes that have exited;
        with ``end``, end one retired process that has had no job for ``RETIRE_GRACE_S``."""
        while self.to_retire > 0 and self._retire_one():
            self.to_retire -= 1
        for proc in [p for p in self.retiring if not p.is_alive()]:
            del self.retiring[proc]
        if not self.retiring:
            return
        self._fill_in()
        if not end or not self.retiring:
            return
        has_job = self._has_job()
        now = time.monotonic()
        for proc, since in list(self.retiring.items()):
            if has_job(proc):
                self.retiring[proc] = now  # its grace starts when its last job ends
            elif now - since >= RETIRE_GRACE_S:
                del self.retiring[proc]
                proc.terminate_controlled()
                return
