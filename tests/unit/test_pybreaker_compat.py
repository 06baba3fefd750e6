"""pybreaker's behaviour, case by case (tests/pybreaker_cases.py), on pybreaker's own memory
storage (the reference) and on :class:`proj.Breaker` with its in-memory store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pybreaker
import pytest

from proj.guard.breaker import Breaker
from proj.resilience.breaker import BreakerPolicy
from proj.resilience.breaker_store import AsyncAdapter, MemoryBreakerStore
from tests.pybreaker_cases import CASES


def make_pybreaker(**kwargs: Any) -> pybreaker.CircuitBreaker:
    return pybreaker.CircuitBreaker(**kwargs)


def make_proj(**kwargs: Any) -> Breaker:
    return memory_breaker("dep", **kwargs)


def memory_breaker(name: str, **kwargs: Any) -> Breaker:
    """A proj.Breaker on the in-memory store, built from pybreaker's arguments."""
    policy = BreakerPolicy(
        fail_max=kwargs.pop("fail_max", 5),
        open_s=kwargs.pop("reset_timeout", 60),
        success_threshold=kwargs.pop("success_threshold", 1),
    )
    store = MemoryBreakerStore()
    return Breaker(name, policy, store, lambda: AsyncAdapter(store), **kwargs)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "make", [make_pybreaker, make_proj], ids=["pybreaker-memory", "proj-breaker-memory"]
)
def test_pybreaker_behaviour(case: Callable[..., None], make: Callable[..., Any]) -> None:
    case(make)
