"""One loop, two drivers: the steps a loop yields are done by blocking calls or awaitables."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

import pytest

from proj.resilience import steps


def _loop() -> Generator[int, Any, list[Any]]:
    """Asks for 1, 2 and 3; keeps the answers, and the errors it is told to expect."""
    seen: list[Any] = []
    for n in (1, 2, 3):
        try:
            seen.append((yield n))
        except LookupError as exc:
            seen.append(type(exc).__name__)
    return seen


def _do(n: int) -> int:
    if n == 2:
        raise KeyError(n)
    return n * 10


async def _ado(n: int) -> int:
    await asyncio.sleep(0)
    return _do(n)


def test_sync_and_async_drivers_give_the_loop_the_same_answers() -> None:
    expected = [10, "KeyError", 30]
    assert steps.run(_loop(), _do, (LookupError,)) == expected
    assert asyncio.run(steps.arun(_loop(), _ado, (LookupError,))) == expected


def test_an_error_the_loop_does_not_expect_reaches_the_caller() -> None:
    with pytest.raises(KeyError):
        steps.run(_loop(), _do)
    with pytest.raises(KeyError):
        asyncio.run(steps.arun(_loop(), _ado))
