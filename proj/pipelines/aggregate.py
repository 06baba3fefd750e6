"""Multi-source aggregation: N sources fetched in parallel, combined into one report.

Canvas: ``chord([fetch_source(s) for s in sources], combine_sources)``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from celery import chord
from pydantic import BaseModel, ConfigDict, Field, field_validator

from proj.app import app
from proj.pipelines.branches import run_as_branch
from proj.pipelines.fanin import fan_in
from proj.pipelines.plan import Planned
from proj.pipelines.validation import Rejected, validate_items
from proj.provider import runtime
from proj.settings import get_settings


class Source(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    url: str = Field(max_length=2000)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return v


async def fetch(p: runtime.Providers, name: str, url: str) -> Any:
    return await p.get(f"source.{name}").get_json(url)


@app.task(name="proj.aggregate.fetch_source")
def fetch_source(name: str, url: str) -> dict[str, Any]:
    return run_as_branch(name, lambda p: fetch(p, name, url), get_settings().branch_timeout_s)


@app.task(name="proj.aggregate.combine")
def combine_sources(
    records: list[dict[str, Any]], report: str, started_at: float
) -> dict[str, Any]:
    fan = fan_in(records)
    metrics = {n: v.get("metric") for n, v in fan["results"].items() if isinstance(v, dict)}
    return {
        "report": report,
        "sources": fan["results"],
        "errors": fan["errors"],
        "ok": len(fan["results"]),
        "failed": len(fan["errors"]),
        "metric_total": sum(m for m in metrics.values() if isinstance(m, (int, float))),
        "seconds": fan["seconds"],
        "wall_s": time.time() - started_at,
    }


def build(sources: list[Any], *, report: str | None = None) -> Planned:
    """Validate sources (names must be unique) and plan the fan-out."""
    accepted, rejected = validate_items(Source, sources, kind="source", label_field="name")
    seen: set[str] = set()
    unique = []
    for i, s in enumerate(accepted):
        if s.name in seen:
            rejected.append(Rejected(i, f"source ({s.name})", "name", s.name, "is a duplicate"))
        else:
            seen.add(s.name)
            unique.append(s)
    report = report or uuid.uuid4().hex
    if not unique:
        return Planned(None, report, 0, rejected)
    header = [fetch_source.si(s.name, s.url) for s in unique]
    return Planned(
        chord(header, combine_sources.s(report, time.time())), report, len(unique), rejected
    )
