"""Batches: submit many items, watch progress, deduplicate, cache, retry, dead-letter, resume.

``proj.batch.submit(pipeline, items)`` returns a :class:`BatchHandle`; ``proj submit FILE``
does the same from the command line with a progress bar. The names below are imported on
first use, so reading a batch's progress does not load the pipelines and provider clients.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proj.batch.progress import list_batches
    from proj.batch.submit import BatchHandle, resume, submit

_PUBLIC = {
    "BatchHandle": "proj.batch.submit",
    "resume": "proj.batch.submit",
    "list_batches": "proj.batch.progress",
}

__all__ = ["BatchHandle", "list_batches", "resume", "submit"]


class _Package(types.ModuleType):
    """``proj.batch.submit`` is the function, though ``proj/batch/submit.py`` is also a module
    of that name: importing that module makes Python bind the module to
    ``proj.batch.submit``, which this property answers for instead (and whose binding it
    ignores)."""

    @property
    def submit(self) -> Any:
        return importlib.import_module("proj.batch.submit").submit

    @submit.setter
    def submit(self, value: Any) -> None:
        pass


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'proj.batch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
