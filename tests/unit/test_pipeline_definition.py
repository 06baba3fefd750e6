"""One definition per pipeline: the registry, validation once into the queued form, the
failure rule's records and the summary that lists failed items."""

from __future__ import annotations

import asyncio

import pytest

from proj.batch.pipelines import ItemPipeline, get_pipeline
from proj.pipelines import leads, registry
from proj.pipelines.definition import (
    BranchesFailed,
    StoreFailed,
    content_key,
    failure,
    stored,
    unique,
)
from proj.pipelines.notify import headline
from proj.pipelines.summary import summarize


def test_registry_finds_every_module_that_defines_a_pipeline() -> None:
    assert set(registry.pipelines()) == {"company", "documents", "leads"}
    assert registry.get("leads") is leads.PIPELINE


def test_registry_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown pipeline 'nope'; choose one of \['company'"):
        get_pipeline("nope")


def test_batch_runs_the_same_definition_as_the_canvas() -> None:
    p = get_pipeline("leads")
    assert isinstance(p, ItemPipeline) and p.definition is leads.PIPELINE and p.name == "leads"


def test_validate_gives_the_normalised_lead_without_unset_fields() -> None:
    items, rejected = leads.PIPELINE.validate([{"email": " Ann@Acme.COM ", "extra": 1}, {}])
    assert items == [
        {
            "email": "ann@acme.com",
            "company_domain": "acme.com",
            "message": "",
            "key": "ann@acme.com",
        }
    ]
    assert str(rejected[0]) == "lead 1: field 'email' is required (got None)"


def test_unique_keeps_the_first_item_of_each_key() -> None:
    items = [{"key": "a", "n": 1}, {"key": "b"}, {"key": "a", "n": 2}, {"x": 1}, {"x": 1}]
    assert unique(items) == [{"key": "a", "n": 1}, {"key": "b"}, {"x": 1}]


def test_content_key_is_the_key_field_else_a_stable_hash() -> None:
    assert content_key({"key": "k1", "x": 1}) == "k1"
    assert content_key({"b": 1, "a": 2}) == content_key({"a": 2, "b": 1})
    assert len(content_key({"a": 1})) == 32


def test_build_runs_each_key_once() -> None:
    plan = leads.build([{"email": "a@x.com"}, {"email": "A@X.com"}, {"email": "b@x.com"}])
    assert (plan.accepted, plan.duplicates) == (2, 1)


def test_every_branch_failed_names_each_branch_and_error() -> None:
    exc = BranchesFailed.of(
        {
            "ai": {"kind": "timeout", "message": "slow"},
            "person": {"kind": "permanent", "message": "404"},
        }
    )
    assert failure(exc) == {
        "kind": "all_branches_failed",
        "message": "BranchesFailed: every branch failed: ai: timeout: slow; person: permanent: 404",
    }


def test_store_failure_is_the_items_and_keeps_the_first_line_only() -> None:
    def save(run_id: str) -> None:
        raise RuntimeError(f"refused {run_id}\n[SQL: INSERT ...]\n[parameters: ...]")

    with pytest.raises(StoreFailed) as info:
        asyncio.run(stored(save, "r1"))
    assert failure(info.value) == {
        "kind": "store",
        "message": "StoreFailed: RuntimeError: refused r1",
    }


def test_failed_lead_record_names_the_lead_and_its_error() -> None:
    error = {"kind": "store", "message": "m", "attempts": 2, "traceback": "..."}
    assert leads.PIPELINE.failed({"email": "a@x.com", "key": "a@x.com"}, error) == {
        "key": "a@x.com",
        "email": "a@x.com",
        "stored": False,
        "failed": {"kind": "store", "message": "m"},
    }


def test_summary_counts_failed_items_and_lists_them_apart() -> None:
    records = [
        {"email": "a@x", "score": 7, "category": "lead", "stored": True, "errors": {}},
        {
            "email": "b@x",
            "key": "b@x",
            "stored": False,
            "failed": {"kind": "store", "message": "m"},
        },
    ]
    s = summarize("leads", "r1", records, started_at=0.0, now=1.0)
    assert (s["items"], s["stored"], s["failed_branches"]) == (2, 1, 0)
    assert s["failed_items"] == [{"item": "b@x", "kind": "store", "reason": "m"}]
    assert s["by_category"]["lead"]["items"] == 1 and set(s["by_category"]) == {"lead"}
    assert [p["email"] for p in s["top_prospects"]] == ["a@x"]
    assert "1/2 stored, 0 failed branches, 1 failed items" in headline(s)
