"""What a pipeline is, defined once for both ways of running it.

A pipeline module defines its item model and one :class:`Pipeline` named ``PIPELINE``
(:mod:`proj.pipelines.registry` finds it): how items are validated (once, where they enter:
the module's ``build`` or ``proj submit``), what is done with one item (``process``, async, on
a worker's event loop), the record of an item that failed for good, and the last step
(``finish``). The module's Celery canvas and the batch runner (:mod:`proj.batch.pipelines`)
both call these, so the two paths cannot drift.

An item *fails* when it produced nothing worth keeping (:class:`ItemFailed`: every branch
failed, or its result could not be stored). A failed item is not stored and not cached; it is
tried once more (the batch's second pass, the canvas task's one retry), then reported in the
run's records by :meth:`Pipeline.failed` (and, in a batch, dead-lettered).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from proj import triage
from proj.errors import ProjError
from proj.pipelines.validation import Rejected, validate_items

if TYPE_CHECKING:
    from proj.provider.runtime import Providers
    from proj.settings import Settings


class ItemFailed(ProjError):
    """An item produced nothing worth keeping; ``kind`` is its stable label in reports."""

    kind = "failed"


class BranchesFailed(ItemFailed):
    """Every branch of the item failed."""

    kind = "all_branches_failed"

    @classmethod
    def of(cls, errors: Mapping[str, Mapping[str, Any]]) -> BranchesFailed:
        detail = "; ".join(f"{n}: {e.get('kind')}: {e.get('message')}" for n, e in errors.items())
        return cls(f"every branch failed: {detail}")


class StoreFailed(ItemFailed):
    """The item's result could not be written to the results database."""

    kind = "store"


def failure(exc: BaseException) -> dict[str, str]:
    """Kind and message of an item's failure, as the batch runner records them."""
    return {"kind": getattr(exc, "kind", "internal"), "message": f"{type(exc).__name__}: {exc}"}


async def stored(save: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    """Run a store write off the event loop; its failure is the item's (:class:`StoreFailed`,
    named by the error's first line: the rest repeats the row)."""
    try:
        await asyncio.to_thread(save, *args, **kwargs)
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0]
        raise StoreFailed(f"{type(exc).__name__}: {first}") from exc


def content_key(item: Mapping[str, Any]) -> str:
    """The idempotency key of an item: its ``key`` field, else a hash of its content."""
    given = item.get("key")
    if isinstance(given, str) and given:
        return given
    canonical = json.dumps(item, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def unique(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """``items`` with one per idempotency key (the first), in order."""
    by_key: dict[str, dict[str, Any]] = {}
    for item in items:
        by_key.setdefault(content_key(item), item)
    return list(by_key.values())


class Pipeline:
    """One pipeline: subclass it in the pipeline's module and name an instance ``PIPELINE``."""

    name: ClassVar[str]
    model: ClassVar[type[BaseModel]]
    noun: ClassVar[str] = "item"  # in rejections: "lead 3 (ann@acme.com): field ..."
    label_field: ClassVar[str | None] = None
    triage_as: ClassVar[str] = "item"  # the kind of item triage assesses ("lead")
    text_field: ClassVar[str] = "text"  # the field triage reads
    #: Forward rules (:mod:`proj.pipelines.forward`) applied to each item's record, in order.
    forwards: ClassVar[tuple[str, ...]] = ()

    def assess(self, item: Mapping[str, Any], settings: Settings) -> triage.Triage:
        """Category, urgency, queue and model of an item (the canvas routes by them); its
        category is its own ``category`` field, else the pipeline's kind of item."""
        text = str(item.get(self.text_field) or "")
        category = str(item.get("category") or self.triage_as)
        return triage.assess(category, text, settings, urgent=item.get("urgent"))

    def validate(self, items: Any) -> tuple[list[dict[str, Any]], list[Rejected]]:
        """The accepted items in the form queues and Redis carry (normalised, no unset fields;
        workers do not validate them again), and the rejected by index, field and value."""
        accepted, rejected = validate_items(
            self.model, items, kind=self.noun, label_field=self.label_field
        )
        return [a.model_dump(exclude_none=True) for a in accepted], rejected

    async def process(self, p: Providers, item: dict[str, Any], *, run_id: str) -> dict[str, Any]:
        """One item's work; its record. Raises :class:`ItemFailed` when there is nothing to keep."""
        raise NotImplementedError

    def failed(self, item: Mapping[str, Any], error: Mapping[str, Any]) -> dict[str, Any]:
        """The record of an item that failed for good (``error``: its kind and message)."""
        return {
            "key": content_key(item),
            "stored": False,
            "failed": {"kind": error.get("kind"), "message": error.get("message")},
        }

    async def finish(
        self, run_id: str, records: list[dict[str, Any]], started: float
    ) -> dict[str, Any] | None:
        """Runs once, after the last item, with every item's record in input order."""
        return None
