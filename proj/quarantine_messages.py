"""Task messages into and out of the quarantine (:mod:`proj.quarantine`): what is wrong with a
kombu message (the checks are :mod:`proj.poison`'s), the entry that keeps it, and publishing
it again on its queue."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Mapping
from typing import Any

from kombu.exceptions import ContentDisallowed

from proj import poison
from proj.poison import Problem
from proj.quarantine import body_of

# Message properties worth carrying to a replay (the rest are the transport's own).
_PROPERTIES = ("priority", "correlation_id", "reply_to")


def examine(message: Any, tasks: Mapping[str, Any]) -> Problem | None:
    """What is wrong with a kombu task message for a worker with these ``tasks``, or None.
    Decoding is cached on the message: Celery reads the same decoded body afterwards."""
    headers = message.headers
    problem = poison.examine_headers(headers, tasks)
    if problem is not None:
        return problem
    try:
        body = message.decode()
    except ContentDisallowed:
        return Problem(
            poison.CONTENT, f"content type {poison.shown(message.content_type)} is not accepted"
        )
    except Exception as err:  # any decoder's error: the body is what is wrong
        return Problem(
            poison.CONTENT,
            f"body does not decode as {poison.shown(message.content_type)}: "
            f"{poison.cut(f'{type(err).__name__}: {err}')}",
        )
    task = tasks[headers["task"]]
    check = getattr(task, "__header__", None) if getattr(task, "typing", True) else None
    return poison.examine_body(headers["task"], body, check)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def entry_of(message: Any, problem: Problem, *, worker: str, body_max: int) -> dict[str, Any]:
    """The quarantine entry for a message: everything needed to show and replay it."""
    raw = message.body
    body = raw.encode() if isinstance(raw, str) else bytes(raw or b"")
    headers = message.headers if isinstance(message.headers, Mapping) else {}
    delivery = message.delivery_info or {}
    properties = message.properties or {}
    return {
        "id": uuid.uuid4().hex,
        "at": time.time(),
        "queue": _text(delivery.get("routing_key")) or "",
        "exchange": _text(delivery.get("exchange")) or "",
        "kind": problem.kind,
        "reason": problem.detail,
        "task": _text(headers.get("task")),
        "task_id": _text(headers.get("id")),
        "worker": worker,
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "headers": dict(headers),
        "properties": {k: properties[k] for k in _PROPERTIES if properties.get(k) is not None},
        "body": base64.b64encode(body[:body_max]).decode(),
        "body_size": len(body),
        "body_cut": len(body) > body_max,
    }


def republish(app: Any, entry: Mapping[str, Any]) -> None:
    """Publish a quarantined message again, as it came, to the queue it came from."""
    if entry.get("body_cut"):
        raise ValueError(
            f"{entry['id']}: its body was cut to fit the quarantine; it cannot be replayed"
        )
    name = entry["queue"]
    queue = app.amqp.queues.get(name)
    with app.producer_or_acquire() as producer:
        producer.publish(
            body_of(entry),
            exchange=queue.exchange if queue is not None else entry["exchange"],
            routing_key=name,
            declare=[queue] if queue is not None else [],
            headers=entry["headers"],
            content_type=entry["content_type"],
            content_encoding=entry["content_encoding"],
            retry=True,
            **entry["properties"],
        )
