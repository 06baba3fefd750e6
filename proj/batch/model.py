"""What a batch is, seen from outside its store: its :class:`Progress` at one moment, and the
order its items are claimed in (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Progress:
    """A batch at one moment (what the progress bar and ``proj batches`` show)."""

    batch_id: str
    pipeline: str
    total: int
    done: int
    failed: int
    cached: int
    duplicates: int
    in_flight: int
    deferred: int
    status: str
    started: float
    updated: float
    finished: float | None
    finalized: float | None = None  # its last step (summary, dead letters) has run

    @property
    def finished_ok(self) -> bool:
        return self.status == "finished"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def claim_order(items: list[dict[str, Any]]) -> list[int] | None:
    """The order runners claim items in when any carries a ``priority`` (0-9): highest first,
    input order among equals (no priority counts as 0). None: input order."""
    if not any(item.get("priority") for item in items):
        return None
    return sorted(range(len(items)), key=lambda i: -int(items[i].get("priority") or 0))
