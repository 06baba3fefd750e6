"""Document analysis: sentiment, entities and summary (with the risks it finds) of one
document in parallel, then one combined record, stored; a document whose analysis finds risk
goes on to a compliance review on the ``compliance`` queue (:mod:`proj.pipelines.forward`).

Defined once (:data:`PIPELINE`), run two ways. The canvas fans a document's aspects out as
three tasks: ``chord([aspect(sentiment), aspect(entities), aspect(summary)], combine_document)
| forward(documents.compliance)``;
a batch (``proj submit --pipeline documents``) runs them concurrently on its runner's loop.
Both build the record with :func:`document_record` and store it. A document whose every aspect
failed is not stored: the canvas returns its record with the errors (its caller's report), the
batch fails the item (tried once more, then dead-lettered). (The canvas used to store that
record, the batch stored no document at all.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from celery import chord
from pydantic import BaseModel, ConfigDict, Field

from proj import store
from proj.app import app
from proj.pipelines.branches import run_as_branch
from proj.pipelines.definition import BranchesFailed, Pipeline, stored
from proj.pipelines.fanin import fan_in, gather_branches
from proj.pipelines.forward import Forward, forward, register
from proj.pipelines.plan import Planned
from proj.provider import runtime
from proj.settings import get_settings

ASPECTS: dict[str, str] = {
    "sentiment": "task: sentiment. Reply with a JSON object with keys sentiment "
    "(negative|neutral|positive) and sentiment_score (-1..1).",
    "entities": "task: entities. Reply with a JSON object with key entities: a list of the "
    "names of people, organisations and places in the text.",
    "summary": "task: summary. Reply with a JSON object with keys summary (at most three "
    "sentences), risk (none|low|high: legal or financial exposure the text creates) and "
    "risk_flags (the risky terms or commitments found).",
}
_KEYS = {
    "sentiment": ("sentiment", "sentiment_score"),
    "entities": ("entities",),
    "summary": ("summary", "risk", "risk_flags"),
}
REVIEW_PROMPT = (
    "task: compliance review. The analysis below found risk in a document. Reply with a JSON "
    "object with keys verdict (clear|escalate), risk_flags and summary (why)."
)
COMPLIANCE_QUEUE = "compliance"


class Document(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)
    id: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=200_000)
    title: str | None = Field(None, max_length=500)
    urgent: bool | None = None
    category: str | None = Field(None, min_length=1, max_length=64)  # triage's, else "document"
    priority: int | None = Field(None, ge=0, le=9)  # in a batch, higher starts first


async def analyse_aspect(
    p: runtime.Providers, aspect: str, text: str, model: str
) -> dict[str, Any]:
    messages = [{"role": "system", "content": ASPECTS[aspect]}, {"role": "user", "content": text}]
    result = await p.ai.chat(model=model, messages=messages)
    data = result.json()
    return {**{k: data.get(k) for k in _KEYS[aspect]}, "usage": result.usage.to_dict()}


@app.task(name="proj.documents.aspect", track_started=True)
def aspect_task(aspect: str, text: str, model: str) -> dict[str, Any]:
    """One branch: never raises, returns a branch record."""
    timeout = get_settings().branch_timeout_s
    return run_as_branch(aspect, lambda p: analyse_aspect(p, aspect, text, model), timeout)


def document_record(
    document_id: str, category: str, fan: dict[str, Any], started_at: float
) -> dict[str, Any]:
    """One document's record from the fan-in of its aspects."""
    r = fan["results"]
    return {
        "document_id": document_id,
        "category": category,
        "sentiment": (r.get("sentiment") or {}).get("sentiment"),
        "sentiment_score": (r.get("sentiment") or {}).get("sentiment_score"),
        "entities": (r.get("entities") or {}).get("entities"),
        "summary": (r.get("summary") or {}).get("summary"),
        "risk": (r.get("summary") or {}).get("risk"),
        "risk_flags": (r.get("summary") or {}).get("risk_flags") or [],
        "errors": fan["errors"],
        "seconds": fan["seconds"],
        "cost_usd": round(sum(u.get("cost_usd") or 0.0 for u in fan["usage"]), 6),
        "wall_s": time.time() - started_at,
    }


def risky(record: Mapping[str, Any]) -> bool:
    """The analysis found high risk in a document that was stored."""
    return record.get("risk") == "high" and not record.get("errors", {}).get("summary")


COMPLIANCE = register(
    Forward("documents.compliance", risky, "proj.documents.compliance_review", COMPLIANCE_QUEUE)
)


class DocumentsPipeline(Pipeline):
    name = "documents"
    model = Document
    noun = "document"
    label_field = "id"
    triage_as = "document"
    forwards = (COMPLIANCE.name,)

    async def process(
        self, p: runtime.Providers, item: dict[str, Any], *, run_id: str
    ) -> dict[str, Any]:
        started = time.time()
        t = self.assess(item, p.settings)
        fan = await gather_branches(
            {a: analyse_aspect(p, a, item["text"], t.model) for a in ASPECTS},
            p.settings.branch_timeout_s,
        )
        if not fan["results"]:
            raise BranchesFailed.of(fan["errors"])
        record = document_record(item["id"], t.category, fan, started)
        await stored(store.save_document, item["id"], record, url=p.settings.database)
        return record


PIPELINE = DocumentsPipeline()


@app.task(name="proj.documents.combine")
def combine_document(
    records: list[dict[str, Any]], document_id: str, category: str, started_at: float
) -> dict[str, Any]:
    fan = fan_in(records)
    record = document_record(document_id, category, fan, started_at)
    if fan["results"]:
        store.save_document(document_id, record)
    return record


def build(document: dict[str, Any]) -> Planned:
    """Validate one document and plan its analysis."""
    accepted, rejected = PIPELINE.validate([document])
    if not accepted:
        return Planned(
            None, str(document.get("id", "")) if isinstance(document, dict) else "", 0, rejected
        )
    doc = accepted[0]
    t = PIPELINE.assess(doc, get_settings())
    header = [aspect_task.si(a, doc["text"], t.model).set(headers=t.headers()) for a in ASPECTS]
    body = combine_document.s(doc["id"], t.category, time.time()).set(headers=t.headers())
    then = forward.s(COMPLIANCE.name).set(headers=t.headers())
    return Planned(chord(header, body) | then, doc["id"], 1, rejected)


async def review(p: runtime.Providers, record: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The compliance review of one risky document's analysis."""
    shown = {k: record.get(k) for k in ("summary", "entities", "risk", "risk_flags")}
    messages = [
        {"role": "system", "content": REVIEW_PROMPT},
        {"role": "user", "content": json.dumps(shown)},
    ]
    result = await p.ai.chat(model=model, messages=messages)
    data = result.json()
    return {
        "verdict": data.get("verdict"),
        "risk_flags": data.get("risk_flags") or [],
        "summary": data.get("summary"),
        "model": model,
        "usage": result.usage.to_dict(),
        "reviewed_at": time.time(),
    }


@app.task(name="proj.documents.compliance_review", track_started=True)
def compliance_review(record: dict[str, Any]) -> dict[str, Any]:
    """Review a risky document (sent by the documents pipeline's forward rule, on the
    compliance queue, with that queue's model) and store the review with its record."""
    settings = get_settings()
    model = (
        settings.model_for(settings.queue(COMPLIANCE_QUEUE).model) or settings.queues.model_large
    )
    verdict = runtime.run(
        lambda p: review(p, record, model), timeout_s=settings.branch_timeout_s + 5
    )
    kept = {k: v for k, v in record.items() if k != "forwarded"}
    store.save_document(
        record["document_id"], {**kept, "compliance": verdict}, url=settings.database
    )
    return verdict
