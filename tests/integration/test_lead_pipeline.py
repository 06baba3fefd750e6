"""The lead pipeline end to end: real Redis, workers and the simulator over loopback."""

from __future__ import annotations

import redis as redis_lib

from proj import store
from proj.pipelines import leads
from proj.sim.admin import SimAdmin
from tests.support import WorkerPool


def _leads(n: int) -> list[dict[str, object]]:
    return [
        {
            "email": f"buyer{i}@company{i}.com",
            "name": f"Buyer {i}",
            "message": f"We need help with onboarding, team of {i}",
        }
        for i in range(n)
    ]


def test_fifty_leads_produce_fifty_rows_and_one_summary(
    workers: WorkerPool, sim: SimAdmin, provider_env: dict[str, str], redis_client: redis_lib.Redis
) -> None:
    workers.start("bulk", ("bulk", "urgent"), concurrency=4, env=provider_env)
    plan = leads.build(_leads(50))
    assert plan.accepted == 50 and not plan.rejected
    note = plan.delay().get(timeout=120)
    assert note["notified"] == "log"
    url = provider_env["PROJ_DATABASE_URL"]
    rows = store.leads_of_run(plan.run_id, url=url)
    assert len(rows) == 50
    assert all(1 <= r["qualification_score"] <= 10 for r in rows)
    summary = store.run_summary(plan.run_id, url=url)
    assert summary is not None
    assert summary["items"] == summary["stored"] == 50
    assert len(summary["top_prospects"]) == 5
    assert sim.count("chat") == sim.count("company") == sim.count("person") == 50
