"""Triage: give each piece of work a category, an urgency and a complexity, and from them a
queue and a model. Pure rules; the router reads the queue from the message's headers.

The declared triage rules (config/queues.toml, PROJ_TRIAGE_RULES) are tried in order and the
first that matches decides; a rule that names no queue leaves the urgency's
(PROJ_TRIAGE_QUEUE_BY_URGENCY), one that names no model leaves the queue's default model, else
the complexity's (small for simple work, large for complex). With no rule, urgency and
complexity decide alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from proj.settings import Settings

Urgency = Literal["high", "normal", "low"]
Complexity = Literal["simple", "complex"]

#: The message headers carrying triage's queue to the router and the category to the worker.
QUEUE_HEADER = "proj_queue"
CATEGORY_HEADER = "proj_category"

URGENT_WORDS = ("urgent", "asap", "immediately", "outage", "deadline", "today", "critical")


@dataclass(frozen=True)
class Triage:
    category: str
    urgency: Urgency
    complexity: Complexity
    queue: str
    model: str
    rule: str | None = None  # the rule that decided ("rule 0: category=legal -> queue legal")

    def headers(self) -> dict[str, str]:
        return {QUEUE_HEADER: self.queue, CATEGORY_HEADER: self.category}


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
    by_complexity = settings.model_for("large" if complexity == "complex" else "small")
    config = settings.queue_config
    for i, rule in enumerate(config.rules):
        if rule.matches(category, urgency, complexity, text):
            queue = rule.queue or queue
            model = settings.model_for(rule.model or _queue_model(settings, queue))
            return Triage(
                category,
                urgency,
                complexity,
                queue,
                model or by_complexity or "",
                f"rule {i}: {rule.describe()}",
            )
    model = settings.model_for(_queue_model(settings, queue)) or by_complexity or ""
    return Triage(category, urgency, complexity, queue, model)


def _queue_model(settings: Settings, queue: str) -> str | None:
    declared = settings.queue_config.queues.get(queue)
    return declared.model if declared is not None else None
