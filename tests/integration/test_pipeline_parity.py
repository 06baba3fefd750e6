"""The lead pipeline's two paths give the same result: the same leads through
``leads.build(...).delay()`` (the canvas) and ``proj.batch.submit("leads", ...)`` (the batch
runner), on the same real workers, simulator and results database, store the same rows and
the same summary and fail the same way: when all succeed, when some company lookups fail,
when every branch fails, and when the database refuses some rows. A document's record is the
same by either path too."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis as redis_lib
import sqlalchemy as sa

from proj import batch, store
from proj.batch.dlq import DeadLetters
from proj.pipelines import documents, leads
from proj.sim.admin import SimAdmin
from proj.sim.config import ROUTES, key_fraction
from tests.integration.conftest import API_KEY
from tests.support import WorkerPool

#: The results database refuses these rows (a real SQLite trigger, not a mock).
REFUSE_ROWS = """
CREATE TRIGGER refuse_leads BEFORE INSERT ON enriched_leads
WHEN NEW.email LIKE 'refused%'
BEGIN SELECT RAISE(ABORT, 'refused by the test'); END
"""

#: Summary fields about where and how fast the work ran, not about its result: a canvas
#: measures its tasks' queues, a batch runs on its runners' queue.
TRANSPORT_FIELDS = ("run_id", "wall_s", "sequential_call_s", "by_queue", "queue_wait")


@dataclass
class Run:
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    calls: dict[str, int]


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('parity') / 'results.sqlite3'}"
    with store.engine(url).begin() as conn:
        conn.execute(sa.text(REFUSE_ROWS))
    return url


@pytest.fixture(scope="module")
def lead_workers(
    redis_server: Any, sim_server: str, db_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[redis_lib.Redis]:
    """One worker for every scenario (Redis is not emptied between them: each scenario uses
    leads of its own, so no batch answers from another's cache)."""
    client = redis_lib.Redis.from_url(redis_server.url)
    client.flushdb()
    pool = WorkerPool(tmp_path_factory.mktemp("parity-logs"))
    env = {
        "PROVIDER_BASE_URL": sim_server,
        "PROVIDER_API_KEY": API_KEY,
        "PROJ_DATABASE_URL": db_url,
        # These tests are about what each path does with failures, not about pausing a
        # failing dependency; a lead's second try comes 0.2 s after its first.
        "PROJ_BREAKER_ENABLED": "false",
        "PROJ_RETRY_BACKOFF_S": "0.2",
    }
    pool.start("parity", ("bulk", "urgent"), concurrency=4, env=env)
    yield client
    pool.kill_all()
    client.close()


def _calls(sim: SimAdmin) -> dict[str, int]:
    return {route: sim.count(route) for route in ROUTES}


def _since(before: dict[str, int], sim: SimAdmin) -> dict[str, int]:
    return {route: n - before[route] for route, n in _calls(sim).items()}


def _rows(run_id: str, url: str) -> list[dict[str, Any]]:
    rows = [
        {k: v for k, v in r.items() if k not in ("run_id", "created_at")}
        for r in store.leads_of_run(run_id, url=url)
    ]
    return sorted(rows, key=lambda r: r["lead_key"])


def _summary(run_id: str, url: str) -> dict[str, Any]:
    summary = store.run_summary(run_id, url=url)
    assert summary is not None, f"no summary stored for {run_id}"
    out = {k: v for k, v in summary.items() if k not in TRANSPORT_FIELDS}
    out["by_category"] = {
        c: {k: v for k, v in fields.items() if k != "seconds"}
        for c, fields in summary["by_category"].items()
    }
    return out


def _both(items: list[dict[str, Any]], sim: SimAdmin, url: str) -> tuple[Run, Run, Any]:
    """The canvas run, the batch run (and its final progress), one after the other."""
    before = _calls(sim)
    plan = leads.build(items)
    plan.delay().get(timeout=60)
    canvas = Run(_rows(plan.run_id, url), _summary(plan.run_id, url), _since(before, sim))
    before = _calls(sim)
    handle = batch.submit("leads", items)
    progress = handle.wait(timeout_s=60, interval_s=0.1)
    runs = Run(_rows(handle.batch_id, url), _summary(handle.batch_id, url), _since(before, sim))
    return canvas, runs, (handle, progress)


def _leads(prefix: str, domains: list[str]) -> list[dict[str, Any]]:
    return [
        {"email": f"{prefix}{i}@{d}", "name": f"Lead {i}", "message": "pricing for a team of 8?"}
        for i, d in enumerate(domains)
    ]


def _assert_same(canvas: Run, runs: Run) -> None:
    assert canvas.rows == runs.rows
    assert canvas.summary == runs.summary
    assert canvas.calls == runs.calls


def test_parity_when_every_lead_succeeds(
    lead_workers: redis_lib.Redis, sim: SimAdmin, db_url: str
) -> None:
    items = _leads("ok", [f"okco{i}.com" for i in range(5)])
    canvas, runs, (_, progress) = _both(items, sim, db_url)
    _assert_same(canvas, runs)
    assert len(canvas.rows) == 5 and canvas.summary["stored"] == 5
    assert canvas.summary["failed_items"] == [] and canvas.summary["failed_branches"] == 0
    assert canvas.calls == {"chat": 5, "company": 5, "person": 5, "source": 0}
    assert (progress.done, progress.failed) == (5, 0)


def test_parity_when_some_company_lookups_fail(
    lead_workers: redis_lib.Redis, sim: SimAdmin, db_url: str
) -> None:
    sim.configure({"routes": {"company": {"error_rate": 0.5, "error_by_key": True}}})
    candidates = [f"pf{i}.io" for i in range(40)]
    failing = [d for d in candidates if key_fraction(d) < 0.5][:3]
    domains = failing + [d for d in candidates if key_fraction(d) >= 0.5][:3]
    items = _leads("part", domains)
    canvas, runs, (_, progress) = _both(items, sim, db_url)
    _assert_same(canvas, runs)
    assert len(canvas.rows) == 6 and canvas.summary["stored"] == 6
    missing = {m["item"].split("@")[1] for m in canvas.summary["missing_company"]}
    assert missing == set(failing)
    assert canvas.summary["errors_by_kind"] == {"server_error": 3}
    for row in canvas.rows:
        if row["email"].split("@")[1] in failing:
            assert row["company_name"] is None and "company" in json.loads(row["missing"])
    assert (progress.done, progress.failed) == (6, 0)


def test_parity_when_every_branch_fails(
    lead_workers: redis_lib.Redis, sim: SimAdmin, db_url: str
) -> None:
    broken = {"error_rate": 1.0}
    sim.configure({"routes": {"chat": broken, "company": broken, "person": broken}})
    items = _leads("down", [f"downco{i}.com" for i in range(3)])
    canvas, runs, (handle, progress) = _both(items, sim, db_url)
    _assert_same(canvas, runs)
    assert canvas.rows == [] and canvas.summary["items"] == 3 and canvas.summary["stored"] == 0
    failed = canvas.summary["failed_items"]
    assert [f["item"] for f in failed] == [i["email"] for i in items]
    assert {f["kind"] for f in failed} == {"all_branches_failed"}
    assert all("every branch failed: ai: server_error" in f["reason"] for f in failed)
    # Each lead is tried twice (the canvas task's retry, the batch's second pass), then reported.
    assert canvas.calls == {"chat": 6, "company": 6, "person": 6, "source": 0}
    assert (progress.done, progress.failed) == (0, 3)
    letters = DeadLetters(lead_workers).entries(handle.batch_id)
    assert sorted(e["item"]["email"] for e in letters) == sorted(i["email"] for i in items)


def test_parity_when_the_database_refuses_some_rows(
    lead_workers: redis_lib.Redis, sim: SimAdmin, db_url: str
) -> None:
    items = _leads("refused", ["rcoa.com", "rcob.com"]) + _leads("kept", ["kco1.com", "kco2.com"])
    canvas, runs, (handle, progress) = _both(items, sim, db_url)
    _assert_same(canvas, runs)
    assert sorted(r["email"] for r in canvas.rows) == ["kept0@kco1.com", "kept1@kco2.com"]
    assert canvas.summary["items"] == 4 and canvas.summary["stored"] == 2
    failed = canvas.summary["failed_items"]
    assert [f["item"] for f in failed] == ["refused0@rcoa.com", "refused1@rcob.com"]
    assert {f["kind"] for f in failed} == {"store"}
    assert all("refused by the test" in f["reason"] for f in failed)
    assert canvas.calls == {"chat": 6, "company": 6, "person": 6, "source": 0}
    assert (progress.done, progress.failed) == (2, 2)
    assert len(DeadLetters(lead_workers).entries(handle.batch_id)) == 2


def _document(document_id: str, url: str) -> dict[str, Any]:
    table = store.analysed_documents
    with store.engine(url).connect() as conn:
        row = conn.execute(sa.select(table.c.record).where(table.c.document_id == document_id))
        record = json.loads(row.scalar_one())
    return {k: v for k, v in record.items() if k not in ("document_id", "seconds", "wall_s")}


def test_documents_store_the_same_record_by_either_path(
    lead_workers: redis_lib.Redis, sim: SimAdmin, db_url: str
) -> None:
    text = "Acme Corp and Globex signed in Berlin. Great news for Alice."
    documents.build({"id": "canvas-doc", "text": text}).delay().get(timeout=60)
    batch.submit("documents", [{"id": "batch-doc", "text": text}]).wait(timeout_s=60)
    canvas = _document("canvas-doc", db_url)
    assert canvas == _document("batch-doc", db_url)
    assert canvas["errors"] == {} and "Acme" in canvas["entities"]
