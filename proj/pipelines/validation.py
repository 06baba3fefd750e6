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


#: Characters no text field may hold: NUL and the other C0/C1 controls (tab, newline and
#: carriage return are text), and the bidi overrides and isolates that make text display
#: other than it reads (CVE-2021-42574). PostgreSQL refuses NUL outright.
_FORBIDDEN = {
    *(chr(c) for c in range(0x20) if chr(c) not in "\t\n\r"),
    *(chr(c) for c in range(0x7F, 0xA0)),
    *"\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069",
}


def _bad_text(value: Any, path: str = "") -> tuple[str, str, str] | None:
    """(field, value, reason) of the first string in ``value`` with a forbidden character."""
    if isinstance(value, str):
        for ch in value:
            if ch in _FORBIDDEN:
                return path or "(item)", value, f"holds the control character U+{ord(ch):04X}"
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            found = _bad_text(v, f"{path}.{k}" if path else str(k))
            if found:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _bad_text(v, f"{path}.{i}" if path else str(i))
            if found:
                return found
    return None


def validate_items(
    model: type[M], items: Iterable[Any], *, kind: str, label_field: str | None = None
) -> tuple[list[M], list[Rejected]]:
    """Parse each item with ``model``; returns (accepted, rejected). Never raises for bad items;
    raises :class:`ValidationError` when ``items`` is not a list at all."""
    if isinstance(items, str | bytes | dict) or not isinstance(items, Iterable):
        raise ValidationError("the input", f"{kind}s", items, "must be a list of JSON objects")
    accepted: list[M] = []
    rejected: list[Rejected] = []
    for index, raw in enumerate(items):
        item = _describe(kind, index, raw, label_field)
        if not isinstance(raw, dict):
            rejected.append(Rejected(index, item, "(item)", raw, "must be a JSON object"))
            continue
        bad = _bad_text(raw)
        if bad is not None:
            rejected.append(Rejected(index, item, *bad))
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
