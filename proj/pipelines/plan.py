"""What a pipeline's ``build`` returns: a signature to start, and what it rejected."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from celery import Signature

from proj.pipelines.validation import Rejected


@dataclass
class Planned:
    """A pipeline ready to start: ``signature.delay()`` (or ``apply_async``) enqueues it."""

    signature: Signature | None
    run_id: str
    accepted: int
    rejected: list[Rejected] = field(default_factory=list)
    duplicates: int = 0  # accepted items whose key came earlier: run once

    def delay(self) -> Any:
        if self.signature is None:
            raise ValueError(f"nothing to run: all {len(self.rejected)} items were rejected")
        return self.signature.apply_async()
