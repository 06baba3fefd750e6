"""Run a loop written once for sync and asyncio callers.

The loop is a generator that yields each step it needs done (a store call, a sleep) and gets
the answer sent back in, or the step's exception thrown in; it returns its result. :func:`run`
does the steps with blocking calls, :func:`arun` with awaitables: the one place where the two
kinds of caller differ. Pure.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

S = TypeVar("S")
R = TypeVar("R")


def run(
    loop: Generator[S, Any, R],
    do: Callable[[S], Any],
    errors: tuple[type[BaseException], ...] = (),
) -> R:
    """Drive ``loop``, doing each step with ``do``; ``errors`` raised by a step are thrown
    into the loop (it decides), anything else propagates."""
    answer: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = loop.throw(error) if error is not None else loop.send(answer)
        except StopIteration as done:
            return done.value
        answer, error = None, None
        try:
            answer = do(step)
        except errors as exc:
            error = exc


async def arun(
    loop: Generator[S, Any, R],
    do: Callable[[S], Awaitable[Any]],
    errors: tuple[type[BaseException], ...] = (),
) -> R:
    """:func:`run` with awaitable steps."""
    answer: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = loop.throw(error) if error is not None else loop.send(answer)
        except StopIteration as done:
            return done.value
        answer, error = None, None
        try:
            answer = await do(step)
        except errors as exc:
            error = exc
