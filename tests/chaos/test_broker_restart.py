"""Redis, the broker, restarts under prefork workers running tasks: with SIGTERM and with
SIGKILL (append-only file on, back after OUTAGE_S), mid-batch and mid-``.delay()`` stream.

Every worker must keep its PID, reconnect and go on consuming, and every submitted task must
complete (SUCCESS in the result backend). Runs are counted in a file, outside the Redis that
is restarted; a task whose run was cut by the restart may run twice (at-least-once, acks
late): that is reported, not failed.

This module runs its own Redis and workers (the session's Redis is never restarted) and
publishes through a client app configured as proj's, pointed at that Redis.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis as redis_lib
from celery import Celery
from kombu.exceptions import OperationalError

from proj.stack.procs import ManagedProcess
from proj.stack.redis_server import RedisServer
from proj.stack.up import ping_workers
from tests.support import WorkerPool, wait_until

ROOT = Path(__file__).resolve().parents[2]
TASK = "usertasks.tally"
WORKERS = ("ra", "rb")
CONCURRENCY = 2
TASK_S = 0.3
WORKER_ARGS = ("-I", "tests.usertasks")
OUTAGE_S = 5.0  # the restart: back after 5 s with its append-only file
VISIBILITY_S = 15


@dataclass
class Stack:
    """This module's Redis, its workers (PIDs at start) and a client app on that Redis."""

    redis: RedisServer
    workers: WorkerPool
    procs: dict[str, ManagedProcess]
    pids: dict[str, int]
    client: Celery
    tmp: Path
    nodenames: list[str] = field(default_factory=list)

    def down(self, sig: signal.Signals) -> None:
        """Stop Redis with ``sig``: SIGTERM lets it shut down, SIGKILL does not."""
        proc = self.redis.process
        assert proc is not None and proc.alive()
        if sig == signal.SIGKILL:
            proc.signal_group(signal.SIGKILL)
        self.redis.stop()  # SIGTERM (or reaps the killed process), closes its log

    def exits(self) -> int:
        """Workers that exited or were replaced since the module started them."""
        return sum(1 for n, p in self.procs.items() if not p.alive() or p.pid != self.pids[n])

    def reconnected(self) -> bool:
        """Every worker answers a control ping (a probe's first connection to a Redis that
        has just started may be refused or closed: that is "not yet"). A worker that exited
        fails the test at once, with the end of its log."""
        for name, proc in self.procs.items():
            if not proc.alive():
                raise AssertionError(f"worker {name} exited:\n{proc.log_tail(60)}")
        try:
            answered = ping_workers(self.redis.url, self.nodenames, timeout_s=1.0)
        except (redis_lib.ConnectionError, OperationalError, OSError):
            return False
        return set(answered) == set(self.nodenames)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("broker-restart")
    server = RedisServer(tmp / "redis").start()
    env = {
        "REDIS_URL": server.url,
        "PROJ_STATE_DIR": str(tmp / "state"),
        "PYTHONPATH": str(ROOT),
        # SIGKILL with appendfsync everysec may drop the last second of writes: an ack, or a
        # result with its ack. The message then waits in the unacked set and is delivered
        # again one visibility timeout later (at least once): short here, so the test sees it.
        "PROJ_VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
        "PROJ_TASK_SOFT_TIME_LIMIT_S": "5",
        "PROJ_TASK_TIME_LIMIT_S": "8",
    }
    pool = WorkerPool(tmp / "logs")
    client = Celery("chaos-client", set_as_current=False)
    try:
        procs = {
            name: pool.start(
                name,
                ("bulk",),
                concurrency=CONCURRENCY,
                env=env,
                extra_args=WORKER_ARGS,
            )
            for name in WORKERS
        }
        # proj's settings (JSON only, queues, routing, acks late, publish retries), on this
        # module's Redis.
        client.config_from_object("proj.config.celeryconfig")
        client.conf.update(
            broker_url=server.url,
            result_backend=server.url,
        )
        yield Stack(
            server,
            pool,
            procs,
            {n: p.pid for n, p in procs.items()},
            client,
            tmp,
            [WorkerPool.nodename(n) for n in WORKERS],
        )
    finally:
        client.close()
        pool.kill_all()
        server.stop()


@dataclass
class Runs:
    """What the ``usertasks.tally`` runs wrote: ``start``/``end`` lines, and our marks."""

    path: Path

    def lines(self) -> list[list[str]]:
        if not self.path.exists():
            return []
        return [line.split() for line in self.path.read_text().splitlines()]

    def mark(self, what: str) -> None:
        with self.path.open("a") as f:
            f.write(f"mark {what} -\n")

    def starts(self) -> Counter[int]:
        return Counter(int(i) for kind, i, _ in self.lines() if kind == "start")

    def ends(self) -> Counter[int]:
        return Counter(int(i) for kind, i, _ in self.lines() if kind == "end")

    def nodes_starting_after(self, mark: str) -> Counter[str]:
        """Runs started after ``mark``, per worker node."""
        seen, nodes = False, Counter[str]()
        for kind, i, node in self.lines():
            seen = seen or (kind == "mark" and i == mark)
            if seen and kind == "start":
                nodes[node] += 1
        return nodes


def _states(client: redis_lib.Redis, task_ids: list[str]) -> Counter[str]:
    """Each task's state as the result backend holds it (PENDING: no result yet)."""
    keys = [f"celery-task-meta-{t}" for t in task_ids]
    metas = client.mget(keys) if keys else []
    return Counter(json.loads(m)["status"] if m else "PENDING" for m in metas)


def _restart(stack: Stack, runs: Runs, sig: signal.Signals) -> None:
    """Stop Redis with ``sig`` and start it again OUTAGE_S later on the same port and data."""
    stack.down(sig)
    time.sleep(OUTAGE_S)
    stack.redis.start()
    runs.mark("restarted")


def _settle(
    stack: Stack,
    runs: Runs,
    task_ids: list[str],
    n: int,
    report: Callable[..., None],
    **extra: object,
) -> None:
    """Wait for every task to complete, then report the counts and assert none was lost."""
    wait_until(stack.reconnected, 60, "every worker to answer a ping after the restart")
    client = redis_lib.Redis.from_url(stack.redis.url)
    try:
        with contextlib.suppress(AssertionError):  # reported and asserted below
            wait_until(
                lambda: _states(client, task_ids).get("SUCCESS", 0) == n,
                90,
                "every task to complete",
                interval_s=0.2,
            )
        states = _states(client, task_ids)
        # A worker removes the record of an acked task with its next record, or up to 50 ms
        # later (proj/transport.py): what is left after that would be delivered again later.
        with contextlib.suppress(AssertionError):
            wait_until(lambda: client.hlen("unacked") == 0, 3, "acked records to go")
        unacked = client.hlen("unacked")
    finally:
        client.close()
    starts, ends = runs.starts(), runs.ends()
    completed = states.get("SUCCESS", 0)
    after = runs.nodes_starting_after("restarted")
    report(
        submitted=n,
        completed=completed,
        lost=n - completed,
        twice=sum(1 for c in starts.values() if c > 1),
        worker_exits=stack.exits(),
        runs_after_restart_per_worker="/".join(str(after[node]) for node in stack.nodenames),
        left_unacked=unacked,
        **extra,
    )
    assert states == Counter({"SUCCESS": n}), dict(states)
    assert len(ends) == n  # and each ran to its end at least once
    assert stack.exits() == 0
    # Every worker consumes again after the restart, not only answers a ping (celery #9054).
    assert all(after[node] > 0 for node in stack.nodenames), dict(after)


def _submit_batch(stack: Stack, runs: Runs, n: int) -> list[str]:
    sig = stack.client.signature(TASK)
    return [sig.delay(i, str(runs.path), TASK_S).id for i in range(n)]


def _mid_batch(stack: Stack, runs: Runs, n: int) -> None:
    """Wait until the batch is under way: some runs ended, most are still to come."""
    wait_until(lambda: len(runs.ends()) >= 2 * len(WORKERS) * CONCURRENCY, 30, "the batch")
    assert len(runs.ends()) < n, "the batch ended before the restart: make it longer"


@pytest.mark.parametrize(
    "sig",
    [pytest.param(signal.SIGTERM, marks=pytest.mark.chaos_long), signal.SIGKILL],
    ids=["sigterm", "sigkill"],
)
def test_broker_restart_mid_batch_loses_nothing(
    stack: Stack, sig: signal.Signals, chaos_report: Callable[..., None]
) -> None:
    """60 tasks of 0.3 s on 2 x -c 2 workers, Redis restarted while every slot is busy: the
    running tasks finish, their results wait for Redis, they are acked after the reconnect."""
    runs = Runs(stack.tmp / f"runs-batch-{sig.name}.log")
    n = 60
    task_ids = _submit_batch(stack, runs, n)
    _mid_batch(stack, runs, n)
    _restart(stack, runs, sig)
    _settle(stack, runs, task_ids, n, chaos_report, signal=sig.name)


class Stream(threading.Thread):
    """A user app's ``.delay()`` loop: one task every ``gap_s``, each publish retried by
    Celery's publish retry policy across the restart."""

    def __init__(self, client: Celery, path: Path, n: int, gap_s: float) -> None:
        super().__init__(daemon=True)
        self.sig = client.signature(TASK)
        self.path, self.n, self.gap_s = path, n, gap_s
        self.task_ids: list[str] = []
        self.failed: list[str] = []
        self.longest_publish_s = 0.0

    def run(self) -> None:
        for i in range(self.n):
            t0 = time.monotonic()
            try:
                self.task_ids.append(self.sig.delay(i, str(self.path), TASK_S).id)
            except Exception as err:  # given up by the retry policy: lost by the client
                self.failed.append(f"{i}: {type(err).__name__}: {err}")
            self.longest_publish_s = max(self.longest_publish_s, time.monotonic() - t0)
            time.sleep(self.gap_s)


@pytest.mark.parametrize("sig", [signal.SIGKILL], ids=["sigkill"])
def test_broker_restart_mid_delay_stream_loses_nothing(
    stack: Stack, sig: signal.Signals, chaos_report: Callable[..., None]
) -> None:
    """A task every 0.1 s while Redis is killed: workers have free slots, so they wait on BRPOP
    while holding running tasks, the case where celery 5.7.0 workers exit without
    proj.broker_restart; the publisher waits out the outage in Celery's publish retry."""
    runs = Runs(stack.tmp / f"runs-stream-{sig.name}.log")
    stream = Stream(stack.client, runs.path, n=60, gap_s=0.1)
    stream.start()
    wait_until(lambda: len(stream.task_ids) >= 20, 30, "the stream to be under way")

    _restart(stack, runs, sig)
    stream.join(60)
    assert not stream.is_alive(), "the .delay() stream is stuck"
    n = len(stream.task_ids) + len(stream.failed)
    _settle(
        stack,
        runs,
        stream.task_ids,
        n,
        chaos_report,
        signal=sig.name,
        publish_failed=len(stream.failed),
        longest_delay_s=f"{stream.longest_publish_s:.1f}",
    )
    assert stream.failed == []
