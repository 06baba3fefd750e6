"""The results store on SQLite and on a real PostgreSQL: upserts store each result once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from proj import store
from tests.pg import PrivatePostgres


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    pg = PrivatePostgres().start()
    if pg.url is None:
        pytest.skip(pg.reason)
    yield pg.url
    pg.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'r.sqlite3'}"
    return str(request.getfixturevalue("postgres_url"))


def _profile(key: str, score: int) -> dict[str, object]:
    return {
        "lead_key": key,
        "email": key,
        "qualification_score": score,
        "missing": {},
        "company_size": "11-50",
        "budget_estimate_usd": 1000,
    }


def test_store_upserts_each_lead_once(db_url: str) -> None:
    run = f"run-{abs(hash(db_url))}"
    store.save_lead(run, _profile("a@x.com", 3), url=db_url)
    store.save_lead(run, _profile("a@x.com", 7), url=db_url)  # a redelivered task
    store.save_lead(run, _profile("b@x.com", 5), url=db_url)
    rows = {r["lead_key"]: r for r in store.leads_of_run(run, url=db_url)}
    assert set(rows) == {"a@x.com", "b@x.com"}
    assert rows["a@x.com"]["qualification_score"] == 7


def test_store_run_summary_roundtrip(db_url: str) -> None:
    store.save_run("r1", "leads", {"items": 2}, url=db_url)
    store.save_run("r1", "leads", {"items": 3}, url=db_url)
    assert store.run_summary("r1", url=db_url) == {"items": 3}
    assert store.run_summary("nope", url=db_url) is None
