"""What makes a task message one a worker cannot run: the checks made before Celery sees it.

Celery's consumer trusts the shape of what it reads. A body that is not ``[args, kwargs,
embed]``, a ``timelimit`` that is not two numbers, a missing ``id`` header: each raises in the
worker's main process, the message is redelivered, and every worker that takes it dies of it
(or its consumer reconnects forever). :func:`examine` names what is wrong with a message (or
returns None); the worker quarantines what it names (:mod:`proj.quarantine`).

Pure: it takes the headers and the decoded body and knows nothing of Redis or kombu.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# How each kind of problem is named in the quarantine, its counters and its logs.
HEADERS = "headers"
BODY = "body"
CONTENT = "content"
UNKNOWN_TASK = "unknown_task"
ARGUMENTS = "arguments"
ERROR = "error"
KINDS = (HEADERS, BODY, CONTENT, UNKNOWN_TASK, ARGUMENTS, ERROR)

_CUT = 200


@dataclass(frozen=True)
class Problem:
    kind: str  # one of KINDS
    detail: str  # one line, values cut to 200 characters

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


def cut(text: str) -> str:
    """``text`` on one line, cut to 200 characters."""
    text = " ".join(text.split())
    return text if len(text) <= _CUT else text[:_CUT] + f"... ({len(text)} characters)"


def shown(value: object) -> str:
    """``repr(value)`` cut to 200 characters, for one-line messages."""
    return cut(repr(value))


def _optional_text(headers: Mapping[str, Any], name: str) -> Problem | None:
    value = headers.get(name)
    if value is None or isinstance(value, str):
        return None
    return Problem(HEADERS, f"{name} header must be text or null, got {shown(value)}")


def _time(headers: Mapping[str, Any], name: str) -> Problem | None:
    value = headers.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value)
            return None
        except ValueError:
            pass
    return Problem(HEADERS, f"{name} header must be an ISO 8601 time or null, got {shown(value)}")


def _number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def examine_headers(headers: object, known: Mapping[str, object]) -> Problem | None:
    """The problem with a protocol-2 message's headers, or None."""
    if not isinstance(headers, Mapping):
        return Problem(HEADERS, f"headers must be a mapping, got {shown(headers)}")
    task = headers.get("task")
    if task is None:
        return Problem(HEADERS, "no task header: not a Celery task message (protocol 2)")
    if not isinstance(task, str) or not task:
        return Problem(HEADERS, f"task header must be a task name, got {shown(task)}")
    task_id = headers.get("id")
    if not isinstance(task_id, str) or not task_id:
        return Problem(HEADERS, f"id header must be a non-empty text, got {shown(task_id)}")
    for name in ("shadow", "root_id", "parent_id", "group", "argsrepr", "kwargsrepr"):
        if problem := _optional_text(headers, name):
            return problem
    for name in ("eta", "expires"):
        if problem := _time(headers, name):
            return problem
    limits = headers.get("timelimit")
    if limits is not None and not (
        isinstance(limits, list | tuple)
        and len(limits) == 2
        and all(v is None or _number(v) for v in limits)
    ):
        return Problem(
            HEADERS, f"timelimit header must be [soft, hard] seconds or null, got {shown(limits)}"
        )
    retries = headers.get("retries")
    if retries is not None and not (
        isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0
    ):
        return Problem(HEADERS, f"retries header must be a whole number, got {shown(retries)}")
    if task not in known:
        return Problem(UNKNOWN_TASK, f"task {shown(task)} is not registered on this worker")
    return None


def examine_body(
    task: str, body: object, check_arguments: Callable[..., object] | None
) -> Problem | None:
    """The problem with a decoded protocol-2 body ``[args, kwargs, embed]``, or None.
    ``check_arguments`` raises TypeError when the arguments do not fit the task."""
    if not (isinstance(body, list | tuple) and len(body) == 3):
        return Problem(BODY, f"body must be [args, kwargs, embed], got {shown(body)}")
    args, kwargs, embed = body
    if not isinstance(args, list | tuple):
        return Problem(BODY, f"args must be a list, got {shown(args)}")
    if not (isinstance(kwargs, Mapping) and all(isinstance(k, str) for k in kwargs)):
        return Problem(BODY, f"kwargs must be a mapping of names, got {shown(kwargs)}")
    if embed is not None:
        if not isinstance(embed, Mapping):
            return Problem(BODY, f"embed must be a mapping, got {shown(embed)}")
        for name in ("callbacks", "errbacks", "chain"):
            if embed.get(name) is not None and not isinstance(embed[name], list | tuple):
                return Problem(BODY, f"embed {name} must be a list, got {shown(embed[name])}")
        if embed.get("chord") is not None and not isinstance(embed["chord"], Mapping):
            return Problem(BODY, f"embed chord must be a signature, got {shown(embed['chord'])}")
    if check_arguments is not None:
        try:
            check_arguments(*args, **kwargs)
        except TypeError as err:
            return Problem(ARGUMENTS, f"arguments do not fit {task}: {cut(str(err))}")
    return None
