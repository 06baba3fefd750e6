"""The results database (SQLAlchemy Core): SQLite by default, PostgreSQL through a URL.

Rows are upserted on their natural key, so a re-run (redelivery, resume) stores each result
once.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from proj.files import touch_private
from proj.resilience.backoff import Backoff
from proj.settings import get_settings

metadata = sa.MetaData()

enriched_leads = sa.Table(
    "enriched_leads",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("lead_key", sa.String(320), primary_key=True),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("name", sa.String(200)),
    sa.Column("company_name", sa.String(200)),
    sa.Column("company_size", sa.String(20)),
    sa.Column("budget_estimate_usd", sa.Integer),
    sa.Column("urgency", sa.String(10)),
    sa.Column("qualification_score", sa.Integer, nullable=False),
    sa.Column("model", sa.String(100)),
    sa.Column("cost_usd", sa.Float),
    sa.Column("missing", sa.Text, nullable=False),
    sa.Column("profile", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

analysed_documents = sa.Table(
    "analysed_documents",
    metadata,
    sa.Column("document_id", sa.String(200), primary_key=True),
    sa.Column("record", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

pipeline_runs = sa.Table(
    "pipeline_runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("pipeline", sa.String(40), nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

_lock = threading.Lock()
_engines: dict[tuple[int, str], Engine] = {}


#: Retries of a transient database error: creating tables (a race on PostgreSQL's catalog),
#: and an upsert (SQLite busy, a dropped connection).
_CREATE_RETRY = Backoff(0.1, 0.4)
_UPSERT_RETRY = Backoff(0.2, 0.8)


def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # many worker processes write at once
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _create_tables(eng: Engine) -> None:
    """CREATE TABLE IF NOT EXISTS for every table. Many worker processes do this at once on
    first use; a loser of a race on PostgreSQL's catalog simply tries again."""
    for attempt in range(5):
        try:
            with eng.begin() as conn:
                for table in metadata.sorted_tables:
                    conn.execute(sa.schema.CreateTable(table, if_not_exists=True))
            return
        except sa.exc.DBAPIError:
            if attempt == 4:
                raise
            time.sleep(_CREATE_RETRY.delay(attempt + 1))


def engine(url: str | None = None) -> Engine:
    """This process's engine for ``url`` (the configured database by default), tables created."""
    url = url or get_settings().database
    key = (os.getpid(), url)
    with _lock:
        eng = _engines.get(key)
        if eng is None:
            if url.startswith("sqlite:///"):
                path = url.removeprefix("sqlite:///").split("?", 1)[0]
                if path and path != ":memory:":
                    # Created 0600 (in a 0700 directory) before SQLite creates it 0644; its
                    # WAL and shared-memory files take the database file's mode.
                    touch_private(Path(path).absolute())
                eng = sa.create_engine(url, connect_args={"timeout": 30})
                sa.event.listen(eng, "connect", _sqlite_pragmas)
            else:
                eng = sa.create_engine(url, pool_pre_ping=True)
            _create_tables(eng)
            _engines[key] = eng
        return eng


def _upsert(table: sa.Table, row: dict[str, Any], keys: list[str], eng: Engine) -> None:
    """Insert or update ``row`` by its key; a transient database error is retried briefly."""
    for attempt in range(4):
        try:
            _upsert_once(table, row, keys, eng)
            return
        except sa.exc.OperationalError:
            if attempt == 3:
                raise
            time.sleep(_UPSERT_RETRY.delay(attempt + 1))


def _upsert_once(table: sa.Table, row: dict[str, Any], keys: list[str], eng: Engine) -> None:
    if eng.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(table).values(**row)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table).values(**row)
    stmt = stmt.on_conflict_do_update(
        index_elements=keys, set_={k: v for k, v in row.items() if k not in keys}
    )
    with eng.begin() as conn:
        conn.execute(stmt)


def _now() -> datetime:
    return datetime.now(UTC)


def save_lead(run_id: str, profile: dict[str, Any], *, url: str | None = None) -> None:
    """Store one enriched lead (idempotent on run_id + lead_key)."""
    row = {
        "run_id": run_id,
        "lead_key": profile["lead_key"],
        "email": profile["email"],
        "name": profile.get("name"),
        "company_name": profile.get("company_name"),
        "company_size": profile.get("company_size"),
        "budget_estimate_usd": profile.get("budget_estimate_usd"),
        "urgency": profile.get("urgency"),
        "qualification_score": profile["qualification_score"],
        "model": profile.get("model"),
        "cost_usd": profile.get("cost_usd"),
        "missing": json.dumps(profile.get("missing", {})),
        "profile": json.dumps(profile),
        "created_at": _now(),
    }
    _upsert(enriched_leads, row, ["run_id", "lead_key"], engine(url))


def save_document(document_id: str, record: dict[str, Any], *, url: str | None = None) -> None:
    row = {"document_id": document_id, "record": json.dumps(record), "created_at": _now()}
    _upsert(analysed_documents, row, ["document_id"], engine(url))


def save_run(
    run_id: str, pipeline: str, summary: dict[str, Any], *, url: str | None = None
) -> None:
    row = {
        "run_id": run_id,
        "pipeline": pipeline,
        "summary": json.dumps(summary),
        "created_at": _now(),
    }
    _upsert(pipeline_runs, row, ["run_id"], engine(url))


def leads_of_run(run_id: str, *, url: str | None = None) -> list[dict[str, Any]]:
    with engine(url).connect() as conn:
        rows = conn.execute(sa.select(enriched_leads).where(enriched_leads.c.run_id == run_id))
        return [dict(r._mapping) for r in rows]


def run_summary(run_id: str, *, url: str | None = None) -> dict[str, Any] | None:
    with engine(url).connect() as conn:
        row = conn.execute(
            sa.select(pipeline_runs.c.summary).where(pipeline_runs.c.run_id == run_id)
        ).first()
    return None if row is None else dict(json.loads(row[0]))
