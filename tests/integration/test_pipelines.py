"""Partial failure, fan-in by name, triage, time limits and secrets, on real workers."""

from __future__ import annotations

from pathlib import Path

import redis as redis_lib

from proj import store
from proj.pipelines import aggregate, documents, leads
from proj.sim.admin import SimAdmin
from proj.sim.config import key_fraction
from tests.integration.conftest import API_KEY
from tests.support import WorkerPool


def _leads(n: int, **extra: object) -> list[dict[str, object]]:
    return [
        {
            "email": f"lead{i}@firm{i}.io",
            "name": f"Lead {i}",
            "message": "Looking at plans",
            **extra,
        }
        for i in range(n)
    ]


def test_failed_company_lookups_keep_the_rest_and_are_listed_in_the_summary(
    workers: WorkerPool, sim: SimAdmin, provider_env: dict[str, str], redis_client: redis_lib.Redis
) -> None:
    sim.configure({"routes": {"company": {"error_rate": 0.3, "error_by_key": True}}})
    # The breaker would (rightly) pause a dependency failing 30% of calls; this test is about
    # what the fan-in does with the failures, so it runs without one.
    env = {**provider_env, "PROJ_BREAKER_ENABLED": "false"}
    workers.start("bulk", ("bulk", "urgent"), concurrency=4, env=env)
    batch = _leads(40)
    failing = {
        lead["email"]
        for lead in batch
        if key_fraction(f"firm{str(lead['email']).split('firm')[1]}") < 0.3
    }
    plan = leads.build(batch)
    plan.delay().get(timeout=120)
    summary = store.run_summary(plan.run_id, url=provider_env["PROJ_DATABASE_URL"])
    assert summary is not None and summary["items"] == 40
    missing = {m["item"]: m for m in summary["missing_company"]}
    assert set(missing) == failing and failing
    assert all(m["kind"] == "server_error" and "500" in m["reason"] for m in missing.values())
    rows = {
        r["email"]: r
        for r in store.leads_of_run(plan.run_id, url=provider_env["PROJ_DATABASE_URL"])
    }
    assert len(rows) == 40
    for email in failing:
        row = rows[email]
        assert row["company_name"] is None and row["company_size"] is None
        profile = __import__("json").loads(row["profile"])
        assert profile["seniority"] is not None  # the person lookup is kept
        assert profile["intent"] is not None  # and the AI analysis
        assert "company" in profile["missing"]


def test_fan_in_is_keyed_by_name_whatever_finishes_first(
    workers: WorkerPool, sim: SimAdmin, provider_env: dict[str, str], redis_client: redis_lib.Redis
) -> None:
    workers.start("bulk", ("bulk", "urgent"), concurrency=4, env=provider_env)
    base = provider_env["PROVIDER_BASE_URL"]
    # The first source is the slowest, the last the fastest; one fails outright.
    sources = [
        {"name": "slow", "url": f"{base}/v1/sources/slow?delay_ms=900"},
        {"name": "mid", "url": f"{base}/v1/sources/mid?delay_ms=300"},
        {"name": "fast", "url": f"{base}/v1/sources/fast?delay_ms=1"},
        {"name": "broken", "url": f"{base}/v1/nope"},
    ]
    report = aggregate.build(sources).delay().get(timeout=60)
    assert set(report["sources"]) == {"slow", "mid", "fast"}
    for name, value in report["sources"].items():
        assert value["source"] == name
    assert report["errors"]["broken"]["kind"] == "permanent"
    assert report["seconds"]["slow"] > report["seconds"]["fast"]


def test_document_analysis_fans_out_and_combines_one_record(
    workers: WorkerPool, sim: SimAdmin, provider_env: dict[str, str], redis_client: redis_lib.Redis
) -> None:
    sim.configure({"routes": {"chat": {"latency_ms": 50, "latency_sigma": 1.0}}})
    workers.start("bulk", ("bulk", "urgent"), concurrency=3, env=provider_env)
    doc = {"id": "doc-1", "text": "Acme Corp and Globex signed in Berlin. Great news for Alice."}
    record = documents.build(doc).delay().get(timeout=60)
    assert record["document_id"] == "doc-1"
    assert record["sentiment"] in {"negative", "neutral", "positive"}
    assert "Acme" in record["entities"]
    assert record["summary"]
    assert record["errors"] == {}
    assert record["cost_usd"] > 0
    assert sim.count("chat") == 3


def test_invalid_lead_rejected_at_submission_and_valid_ones_complete(
    workers: WorkerPool, sim: SimAdmin, provider_env: dict[str, str], redis_client: redis_lib.Redis
) -> None:
    workers.start("bulk", ("bulk", "urgent"), concurrency=2, env=provider_env)
    batch = [*_leads(3), {"name": "No Email"}, {"email": "not-an-email"}]
    plan = leads.build(batch)
    assert plan.accepted == 3
    assert [(r.index, r.field) for r in plan.rejected] == [(3, "email"), (4, "email")]
    assert "'not-an-email'" in str(plan.rejected[1]) and "lead 4" in str(plan.rejected[1])
    plan.delay().get(timeout=60)
    summary = store.run_summary(plan.run_id, url=provider_env["PROJ_DATABASE_URL"])
    rows = store.leads_of_run(plan.run_id, url=provider_env["PROJ_DATABASE_URL"])
    assert len(rows) == 3, summary
    assert sim.count("chat") == 3


def test_triage_routes_urgent_to_urgent_queue_and_complex_to_large_model(
    workers: WorkerPool, sim: SimAdmin, provider_env: dict[str, str], redis_client: redis_lib.Redis
) -> None:
    workers.start("urgent", ("urgent",), concurrency=1, env=provider_env)
    workers.start("bulk", ("bulk",), concurrency=2, env=provider_env)
    batch = [
        {"email": "ceo@bigco.com", "message": "Our site is down, we need this urgent!"},
        {"email": "cto@bigco.com", "message": "Detailed requirements. " * 80},
        {"email": "dev@bigco.com", "message": "Just browsing"},
    ]
    plan = leads.build(batch)
    plan.delay().get(timeout=60)
    rows = {
        r["email"]: r
        for r in store.leads_of_run(plan.run_id, url=provider_env["PROJ_DATABASE_URL"])
    }
    summary = store.run_summary(plan.run_id, url=provider_env["PROJ_DATABASE_URL"])
    assert summary is not None
    assert summary["by_queue"] == {"urgent": 1, "bulk": 2}
    assert rows["cto@bigco.com"]["model"] == "gpt-4o"  # complex: the large model, on bulk
    assert rows["ceo@bigco.com"]["model"] == "gpt-4o-mini"
    assert rows["dev@bigco.com"]["model"] == "gpt-4o-mini"


def test_branch_slower_than_its_limit_is_a_timeout_error_and_the_run_finishes(
    workers: WorkerPool, sim: SimAdmin, provider_env: dict[str, str], redis_client: redis_lib.Redis
) -> None:
    sim.configure({"routes": {"chat": {"latency_ms": 5000}}})
    env = {**provider_env, "PROJ_BRANCH_TIMEOUT_S": "1"}
    workers.start("bulk", ("bulk", "urgent"), concurrency=4, env=env)
    plan = leads.build(_leads(4))
    plan.delay().get(timeout=60)
    summary = store.run_summary(plan.run_id, url=provider_env["PROJ_DATABASE_URL"])
    assert summary is not None
    assert summary["stored"] == 4
    assert summary["errors_by_kind"] == {"timeout": 4}
    assert set(summary["missing"]) == {"ai"}
    doc = documents.build({"id": "slow-doc", "text": "Some text"}).delay().get(timeout=60)
    assert {e["kind"] for e in doc["errors"].values()} == {"timeout"}


def test_api_key_never_in_arguments_results_or_logs(
    workers: WorkerPool,
    sim: SimAdmin,
    provider_env: dict[str, str],
    redis_client: redis_lib.Redis,
    tmp_path: Path,
) -> None:
    sim.configure({"routes": {"person": {"error_rate": 0.5}}})
    workers.start(
        "bulk",
        ("bulk", "urgent"),
        concurrency=2,
        env=provider_env,
        extra_args=("--loglevel", "DEBUG"),
    )
    plan = leads.build(_leads(5))
    plan.delay().get(timeout=60)
    documents.build({"id": "d", "text": "Hello"}).delay().get(timeout=60)
    assert sim.stats()["unauthorized"] == 0  # the key was sent, in a header
    secret = API_KEY.encode()
    for key in redis_client.scan_iter(count=1000):
        kind = redis_client.type(key)
        values: list[bytes] = []
        if kind == b"string":
            values = [redis_client.get(key) or b""]
        elif kind == b"list":
            values = list(redis_client.lrange(key, 0, -1))
        elif kind == b"hash":
            values = list(redis_client.hgetall(key).values())
        elif kind == b"zset":
            values = list(redis_client.zrange(key, 0, -1))
        elif kind == b"set":
            values = list(redis_client.smembers(key))
        assert all(secret not in v for v in values), key
    for log in workers.log_dir.glob("*.log"):
        assert secret not in log.read_bytes(), log
