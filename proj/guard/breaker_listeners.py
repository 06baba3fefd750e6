"""Who hears a :class:`proj.Breaker`: the exceptions no breaker counts, the listeners every
breaker of the process calls, and the log line of a state change."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pybreaker

from proj.resilience import breaker as rules
from proj.resilience.deferral import Deferral

logger = logging.getLogger("proj.breaker")

#: Exceptions that say nothing about the dependency: they count neither way. The Celery layer
#: adds its control-flow exceptions (``Retry``, ``Reject``, ``Ignore``).
ignored: list[type[BaseException]] = [
    Deferral,
    asyncio.CancelledError,
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
]

#: Listeners every breaker of this process calls (proj's log line, the Celery event).
global_listeners: list[pybreaker.CircuitBreakerListener] = []


def ignore_exceptions(*types_: type[BaseException]) -> None:
    """Exceptions that no breaker counts, as success or failure."""
    ignored.extend(t for t in types_ if t not in ignored)


def add_global_listener(listener: pybreaker.CircuitBreakerListener) -> None:
    """A listener of every breaker in this process (its ``state_change`` at least)."""
    if listener not in global_listeners:
        global_listeners.append(listener)


class LogListener(pybreaker.CircuitBreakerListener):
    """Logs every state change this process caused (each change is caused exactly once)."""

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        new = new_state.name
        level = logging.WARNING if new != rules.CLOSED else logging.INFO
        logger.log(level, "breaker %s: %s -> %s", cb.name, getattr(old_state, "name", "-"), new)
