"""Batches: submit many items, watch progress, deduplicate, cache, retry, dead-letter, resume.

``proj.batch.submit(pipeline, items)`` returns a :class:`BatchHandle`; ``proj submit FILE``
does the same from the command line with a progress bar. The names below are imported on
first use, so reading a batch's progress does not load the pipelines and provider clients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proj import lazy

if TYPE_CHECKING:
    from proj.batch.progress import list_batches
    from proj.batch.submit import BatchHandle, resume, submit

_PUBLIC = {
    "BatchHandle": "proj.batch.submit",
    "resume": "proj.batch.submit",
    "list_batches": "proj.batch.progress",
}

__all__ = ["BatchHandle", "list_batches", "resume", "submit"]


__getattr__ = lazy.install(__name__, _PUBLIC, shadowed={"submit": "proj.batch.submit"})
