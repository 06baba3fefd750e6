"""The batch runner's view of a pipeline: the one definition in :mod:`proj.pipelines` (found
by :mod:`proj.pipelines.registry`), seen through what the runner calls."""

from __future__ import annotations

import asyncio
from typing import Any

from proj.batch.store import BatchStore
from proj.pipelines import registry
from proj.pipelines.definition import Pipeline, content_key
from proj.pipelines.forward import send_on
from proj.pipelines.validation import Rejected
from proj.provider.runtime import Providers

__all__ = ["ItemPipeline", "content_key", "get_pipeline"]


class ItemPipeline:
    """A pipeline as a batch runs it: the batch id is the run id, and the last step gets every
    item's record in input order, a failed item's built from the error the runner recorded."""

    def __init__(self, definition: Pipeline) -> None:
        self.definition = definition
        self.name = definition.name

    def validate(self, items: list[Any]) -> tuple[list[dict[str, Any]], list[Rejected]]:
        return self.definition.validate(items)

    async def process(self, p: Providers, item: dict[str, Any], *, batch_id: str) -> dict[str, Any]:
        record = await self.definition.process(p, item, run_id=batch_id)
        for name in self.definition.forwards:  # as the canvas's forward steps do
            record = await asyncio.to_thread(send_on, name, record)
        return record

    async def finish(
        self, store: BatchStore, batch_id: str, results: dict[int, Any], started: float
    ) -> dict[str, Any] | None:
        """Runs once, after the last item (a summary, a notification)."""
        errors = await store.errors(batch_id)
        records = dict(results)
        for idx, item, _ in await store.load(batch_id, sorted(errors)):
            records[idx] = self.definition.failed(item, errors[idx])
        ordered = [records[i] for i in sorted(records)]
        return await self.definition.finish(batch_id, ordered, started)


def get_pipeline(name: str) -> ItemPipeline:
    """The pipeline called ``name``; ValueError naming the known ones otherwise."""
    return ItemPipeline(registry.get(name))
