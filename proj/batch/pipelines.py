"""What a batch does with each item: validation, idempotency key, the async processing, and
an optional step once the whole batch is done. One class per pipeline, in a registry."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from proj import store
from proj.pipelines import documents, leads
from proj.pipelines import profile as scoring
from proj.pipelines.fanin import gather_branches
from proj.pipelines.summary import summarize
from proj.pipelines.validation import Rejected, validate_items
from proj.provider import lookups
from proj.provider.errors import ProviderError
from proj.provider.runtime import Providers
from proj.settings import get_settings
from proj.triage import assess


def content_key(item: dict[str, Any]) -> str:
    """The idempotency key of an item: its ``key`` field, else a hash of its content."""
    given = item.get("key")
    if isinstance(given, str) and given:
        return given
    canonical = json.dumps(item, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class ItemPipeline:
    name: ClassVar[str]
    model: ClassVar[type[BaseModel]]
    label_field: ClassVar[str | None] = None

    def validate(self, items: list[Any]) -> tuple[list[dict[str, Any]], list[Rejected]]:
        accepted, rejected = validate_items(
            self.model, items, kind="item", label_field=self.label_field
        )
        return [a.model_dump(exclude_none=True) for a in accepted], rejected

    async def process(self, p: Providers, item: dict[str, Any], *, batch_id: str) -> dict[str, Any]:
        raise NotImplementedError

    async def finish(
        self, batch_id: str, results: dict[int, Any], started: float
    ) -> dict[str, Any] | None:
        """Runs once, after the last item (a summary, a notification)."""
        return None


class _Domain(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)
    domain: str = Field(max_length=253)
    key: str | None = None

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$", v):
            raise ValueError("is not a domain name")
        return v.lower()


class CompanyPipeline(ItemPipeline):
    """One company lookup per item: ``{"domain": "acme.com"}``."""

    name = "company"
    model = _Domain
    label_field = "domain"

    async def process(self, p: Providers, item: dict[str, Any], *, batch_id: str) -> dict[str, Any]:
        return await lookups.company(p, item["domain"])


class LeadsPipeline(ItemPipeline):
    """Lead enrichment: three calls per lead in parallel, one stored profile per lead."""

    name = "leads"
    model = leads.Lead
    label_field = "email"

    async def process(self, p: Providers, item: dict[str, Any], *, batch_id: str) -> dict[str, Any]:
        settings = get_settings()
        lead = leads.Lead.model_validate(item)
        t = assess("lead", lead.message, settings, urgent=lead.urgent)
        fan = await gather_branches(
            {
                "ai": leads.analyse(p, lead, t.model),
                "company": leads.lookup_company(p, lead.company_domain or ""),
                "person": leads.lookup_person(p, lead.email),
            },
            settings.branch_timeout_s,
        )
        if not fan["results"]:  # nothing at all: worth a retry, or a dead letter
            kind = next(iter(fan["errors"].values()))
            raise ProviderError(f"every branch failed: {kind.get('kind')}: {kind.get('message')}")
        profile = scoring.combine(lead.model_dump(), fan, model=t.model)
        await asyncio.to_thread(store.save_lead, batch_id, profile)
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
            "category": t.category,
            "model": t.model,
            "stored": True,
        }

    async def finish(
        self, batch_id: str, results: dict[int, Any], started: float
    ) -> dict[str, Any] | None:
        from proj.pipelines.notify import notify

        summary = summarize(
            "leads", batch_id, list(results.values()), started_at=started, now=time.time()
        )
        await asyncio.to_thread(store.save_run, batch_id, "leads", summary)
        await asyncio.to_thread(notify.run, summary)
        return summary


class DocumentsPipeline(ItemPipeline):
    """Document analysis: sentiment, entities and summary in parallel, one record each."""

    name = "documents"
    model = documents.Document
    label_field = "id"

    async def process(self, p: Providers, item: dict[str, Any], *, batch_id: str) -> dict[str, Any]:
        settings = get_settings()
        doc = documents.Document.model_validate(item)
        t = assess("document", doc.text, settings, urgent=doc.urgent)
        fan = await gather_branches(
            {a: documents.analyse_aspect(p, a, doc.text, t.model) for a in documents.ASPECTS},
            settings.branch_timeout_s,
        )
        if not fan["results"]:
            kind = next(iter(fan["errors"].values()))
            raise ProviderError(f"every branch failed: {kind.get('kind')}: {kind.get('message')}")
        r = fan["results"]
        return {
            "document_id": doc.id,
            "sentiment": (r.get("sentiment") or {}).get("sentiment"),
            "entities": (r.get("entities") or {}).get("entities"),
            "summary": (r.get("summary") or {}).get("summary"),
            "errors": fan["errors"],
            "cost_usd": sum(u.get("cost_usd") or 0.0 for u in fan["usage"]),
        }


PIPELINES: dict[str, ItemPipeline] = {
    p.name: p for p in (CompanyPipeline(), LeadsPipeline(), DocumentsPipeline())
}


def get_pipeline(name: str) -> ItemPipeline:
    try:
        return PIPELINES[name]
    except KeyError:
        raise ValueError(f"unknown pipeline {name!r}; choose one of {sorted(PIPELINES)}") from None
