"""Triage: give each piece of work a category, an urgency and a complexity, and from them a
queue and a model. Pure rules; the router reads the queue from the message's headers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from proj.settings import Settings

Urgency = Literal["high", "normal", "low"]
Complexity = Literal["simple", "complex"]

#: The message header carrying triage's queue to the router.
QUEUE_HEADER = "proj_queue"

URGENT_WORDS = ("urgent", "asap", "immediately", "outage", "deadline", "today", "critical")


@dataclass(frozen=True)
class Triage:
    category: str
    urgency: Urgency
    complexity: Complexity
    queue: str
    model: str

    def headers(self) -> dict[str, str]:
        return {QUEUE_HEADER: self.queue}


def assess(
    category: str,
    text: str,
    settings: Settings,
    *,
    urgent: bool | None = None,
    urgency: Urgency | None = None,
) -> Triage:
    """Triage one item. An explicit ``urgent``/``urgency`` wins over words in the text."""
    if urgency is None:
        if urgent or (urgent is None and any(w in text.lower() for w in URGENT_WORDS)):
            urgency = "high"
        else:
            urgency = "normal"
    complexity: Complexity = (
        "complex" if len(text) >= settings.queues.triage_complex_min_chars else "simple"
    )
    queue = settings.queues.triage_queue_by_urgency.get(urgency, settings.queues.bulk_queue)
    model = settings.queues.model_large if complexity == "complex" else settings.queues.model_small
    return Triage(category, urgency, complexity, queue, model)
