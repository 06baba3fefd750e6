"""Queues of one's own on real workers: five declared queues with a worker on each, triage by
category to queue and model, an undeclared and a full queue refused with one line, the
compliance review only for risky documents, and a batch that starts its high-priority items
first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from celery.exceptions import QueueNotFound

import proj
from proj import batch, store
from proj.pipelines import documents, leads
from proj.settings import get_settings, reset_settings
from proj.sim.admin import SimAdmin
from proj.tasks import demo
from tests.support import WorkerPool, wait_until

QUEUES = {
    "legal": {"model": "large"},
    "finance": {},
    "content": {"model": "small"},
    "general": {},
    "capped": {"max_depth": 3},
}
RULES = [
    {"category": "critical", "queue": "urgent"},
    {"category": "legal", "queue": "legal", "model": "large"},
    {"category": "finance", "queue": "finance"},
    {"category": "simple_content", "queue": "content"},
]
BY_URGENCY = {"high": "urgent", "normal": "general", "low": "general"}


@pytest.fixture
def declared(
    monkeypatch: pytest.MonkeyPatch, provider_env: dict[str, str], redis_client: redis_lib.Redis
) -> Iterator[dict[str, str]]:
    """This process and its workers with the five queues (and a capped one) declared."""
    env = {
        **provider_env,
        "PROJ_QUEUES": json.dumps(QUEUES),
        "PROJ_TRIAGE_RULES": json.dumps(RULES),
        "PROJ_TRIAGE_QUEUE_BY_URGENCY": json.dumps(BY_URGENCY),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    reset_settings()
    yield env
    monkeypatch.undo()
    reset_settings()


def _start(workers: WorkerPool, env: dict[str, str], *queues: str) -> None:
    for q in queues:
        workers.start(q, (q,), concurrency=1, env=env, wait=False)
    workers.wait_ready(*queues)


def test_work_lands_on_the_queue_its_category_names_with_the_rules_model(
    workers: WorkerPool, sim: SimAdmin, declared: dict[str, str]
) -> None:
    _start(workers, declared, "urgent", "legal", "finance", "content", "general", "bulk")
    items = [
        {"email": "a@law.example", "category": "legal", "message": "Review the NDA"},
        {"email": "b@acme.example", "category": "finance", "message": "Q3 numbers"},
        {"email": "c@blog.example", "category": "simple_content", "message": "A short post"},
        {"email": "d@ops.example", "category": "critical", "message": "checkout broken"},
        {"email": "e@shop.example", "message": "Hello there"},
    ]
    plan = leads.build(items)
    canvas = plan.signature  # chord(leads, summarize | notify)
    canvas.freeze()  # the leads' tasks get their ids now, to read their records after
    header = getattr(canvas.tasks, "tasks", canvas.tasks)  # a group once frozen
    canvas.apply_async().get(timeout=90)
    records = {r["email"]: r for r in (proj.app.AsyncResult(t.id).get(timeout=10) for t in header)}
    settings = get_settings()
    large, small = settings.queues.model_large, settings.queues.model_small
    want = {
        "a@law.example": ("legal", large),
        "b@acme.example": ("finance", small),
        "c@blog.example": ("content", small),
        "d@ops.example": ("urgent", small),
        "e@shop.example": ("general", small),
    }
    got = {email: (r["queue"], r["model"]) for email, r in records.items()}
    assert got == want, got
    # Each queue's and category's figures, as proj status and proj metrics show them.
    from proj.status_cli import snapshot

    def counted() -> dict[str, Any]:
        return snapshot(get_settings())

    def all_counted() -> bool:  # each worker process sends its figures once a second
        snap = counted()
        queues, categories = snap["queue_figures"], snap["category_figures"]
        return (
            queues.get("legal", {}).get("runs") == 1
            and categories.get("simple_content", {}).get("runs") == 1
            and queues.get("general", {}).get("runs", 0) >= 1
        )

    wait_until(all_counted, 10, "the workers' counts")
    snap = counted()
    legal = snap["queue_figures"]["legal"]
    assert legal["runs"] == 1 and legal["error_rate"] == 0.0 and legal["failed"] == 0
    assert legal["wait_p50_s"] is not None and legal["mean_run_s"] is not None
    assert legal["cost_usd"] > 0  # its AI call, on the large model
    assert snap["category_figures"]["simple_content"]["runs"] == 1
    assert snap["queue_classes"]["urgent"] == "urgent"
    assert snap["queue_figures"]["general"]["runs"] >= 1


def test_undeclared_and_full_queues_fail_with_one_line(
    workers: WorkerPool, declared: dict[str, str], tmp_path: Path
) -> None:
    with pytest.raises(QueueNotFound, match=r"no queue named 'nope'; declared: bulk, capped, "):
        demo.ping.apply_async(queue="nope")
    for _ in range(3):  # no worker on it: they wait
        demo.ping.apply_async(queue="capped")
    time.sleep(1.2)  # the depth the publisher checks is at most a second old
    with pytest.raises(proj.QueueFull) as full:
        demo.ping.apply_async(queue="capped")
    assert str(full.value).startswith(
        "queue 'capped' is full: 3 messages waiting, its max_depth is 3"
    )
    # A worker on an undeclared queue stops at once, with one line and no traceback.
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "proj", "worker", "-Q", "bulk,nope", "-c", "1"],
        env=dict(os.environ),  # the declarations above, and the test's Redis
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: no queue named 'nope'; declared: bulk, capped"), out.stderr
    assert "Traceback" not in out.stderr


RISKY = "The supplier accepts unlimited liability and a penalty for any breach of the terms."
CLEAN = "The team met on Tuesday and agreed the new office plan."


def test_compliance_review_runs_for_risky_documents_only(
    workers: WorkerPool, sim: SimAdmin, declared: dict[str, str]
) -> None:
    _start(workers, declared, "general", "bulk", "compliance")
    url = declared["PROJ_DATABASE_URL"]
    risky = documents.build({"id": "risky", "text": RISKY}).signature.delay().get(timeout=60)
    clean = documents.build({"id": "clean", "text": CLEAN}).signature.delay().get(timeout=60)
    assert risky["risk"] == "high" and set(risky["risk_flags"]) >= {"liability", "breach"}
    assert risky["forwarded"]["queue"] == "compliance"
    assert clean["risk"] == "none" and "forwarded" not in clean
    # The same rule on the batch path.
    h = batch.submit(
        "documents", [{"id": "b-risky", "text": RISKY}, {"id": "b-clean", "text": CLEAN}]
    )
    assert h.wait(timeout_s=60).done == 2

    def reviewed(doc_id: str) -> dict[str, Any] | None:
        with store.engine(url).connect() as conn:
            row = conn.execute(
                store.analysed_documents.select().where(
                    store.analysed_documents.c.document_id == doc_id
                )
            ).first()
        return json.loads(row.record) if row is not None else None

    for doc in ("risky", "b-risky"):
        wait_until(lambda d=doc: "compliance" in (reviewed(d) or {}), 30, f"{doc} reviewed")
        review = reviewed(doc)["compliance"]  # type: ignore[index]
        assert review["verdict"] == "escalate" and review["model"] == "gpt-4o"

    # The reviews count for the documents' category on the compliance queue.
    from proj import figures
    from proj.guard import callstats

    def reviews() -> dict[str, float]:
        client = redis_lib.Redis.from_url(os.environ["REDIS_URL"])
        try:
            route = figures.by_route(callstats.read(client)).get(("compliance", "document"))
        finally:
            client.close()
        return route.runs if route is not None else {}

    wait_until(lambda: reviews() == {"succeeded": 2.0}, 10, "the reviews counted")
    for doc in ("clean", "b-clean"):
        assert "compliance" not in (reviewed(doc) or {"compliance": "missing row"})
    assert sim.count("chat") == 4 * 3 + 2  # three aspects a document, one review each risky one


def test_a_batch_starts_its_high_priority_items_first(
    workers: WorkerPool, sim: SimAdmin, declared: dict[str, str]
) -> None:
    env = {**declared, "PROJ_BATCH_CONCURRENCY": "1"}  # one call at a time: the order shows
    workers.start("bulk", ("bulk",), concurrency=1, env=env)
    items = [{"domain": f"p{i}.example", "priority": p} for i, p in enumerate([0, 5, 9, 0, 5])]
    items.append({"domain": "none.example"})
    h = batch.submit("company", items, fresh=True)
    assert h.wait(timeout_s=60).done == 6
    order = sim.stats(timeline=True)["subjects"]["company"]
    assert order == [
        "p2.example",
        "p1.example",
        "p4.example",
        "p0.example",
        "p3.example",
        "none.example",
    ]


def _nightly_worker(
    workers: WorkerPool, monkeypatch: pytest.MonkeyPatch, declared: dict[str, str], hours: str
) -> None:
    """Declare a low queue ``nightly`` with ``hours`` here and in a worker "off" on it and bulk."""
    queues = {**QUEUES, "nightly": {"class": "low", "active_hours": hours}}
    env = {**declared, "PROJ_QUEUES": json.dumps(queues)}
    monkeypatch.setenv("PROJ_QUEUES", env["PROJ_QUEUES"])
    reset_settings()
    workers.start("off", ("bulk", "nightly"), concurrency=1, env=env)


def test_off_peak_queue_waits_outside_its_hours_and_status_says_until_when(
    workers: WorkerPool, monkeypatch: pytest.MonkeyPatch, declared: dict[str, str]
) -> None:
    from datetime import UTC, datetime, timedelta

    from proj.status_cli import snapshot

    now = datetime.now(UTC)
    opens, closes = now + timedelta(hours=2), now + timedelta(hours=3)
    _nightly_worker(workers, monkeypatch, declared, f"{opens:%H:%M}-{closes:%H:%M}")
    later = demo.ping.apply_async(queue="nightly")
    now_ = demo.ping.apply_async(queue="bulk")
    assert now_.get(timeout=30) == "pong"  # the worker runs, its bulk queue is consumed
    time.sleep(1.0)
    assert later.state == "PENDING"  # the nightly message waits for its hours

    def shown() -> dict[str, Any] | None:
        rows = [w for w in snapshot(get_settings())["workers"] if w["node"].startswith("off@")]
        return rows[0] if rows and rows[0]["paused"] else None

    wait_until(lambda: shown() is not None, 10, "the worker's presence with its paused queue")
    row = shown()
    assert row is not None and row["queues"] == "bulk"
    assert row["paused"] == f"nightly@{opens:%Y-%m-%dT%H:%M}+00:00"
    assert snapshot(get_settings())["queues"]["nightly"] == 1


@pytest.mark.slow
def test_off_peak_queue_is_consumed_once_its_hours_begin(
    workers: WorkerPool, monkeypatch: pytest.MonkeyPatch, declared: dict[str, str]
) -> None:
    """The window opens at the next minute (up to a minute's wait): the worker adds the queue's
    consumer again then, and the message that waited runs."""
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    opens = (now + timedelta(seconds=70)).replace(second=0, microsecond=0)  # 10-70 s away
    _nightly_worker(
        workers, monkeypatch, declared, f"{opens:%H:%M}-{opens + timedelta(hours=1):%H:%M}"
    )
    waiting = demo.work.apply_async((0.0,), queue="nightly")
    time.sleep(1.0)
    assert waiting.state == "PENDING"
    left = (opens - datetime.now(UTC)).total_seconds()
    ran = waiting.get(timeout=left + 20)
    assert ran["queue"] == "nightly"
    assert opens.timestamp() <= ran["started_at"] < opens.timestamp() + 5  # on time
