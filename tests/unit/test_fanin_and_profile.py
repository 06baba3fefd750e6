"""Fan-in by name, profile combination and summaries: pure functions."""

from __future__ import annotations

import asyncio

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from proj.pipelines.fanin import error_record, failed, fan_in, gather_branches, ok
from proj.pipelines.profile import budget_estimate, combine, company_size, qualification_score
from proj.pipelines.summary import summarize
from proj.provider.errors import ProviderServerError


def test_fan_in_keys_by_name_not_order() -> None:
    records = [failed("b", {"kind": "timeout"}, 1.0), ok("c", 3, 0.1), ok("a", 1, 0.5)]
    out = fan_in(records)
    assert out["results"] == {"c": 3, "a": 1}
    assert out["errors"] == {"b": {"kind": "timeout"}}
    assert fan_in(reversed(records))["results"] == out["results"]


def test_error_record_kinds() -> None:
    assert error_record(ProviderServerError("boom", status=503))["kind"] == "server_error"
    assert error_record(TimeoutError())["kind"] == "timeout"
    assert error_record(SoftTimeLimitExceeded())["kind"] == "timeout"
    assert error_record(KeyError("x"))["kind"] == "internal"


def test_gather_branches_runs_concurrently_with_deadlines() -> None:
    async def slow() -> dict[str, int]:
        await asyncio.sleep(5)
        return {"v": 1}

    async def quick(v: int) -> dict[str, object]:
        await asyncio.sleep(0.05)
        return {"v": v, "usage": {"model": "m", "cost_usd": 0.5}}

    async def boom() -> None:
        raise ProviderServerError("500", status=500)

    out = asyncio.run(gather_branches({"slow": slow(), "q": quick(2), "b": boom()}, 0.3))
    assert out["results"] == {"q": {"v": 2}}
    assert out["errors"]["slow"]["kind"] == "timeout"
    assert out["errors"]["b"]["kind"] == "server_error"
    assert out["usage"] == [{"model": "m", "cost_usd": 0.5}]


@pytest.mark.parametrize(
    ("employees", "label"),
    [
        (1, "1-10"),
        (10, "1-10"),
        (11, "11-50"),
        (999, "201-1000"),
        (5000, "1001-5000"),
        (5001, "5000+"),
        (None, None),
    ],
)
def test_company_size_buckets(employees: int | None, label: str | None) -> None:
    assert company_size(employees) == label


def test_budget_estimate_uses_what_is_known() -> None:
    assert budget_estimate({"revenue_usd": 10_000_000}, {"budget_signal": "high"}) == 10_000
    assert budget_estimate(None, {"budget_signal": "low"}) == 5_000
    assert budget_estimate({"revenue_usd": 10**12}, None) == 500_000
    assert budget_estimate(None, None) is None


def test_qualification_score_bounds_and_reweighting() -> None:
    assert qualification_score(None, None, None) == 1
    assert qualification_score({"fit_score": 10}, "1001-5000", {"seniority": "executive"}) == 10
    assert qualification_score({"fit_score": 4}, None, None) == 4  # only the AI is known
    assert 1 <= qualification_score({"fit_score": 99}, None, None) <= 10


def test_combine_keeps_other_data_when_company_is_missing() -> None:
    fan = {
        "results": {
            "ai": {"fit_score": 8, "urgency": "high", "intent": "high"},
            "person": {"seniority": "senior", "title": "VP", "name": "Ann"},
        },
        "errors": {"company": {"kind": "server_error", "message": "500"}},
        "usage": [],
    }
    p = combine({"key": "k", "email": "a@b.co", "company_domain": "b.co"}, fan, model="m")
    assert p["company_size"] is None and p["company_name"] is None
    assert p["seniority"] == "senior" and p["urgency"] == "high"
    assert p["missing"] == {"company": "server_error: 500"}
    assert p["qualification_score"] == 8


def test_summary_reports_missing_costs_and_categories() -> None:
    records = [
        {
            "email": "a@x",
            "score": 9,
            "budget": 10,
            "category": "lead",
            "stored": True,
            "errors": {},
            "seconds": {"ai": 1.0, "company": 0.5},
            "usage": [{"cost_usd": 0.01, "prompt_tokens": 10, "completion_tokens": 5}],
            "queue": "bulk",
            "model": "small",
        },
        {
            "email": "b@x",
            "score": 3,
            "budget": 5,
            "category": "lead",
            "stored": True,
            "errors": {"company": {"kind": "timeout", "message": "slow"}},
            "seconds": {"ai": 2.0},
            "usage": [],
            "queue": "urgent",
            "model": "small",
        },
    ]
    s = summarize("leads", "r1", records, started_at=100.0, now=101.5)
    assert s["items"] == s["stored"] == 2
    assert s["top_prospects"][0]["email"] == "a@x"
    assert s["missing_company"] == [{"item": "b@x", "kind": "timeout", "reason": "slow"}]
    assert s["errors_by_kind"] == {"timeout": 1}
    assert s["by_category"]["lead"]["errors"] == 1
    assert s["cost_usd"] == pytest.approx(0.01)
    assert s["wall_s"] == pytest.approx(1.5)
    assert s["sequential_call_s"] == pytest.approx(3.5)
    assert s["by_queue"] == {"bulk": 1, "urgent": 1}
