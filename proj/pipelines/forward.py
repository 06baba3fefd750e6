"""Routing on results: a pipeline step sends its output on to another task, on that task's own
queue, when a predicate holds ("if the analysis finds risk, route to compliance review").

A :class:`Forward` names the rule: the predicate, the task and the queue. In a pipeline's
canvas it is one more step, the ``proj.forward`` task (``chord(...) | forward.s(name)``); it
returns the output it was given, with ``forwarded`` saying where it went when it went, and the
task it sends is its child (Flower shows both). A batch's runner applies the same rule to each
item's record through :func:`send_on`: one rule, one message, whichever way the item ran.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from proj.app import app
from proj.triage import CATEGORY_HEADER


@dataclass(frozen=True)
class Forward:
    """Send a step's output to ``task`` on ``queue`` when ``when(output)`` holds."""

    name: str
    when: Callable[[Mapping[str, Any]], bool]
    task: str
    queue: str


_FORWARDS: dict[str, Forward] = {}


def register(rule: Forward) -> Forward:
    _FORWARDS[rule.name] = rule
    return rule


def rule(name: str) -> Forward:
    try:
        return _FORWARDS[name]
    except KeyError:
        known = ", ".join(sorted(_FORWARDS)) or "none"
        raise ValueError(f"no forward rule named {name!r}; known: {known}") from None


def send_on(name: str, output: dict[str, Any]) -> dict[str, Any]:
    """Apply rule ``name`` to ``output``: when its predicate holds, send ``output`` to its task
    on its queue. Returns ``output``, with ``forwarded`` (task, queue, id) if it was sent."""
    r = rule(name)
    if not r.when(output):
        return output
    category = output.get("category")  # the output's category goes with it (its figures)
    headers = {CATEGORY_HEADER: str(category)} if category else None
    sent = app.signature(r.task, args=(output,), queue=r.queue, headers=headers).apply_async()
    return {**output, "forwarded": {"task": r.task, "queue": r.queue, "id": sent.id}}


@app.task(name="proj.forward")
def forward(output: dict[str, Any], name: str) -> dict[str, Any]:
    """The canvas step of a :class:`Forward` rule (see :func:`send_on`)."""
    return send_on(name, output)
