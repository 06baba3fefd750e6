"""RabbitMQ as the broker (Redis kept for results and state), on a node this test starts on
free ports: durable quorum queues, urgent/bulk routing, a SIGKILLed worker's tasks redelivered,
a broker restart mid-stream, and poison messages quarantined. Skipped, with the reason, where
``rabbitmq-server`` is not installed (``.ci/run`` installs it)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kombu
import pytest
import redis as redis_lib

from proj import keys
from proj.stack.rabbitmq import RabbitServer, find_rabbitmq_server
from tests.support import WorkerPool, run_client, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitServer]:
    if find_rabbitmq_server() is None:
        pytest.skip("rabbitmq-server is not installed (Debian: apt-get install rabbitmq-server)")
    server = RabbitServer(tmp_path_factory.mktemp("rabbitmq")).start()
    yield server
    server.stop()


@pytest.fixture
def amqp_env(rabbit: RabbitServer, redis_client: redis_lib.Redis) -> dict[str, str]:
    """Workers and clients on RabbitMQ; results and state in the test's Redis."""
    with kombu.Connection(rabbit.url) as conn:  # every test starts with empty queues
        for q in ("urgent", "bulk", "compliance"):
            with contextlib.suppress(*conn.channel_errors):
                conn.channel().queue_purge(q)
    return {"CELERY_BROKER_URL": rabbit.url, "REDIS_URL": os.environ["REDIS_URL"]}


def _results(ids: list[str], timeout_s: float = 60) -> list[dict[str, Any]]:
    """The results of ``ids`` from the result backend (the test's Redis)."""
    from proj.app import app

    return [app.AsyncResult(i).get(timeout=timeout_s) for i in ids]


def test_queues_are_durable_quorum_queues_and_routing_holds(
    workers: WorkerPool, amqp_env: dict[str, str], rabbit: RabbitServer
) -> None:
    workers.start("u", ("urgent",), concurrency=1, env=amqp_env, wait=False)
    workers.start("b", ("bulk",), concurrency=2, env=amqp_env, wait=False)
    workers.wait_ready("u", "b")
    ids = run_client(
        "import json\n"
        "from proj.tasks.demo import urgent_work, work\n"
        "rs = [urgent_work.delay(0.0), work.delay(0.0), work.apply_async((0.0,), priority=0)]\n"
        "print(json.dumps([r.id for r in rs]))\n",
        amqp_env,
    )
    queues = [r["queue"] for r in _results(ids)]
    assert queues == ["urgent", "bulk", "urgent"]  # priority 0 routes to urgent, as on Redis
    with kombu.Connection(rabbit.url) as conn:
        for name in ("urgent", "bulk"):
            # Declaring it as a classic queue is refused: it is a quorum queue.
            with pytest.raises(conn.channel_errors, match="x-queue-type"):
                kombu.Queue(name, durable=True)(conn.channel()).declare()


def test_a_sigkilled_workers_tasks_are_redelivered(
    workers: WorkerPool, amqp_env: dict[str, str]
) -> None:
    first = workers.start("k1", ("bulk",), concurrency=2, env=amqp_env)
    n = 12
    ids = run_client(
        "import json\n"
        "from proj.tasks.demo import work\n"
        f"print(json.dumps([work.delay(1.0).id for _ in range({n})]))\n",
        amqp_env,
    )
    time.sleep(1.5)  # two of them running, the rest waiting
    first.signal_group(signal.SIGKILL)
    first.stop(timeout_s=5)
    workers.start("k2", ("bulk",), concurrency=4, env=amqp_env)
    done = _results(ids, timeout_s=90)
    assert len(done) == n and all(r["queue"] == "bulk" for r in done)


def test_a_broker_restart_mid_stream_loses_nothing(
    workers: WorkerPool, amqp_env: dict[str, str], rabbit: RabbitServer
) -> None:
    workers.start("r", ("bulk",), concurrency=2, env=amqp_env)
    stream = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import json, time\n"
            "from proj.tasks.demo import work\n"
            "ids = []\n"
            "for i in range(40):\n"
            "    ids.append(work.delay(0.05).id)\n"
            "    time.sleep(0.1)\n"
            "print(json.dumps(ids))\n",
        ],
        env={**os.environ, **amqp_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    rabbit.restart()  # mid-stream: publishes wait for it (confirms), workers reconnect
    out, err = stream.communicate(timeout=180)
    assert stream.returncode == 0, err
    ids = json.loads(out.strip().splitlines()[-1])
    done = _results(ids, timeout_s=120)
    assert len(done) == 40


def test_poison_messages_are_quarantined_on_rabbitmq(
    workers: WorkerPool,
    amqp_env: dict[str, str],
    rabbit: RabbitServer,
    redis_client: redis_lib.Redis,
) -> None:
    proc = workers.start("p", ("bulk",), concurrency=1, env=amqp_env)
    queue = kombu.Queue(
        "bulk",
        kombu.Exchange("proj", type="direct"),
        routing_key="bulk",
        durable=True,
        queue_arguments={"x-queue-type": "quorum"},
    )
    task_id = str(uuid.uuid4())
    with kombu.Connection(rabbit.url) as conn:
        producer = conn.Producer()
        producer.publish(
            b'{"a": 1}',  # a body that is not Celery's
            exchange=queue.exchange,
            routing_key="bulk",
            declare=[queue],
            headers={"lang": "py", "task": "proj.ping", "id": task_id},
            content_type="application/json",
            content_encoding="utf-8",
        )
    wait_until(lambda: redis_client.zcard(keys.QUARANTINE_INDEX) >= 1, 30, "the quarantine")
    entry = json.loads(next(iter(redis_client.hvals(keys.QUARANTINE))))
    assert (entry["task_id"], entry["queue"], entry["kind"]) == (task_id, "bulk", "body")
    # The worker lives on and serves the next message.
    ids = run_client(
        "import json\nfrom proj.tasks.demo import work\nprint(json.dumps([work.delay(0).id]))\n",
        amqp_env,
    )
    assert _results(ids)[0]["queue"] == "bulk"
    assert proc.alive() and "Traceback" not in Path(proc.log_path).read_text()


def test_a_countdown_runs_when_due(workers: WorkerPool, amqp_env: dict[str, str]) -> None:
    """Retries with backoff are countdowns: on quorum queues Celery delays them in RabbitMQ."""
    workers.start("c", ("bulk",), concurrency=1, env=amqp_env)
    sent_and_id = run_client(
        "import json, time\n"
        "from proj.tasks.demo import work\n"
        "t = time.time()\n"
        "print(json.dumps([t, work.apply_async((0,), countdown=3).id]))\n",
        amqp_env,
    )
    sent, task_id = sent_and_id
    started = _results([task_id], timeout_s=60)[0]["started_at"]
    assert started - sent >= 2.9
