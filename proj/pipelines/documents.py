"""Document analysis: sentiment, entities and summary of one document in parallel, then one
combined record, stored.

Defined once (:data:`PIPELINE`), run two ways. The canvas fans a document's aspects out as
three tasks: ``chord([aspect(sentiment), aspect(entities), aspect(summary)], combine_document)``;
a batch (``proj submit --pipeline documents``) runs them concurrently on its runner's loop.
Both build the record with :func:`document_record` and store it. A document whose every aspect
failed is not stored: the canvas returns its record with the errors (its caller's report), the
batch fails the item (tried once more, then dead-lettered). (The canvas used to store that
record, the batch stored no document at all.)
"""

from __future__ import annotations

import time
from typing import Any

from celery import chord
from pydantic import BaseModel, ConfigDict, Field

from proj import store
from proj.app import app
from proj.pipelines.branches import run_as_branch
from proj.pipelines.definition import BranchesFailed, Pipeline, stored
from proj.pipelines.fanin import fan_in, gather_branches
from proj.pipelines.plan import Planned
from proj.provider import runtime
from proj.settings import get_settings

ASPECTS: dict[str, str] = {
    "sentiment": "task: sentiment. Reply with a JSON object with keys sentiment "
    "(negative|neutral|positive) and sentiment_score (-1..1).",
    "entities": "task: entities. Reply with a JSON object with key entities: a list of the "
    "names of people, organisations and places in the text.",
    "summary": "task: summary. Reply with a JSON object with key summary: at most three sentences.",
}
_KEYS = {
    "sentiment": ("sentiment", "sentiment_score"),
    "entities": ("entities",),
    "summary": ("summary",),
}


class Document(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)
    id: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=200_000)
    title: str | None = Field(None, max_length=500)
    urgent: bool | None = None


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
        "errors": fan["errors"],
        "seconds": fan["seconds"],
        "cost_usd": round(sum(u.get("cost_usd") or 0.0 for u in fan["usage"]), 6),
        "wall_s": time.time() - started_at,
    }


class DocumentsPipeline(Pipeline):
    name = "documents"
    model = Document
    noun = "document"
    label_field = "id"
    triage_as = "document"

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
    return Planned(chord(header, body), doc["id"], 1, rejected)
