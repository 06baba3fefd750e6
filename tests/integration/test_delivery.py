"""Delivery guarantees: no pickle, no lost task when a worker is killed, any client works."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis as redis_lib
from kombu import Connection, Exchange

from proj import keys
from proj.tasks.demo import work
from tests.support import WorkerPool, wait_until


def _pool_children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def test_client_process_that_imports_only_proj_gets_its_result(
    workers: WorkerPool, redis_client: redis_lib.Redis
) -> None:
    workers.start("bulk", ("bulk", "urgent"), concurrency=1)
    code = (
        "from proj.tasks.demo import work\nr = work.delay(0.0)\nprint(r.get(timeout=30)['queue'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "bulk"


def test_pickle_message_is_rejected_and_never_runs(
    workers: WorkerPool, redis_client: redis_lib.Redis, tmp_path: Path
) -> None:
    worker = workers.start("bulk", ("bulk",), concurrency=1)
    marker = tmp_path / "pickle-ran"
    # Hand-written pickle opcodes for os.system("touch <marker>"): unpickling it runs code.
    payload = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    task_id = str(uuid.uuid4())
    with Connection(os.environ["REDIS_URL"]) as conn:
        producer = conn.Producer()
        producer.publish(
            payload,
            exchange=Exchange("proj", type="direct"),
            routing_key="bulk",
            content_type="application/x-python-serialize",
            content_encoding="binary",
            headers={"lang": "py", "task": "proj.work", "id": task_id, "argsrepr": "()"},
        )
    wait_until(
        lambda: "is not accepted" in worker.log_tail(200), 20, "the worker to refuse the message"
    )
    time.sleep(0.5)
    assert not marker.exists(), "pickle payload was deserialised"
    assert work.AsyncResult(task_id).state == "PENDING", "the task must never run"
    # The refused message is off its queue, kept raw in the quarantine, not redelivered forever.
    assert redis_client.llen("bulk") == 0
    (entry,) = [json.loads(v) for v in redis_client.hvals(keys.QUARANTINE)]
    assert entry["kind"] == "content" and entry["task_id"] == task_id


def test_prefork_child_killed_mid_task_is_requeued_and_completes(
    workers: WorkerPool, redis_client: redis_lib.Redis, celery_app: object
) -> None:
    worker = workers.start("bulk", ("bulk",), concurrency=1)
    result = work.delay(2.0)
    wait_until(lambda: result.state == "STARTED", 20, "the task to start")
    first = result.info["pid"] if isinstance(result.info, dict) else None
    children = _pool_children(worker.pid)
    assert children
    for child in children:
        os.kill(child, signal.SIGKILL)
    out = result.get(timeout=60)
    assert out["queue"] == "bulk"
    assert first is None or first not in _pool_children(worker.pid)


def test_whole_worker_killed_mid_task_is_redelivered_and_completes(
    workers: WorkerPool, redis_client: redis_lib.Redis, celery_app: object
) -> None:
    # A short visibility timeout so redelivery happens within the test.
    env = {
        "PROJ_VISIBILITY_TIMEOUT_S": "6",
        "PROJ_TASK_TIME_LIMIT_S": "5",
        "PROJ_TASK_SOFT_TIME_LIMIT_S": "4",
    }
    first = workers.start("first", ("bulk",), concurrency=1, env=env)
    result = work.delay(1.5)
    wait_until(lambda: result.state == "STARTED", 20, "the task to start")
    killed_at = time.time()
    first.signal_group(signal.SIGKILL)
    first.stop()
    assert not result.ready()
    workers.start("second", ("bulk",), concurrency=1, env=env)
    out = result.get(timeout=60)
    assert out["hostname"].startswith("second@")
    assert out["started_at"] > killed_at


def test_a_worker_leaves_no_unacknowledged_record_of_finished_tasks(
    workers: WorkerPool, redis_client: redis_lib.Redis, celery_app: object
) -> None:
    """The worker's acks go with its next record or a timer (proj/transport.py): once the
    work is done, nothing it ran stays recorded as unacknowledged, so nothing is delivered
    again after the visibility timeout."""
    workers.start("bulk", ("bulk",), concurrency=2)
    results = [work.delay(0.0) for _ in range(40)]
    for r in results:
        r.get(timeout=60)
    wait_until(
        lambda: redis_client.hlen("unacked") == 0 and redis_client.zcard("unacked_index") == 0,
        5,
        "the records of finished tasks to go",
    )


def _evalsha_calls(client: redis_lib.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_a_busy_worker_sends_one_script_call_per_task_not_two(
    workers: WorkerPool, redis_client: redis_lib.Redis, celery_app: object
) -> None:
    """With a backlog, each ack's removal rides in the next message's record: about one
    EVALSHA per task (kombu's transport: two transactions; before, two script calls)."""
    results = [work.delay(0.0) for _ in range(600)]
    keys = [f"celery-task-meta-{r.id}" for r in results]
    calls0 = _evalsha_calls(redis_client)
    workers.start("bulk", ("bulk",), concurrency=1)
    wait_until(
        lambda: all(v is not None for v in redis_client.mget(keys)), 60, "the backlog to drain"
    )
    calls = _evalsha_calls(redis_client) - calls0
    # and a few for the worker's start and its own timers (figures, presence, the mover)
    print(f"{calls} script calls for {len(results)} tasks")
    assert calls < 1.4 * len(results), f"{calls} script calls for {len(results)} tasks"
