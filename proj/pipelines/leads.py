"""Lead enrichment: for each lead, an AI analysis, a company lookup and a person lookup in
parallel, combined into one profile and stored; then a summary and a notification.

Defined once (:data:`PIPELINE`), run two ways: ``build(leads).delay()`` (the Celery canvas
below) and ``proj submit --pipeline leads`` (the batch runner). Both validate a lead once,
where it enters, run the same :func:`process_lead` per lead and the same :func:`summarize_run`
and notification at the end, so the same leads give the same rows, summary and failures.

Canvas (one chord deep)::

    chord([enrich_lead(lead) for lead in unique leads], summarize_leads) | notify

Each lead's three branches run concurrently on the worker's event loop, each with a deadline,
so a slow or failing branch becomes an error in the fan-in, never a hang. The rules both paths
follow (where the two used to differ, the choice made):

- Some branches fail: the profile is built from what succeeded and stored; the summary lists
  what is missing and why.
- Every branch fails, or the profile cannot be stored: the lead *fails*. No row, nothing
  cached; it is tried once more (canvas: one task retry after PROJ_RETRY_BACKOFF_S; batch: the
  second pass), then it is in the summary's ``failed_items`` (and the batch's dead letters).
  The other leads go on. (The canvas used to store an empty profile scored 1 and count a store
  error as a finished lead; the batch left failed leads out of its summary.)
- What reaches the queue: the normalised lead without unset fields, in both; workers build it
  without validating it again. Leads with the same key run once in both (the canvas ran each
  copy).
- The summary lists every unique lead in input order, failed ones included, in both.

What stays different by nature: where the work ran (``by_queue`` and ``queue_wait`` come from
the canvas's tasks; a batch runs on its runners' queue), timings, and the batch's result cache
(a lead computed by an earlier batch within PROJ_CACHE_TTL_S is answered from it: no provider
call and no new row).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from celery import chord
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from proj import store
from proj.app import app
from proj.pipelines import profile as scoring
from proj.pipelines.company import DOMAIN
from proj.pipelines.definition import BranchesFailed, Pipeline, failure, stored, unique
from proj.pipelines.fanin import gather_branches
from proj.pipelines.notify import notify
from proj.pipelines.plan import Planned
from proj.pipelines.summary import summarize
from proj.provider import lookups, runtime
from proj.provider.errors import RateLimited
from proj.resilience.deferral import Deferral
from proj.settings import get_settings

logger = logging.getLogger(__name__)

_EMAIL = re.compile(r"^[^@\s]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")

#: What a lead's step may take beyond its branches: the store write (SQLite's busy timeout is
#: 30 s) and its retries.
STORE_ALLOWANCE_S = 35.0


class Lead(BaseModel):
    """One lead to enrich. Only ``email`` is required."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)
    email: str = Field(max_length=320)
    name: str | None = Field(None, max_length=200)
    company_domain: str | None = Field(None, max_length=253)
    message: str = Field("", max_length=20_000)
    urgent: bool | None = None
    key: str | None = Field(
        None, max_length=320, description="Idempotency key; the email if unset."
    )
    category: str | None = Field(None, min_length=1, max_length=64)  # triage's, else "lead"
    priority: int | None = Field(None, ge=0, le=9)  # higher starts first

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        if not _EMAIL.match(v):
            raise ValueError("is not a valid email address")
        return v.lower()

    @field_validator("company_domain")
    @classmethod
    def _domain(cls, v: str | None) -> str | None:
        if v is not None and not DOMAIN.match(v):
            raise ValueError("is not a domain name")
        return v.lower() if v else v

    @model_validator(mode="after")
    def _defaults(self) -> Lead:
        if self.company_domain is None:
            self.company_domain = self.email.split("@", 1)[1]
        if self.key is None:
            self.key = self.email
        return self


def _analysis_prompt(lead: Lead) -> list[dict[str, str]]:
    return [
        {
            "role": "system",
            "content": (
                "task: lead_analysis. You qualify sales leads. "
                "Reply with one JSON object with keys intent (low|medium|high), "
                "urgency (low|normal|high), budget_signal (low|medium|high), "
                "fit_score (integer 1-10) and summary (one sentence)."
            ),
        },
        {
            "role": "user",
            "content": (
                f"Lead: {lead.name or lead.email} <{lead.email}> at {lead.company_domain}.\n"
                f"Message: {lead.message}"
            ),
        },
    ]


async def analyse(p: runtime.Providers, lead: Lead, model: str) -> dict[str, Any]:
    result = await p.ai.chat(model=model, messages=_analysis_prompt(lead))
    data = result.json()
    return {
        **{k: data.get(k) for k in ("intent", "urgency", "budget_signal", "fit_score", "summary")},
        "usage": result.usage.to_dict(),
    }


async def process_lead(
    p: runtime.Providers, lead: Lead, *, run_id: str, model: str, category: str
) -> dict[str, Any]:
    """Enrich and store one lead; its record for the summary. Raises :class:`BranchesFailed`
    or :class:`StoreFailed` when there is nothing to keep (see the module's rules)."""
    fan = await gather_branches(
        {
            "ai": analyse(p, lead, model),
            "company": lookups.company(p, lead.company_domain or ""),
            "person": lookups.person(p, lead.email),
        },
        p.settings.branch_timeout_s,
    )
    if not fan["results"]:
        raise BranchesFailed.of(fan["errors"])
    profile = scoring.combine(lead.model_dump(), fan, model=model)
    await stored(store.save_lead, run_id, profile, url=p.settings.database)
    return {
        "key": lead.key,
        "email": lead.email,
        "name": profile.get("name"),
        "score": profile["qualification_score"],
        "budget": profile["budget_estimate_usd"],
        "urgency": profile["urgency"],
        "company_size": profile["company_size"],
        "errors": fan["errors"],
        "seconds": fan["seconds"],
        "usage": fan["usage"],
        "category": category,
        "model": model,
        "stored": True,
    }


def summarize_run(run_id: str, records: list[dict[str, Any]], started: float) -> dict[str, Any]:
    """The run's summary from every lead's record, stored as the run's row."""
    summary = summarize("leads", run_id, records, started_at=started, now=time.time())
    store.save_run(run_id, "leads", summary)
    return summary


class LeadsPipeline(Pipeline):
    name = "leads"
    model = Lead
    noun = "lead"
    label_field = "email"
    triage_as = "lead"
    text_field = "message"

    async def process(
        self, p: runtime.Providers, item: dict[str, Any], *, run_id: str
    ) -> dict[str, Any]:
        t = self.assess(item, p.settings)
        lead = Lead.model_construct(**item)
        return await process_lead(p, lead, run_id=run_id, model=t.model, category=t.category)

    def failed(self, item: Mapping[str, Any], error: Mapping[str, Any]) -> dict[str, Any]:
        return {**super().failed(item, error), "email": item.get("email")}

    async def finish(
        self, run_id: str, records: list[dict[str, Any]], started: float
    ) -> dict[str, Any]:
        summary = await asyncio.to_thread(summarize_run, run_id, records, started)
        await asyncio.to_thread(notify.run, summary)
        return summary


PIPELINE = LeadsPipeline()


@app.task(name="proj.leads.enrich_lead", bind=True, track_started=True)
def enrich_lead(
    self: Any, lead: dict[str, Any], run_id: str, model: str, category: str
) -> dict[str, Any]:
    """One lead of the canvas: :func:`process_lead`; a lead that fails is retried once, then
    returns its failure record (a chord header never raises, or the summary would be lost)."""
    settings = get_settings()
    queue_wait = self.queue_wait_s()
    parsed = Lead.model_construct(**lead)
    try:
        record = runtime.run(
            lambda p: process_lead(p, parsed, run_id=run_id, model=model, category=category),
            timeout_s=settings.branch_timeout_s + STORE_ALLOWANCE_S,
        )
    except (Deferral, RateLimited):
        raise  # an open breaker or a 429 defers the whole lead (ProjTask)
    except Exception as exc:
        if self.request.retries < 1:
            raise self.retry(countdown=settings.batch.retry_backoff_s, max_retries=1) from exc
        logger.warning("lead %s of run %s failed: %s", parsed.key, run_id, exc)
        return PIPELINE.failed(lead, failure(exc))
    queue = (self.request.delivery_info or {}).get("routing_key")
    return {**record, "queue": queue, "queue_wait_s": queue_wait}


@app.task(name="proj.leads.summarize")
def summarize_leads(
    records: list[dict[str, Any]], run_id: str, started_at: float
) -> dict[str, Any]:
    """Fan-in of all leads: top prospects, what is missing and why, time/errors/cost."""
    return summarize_run(run_id, records, started_at)


def build(leads: list[Any], *, run_id: str | None = None) -> Planned:
    """Validate ``leads`` and plan the pipeline. Invalid leads are rejected by index, field and
    value; the valid ones go on, each key once."""
    items, rejected = PIPELINE.validate(leads)
    once = unique(items)
    run_id = run_id or uuid.uuid4().hex
    if not once:
        return Planned(None, run_id, 0, rejected)
    header = []
    settings = get_settings()  # read once for the whole plan
    for item in once:
        t = PIPELINE.assess(item, settings)
        sig = enrich_lead.si(item, run_id, t.model, t.category).set(headers=t.headers())
        if item.get("priority") is not None:  # on Redis 0 is served first: 9 - priority
            sig = sig.set(priority=9 - int(item["priority"]))
        header.append(sig)
    body = summarize_leads.s(run_id, time.time())
    return Planned(
        chord(header, body) | notify.s(), run_id, len(once), rejected, len(items) - len(once)
    )
