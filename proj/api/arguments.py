"""JSON arguments checked against a task's signature before it is enqueued: the right names
and count (``inspect.Signature.bind``), and a value of each annotated parameter that its
annotation accepts from JSON (pydantic, strict: ``"3"`` is not an ``int``). A mistake is one
line naming the parameter and the value, and nothing is enqueued."""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pydantic

from proj.poison import shown


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # an annotation that does not resolve here: checked by name only
        return {}


def check(fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
    """None if ``fn(*args, **kwargs)`` fits ``fn``'s signature, else what is wrong."""
    sig = inspect.signature(fn)
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError as err:
        return f"arguments: {err}"
    hints = _hints(fn)
    for name, value in bound.arguments.items():
        param = sig.parameters[name]
        hint = hints.get(name)
        if hint is None or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        try:
            pydantic.TypeAdapter(hint).validate_json(json.dumps(value), strict=True)
        except pydantic.ValidationError as err:
            e = err.errors()[0]
            where = ".".join([name, *(str(p) for p in e.get("loc", ()))])
            return f"{where}: {e['msg']}, got {shown(value)}"
        except (TypeError, pydantic.PydanticSchemaGenerationError):
            continue  # a type pydantic cannot check: by name only
    return None
