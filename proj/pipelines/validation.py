"""Validate pipeline input item by item: good items go on, bad ones are named and explained."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import pydantic

from proj.errors import ValidationError

M = TypeVar("M", bound=pydantic.BaseModel)


@dataclass(frozen=True)
class Rejected:
    """One invalid item: where it was, which field, what value, and why."""

    index: int
    item: str
    field: str
    value: Any
    reason: str

    def __str__(self) -> str:
        return str(ValidationError(self.item, self.field, self.value, self.reason))

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "item": self.item,
            "field": self.field,
            "value": self.value,
            "reason": self.reason,
            "message": str(self),
        }


def _describe(kind: str, index: int, raw: Any, label_field: str | None) -> str:
    label = raw.get(label_field) if isinstance(raw, dict) and label_field else None
    return f"{kind} {index}" + (f" ({label})" if label else "")


def validate_items(
    model: type[M], items: Iterable[Any], *, kind: str, label_field: str | None = None
) -> tuple[list[M], list[Rejected]]:
    """Parse each item with ``model``; returns (accepted, rejected). Never raises for bad items."""
    accepted: list[M] = []
    rejected: list[Rejected] = []
    for index, raw in enumerate(items):
        item = _describe(kind, index, raw, label_field)
        if not isinstance(raw, dict):
            rejected.append(Rejected(index, item, "(item)", raw, "must be a JSON object"))
            continue
        try:
            accepted.append(model.model_validate(raw))
        except pydantic.ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(p) for p in first.get("loc", ())) or "(item)"
            value = raw.get(field, first.get("input")) if "." not in field else first.get("input")
            reason = first["msg"].removeprefix("Value error, ")
            if first["type"] == "missing":
                reason, value = "is required", None
            rejected.append(Rejected(index, item, field, value, reason))
    return accepted, rejected
