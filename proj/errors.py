"""Every error proj raises on purpose derives from :class:`ProjError`.

Messages say what to do: which setting, field or value is wrong and what was expected.
"""

from __future__ import annotations


class ProjError(Exception):
    """Root of proj's own errors."""


class ConfigError(ProjError, ValueError):
    """A setting is missing or invalid; the message names the variable and the value."""


class StackError(ProjError, RuntimeError):
    """A process of the local stack (Redis, a worker, Flower) failed to start or stop."""


class QueueFull(ProjError):
    """A message for a queue already holding its ``max_depth`` messages (config/queues.toml,
    PROJ_QUEUES); nothing was published."""

    def __init__(self, message: str, *, queue: str, depth: int, max_depth: int) -> None:
        super().__init__(message)
        self.queue = queue
        self.depth = depth
        self.max_depth = max_depth


class ValidationError(ProjError, ValueError):
    """Input to a pipeline or a batch is invalid; names the item, the field and the value."""

    def __init__(self, item: str, field: str, value: object, reason: str) -> None:
        self.item = item
        self.field = field
        self.value = value
        self.reason = reason
        shown = repr(value)
        if len(shown) > 200:  # a 10 MB value is named, not echoed
            shown = f"{shown[:200]}... ({len(shown)} characters)"
        super().__init__(f"{item}: field {field!r} {reason} (got {shown})")
