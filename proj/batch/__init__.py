"""Batches: submit many items, watch progress, deduplicate, cache, retry, dead-letter, resume.

``proj.batch.submit(pipeline, items)`` returns a :class:`BatchHandle`; ``proj submit FILE``
does the same from the command line with a progress bar.
"""

from proj.batch.submit import BatchHandle, list_batches, resume, submit

__all__ = ["BatchHandle", "list_batches", "resume", "submit"]
