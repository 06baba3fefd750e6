"""Lead enrichment: for each lead, an AI analysis, a company lookup and a person lookup in
parallel, combined into one profile and stored; then a summary and a notification.

Canvas (one chord deep)::

    chord([enrich_lead(lead) for lead in leads], summarize_leads) | notify

Each ``enrich_lead`` runs its three branches concurrently on the worker's event loop, each
with a deadline, so a slow or failing branch becomes an error in the fan-in, never a hang.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from celery import chord
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from proj import store, triage
from proj.app import app
from proj.pipelines import profile as scoring
from proj.pipelines.fanin import gather_branches
from proj.pipelines.notify import notify
from proj.pipelines.plan import Planned
from proj.pipelines.summary import summarize
from proj.pipelines.validation import validate_items
from proj.provider import lookups, runtime
from proj.settings import get_settings

logger = logging.getLogger(__name__)

_EMAIL = re.compile(r"^[^@\s]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_DOMAIN = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


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

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        if not _EMAIL.match(v):
            raise ValueError("is not a valid email address")
        return v.lower()

    @field_validator("company_domain")
    @classmethod
    def _domain(cls, v: str | None) -> str | None:
        if v is not None and not _DOMAIN.match(v):
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


lookup_company = lookups.company
lookup_person = lookups.person


async def enrich(p: runtime.Providers, lead: Lead, model: str, timeout_s: float) -> dict[str, Any]:
    """The three branches of one lead, in parallel, fanned in by name."""
    assert lead.company_domain is not None
    return await gather_branches(
        {
            "ai": analyse(p, lead, model),
            "company": lookup_company(p, lead.company_domain),
            "person": lookup_person(p, lead.email),
        },
        timeout_s,
    )


@app.task(name="proj.leads.enrich_lead", bind=True)
def enrich_lead(
    self: Any, lead: dict[str, Any], run_id: str, model: str, category: str
) -> dict[str, Any]:
    """Enrich and store one lead; returns a compact record for the summary."""
    settings = get_settings()
    queue_wait = self.queue_wait_s()
    parsed = Lead.model_validate(lead)
    fan = runtime.run(
        lambda p: enrich(p, parsed, model, settings.branch_timeout_s),
        timeout_s=settings.branch_timeout_s + 5,
    )
    profile = scoring.combine(parsed.model_dump(), fan, model=model)
    stored = True
    try:
        store.save_lead(run_id, profile)
    except Exception as exc:  # the summary reports it; the other leads go on
        logger.exception("storing lead %s of run %s failed", parsed.key, run_id)
        fan["errors"]["store"] = {"kind": "store", "message": f"{type(exc).__name__}: {exc}"}
        stored = False
    return {
        "key": parsed.key,
        "email": parsed.email,
        "name": profile.get("name"),
        "score": profile["qualification_score"],
        "budget": profile["budget_estimate_usd"],
        "urgency": profile["urgency"],
        "company_size": profile["company_size"],
        "errors": fan["errors"],
        "seconds": fan["seconds"],
        "usage": fan["usage"],
        "category": category,
        "queue": (self.request.delivery_info or {}).get("routing_key"),
        "model": model,
        "stored": stored,
        "queue_wait_s": queue_wait,
    }


@app.task(name="proj.leads.summarize")
def summarize_leads(
    records: list[dict[str, Any]], run_id: str, started_at: float
) -> dict[str, Any]:
    """Fan-in of all leads: top prospects, what is missing and why, time/errors/cost."""
    summary = summarize("leads", run_id, records, started_at=started_at, now=time.time())
    store.save_run(run_id, "leads", summary)
    return summary


def build(leads: list[Any], *, run_id: str | None = None) -> Planned:
    """Validate ``leads`` and plan the pipeline. Invalid leads are rejected by index, field and
    value; the valid ones go on."""
    settings = get_settings()
    accepted, rejected = validate_items(Lead, leads, kind="lead", label_field="email")
    run_id = run_id or uuid.uuid4().hex
    if not accepted:
        return Planned(None, run_id, 0, rejected)
    header = []
    for lead in accepted:
        t = triage.assess("lead", lead.message, settings, urgent=lead.urgent)
        sig = enrich_lead.si(lead.model_dump(), run_id, t.model, t.category)
        header.append(sig.set(headers=t.headers()))
    body = summarize_leads.s(run_id, time.time())
    return Planned(chord(header, body) | notify.s(), run_id, len(accepted), rejected)
