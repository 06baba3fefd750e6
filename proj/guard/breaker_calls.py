"""pybreaker's ways to guard a call (``call``, ``calling()``, the decorator), for ``def``,
generator and ``async def`` functions, and what a call's exception means to the breaker: a
mixin of :class:`proj.Breaker`, built on its admission (``admit``/``aadmit``) and recording
(``record``/``arecord``) methods."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import types
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from proj.guard.breaker_listeners import global_listeners, ignored
from proj.resilience import breaker as rules
from proj.resilience.breaker import BreakerOpen, BreakerPolicy, Outcome

logger = logging.getLogger("proj.breaker")

if TYPE_CHECKING:
    from proj.guard.breaker import Permit


class GuardedCalls:
    """The guarded-call half of :class:`proj.Breaker`."""

    if TYPE_CHECKING:

        @property
        def name(self) -> str: ...
        def admit(self) -> Permit: ...
        async def aadmit(self) -> Permit: ...

        policy: BreakerPolicy
        _listeners: list[Any]
        _throw_new_error_on_trip: bool

        def is_system_error(self, exception: BaseException) -> bool: ...
        def record(self, permit: Permit, outcome: Outcome) -> tuple[str, str] | None: ...
        async def arecord(self, permit: Permit, outcome: Outcome) -> tuple[str, str] | None: ...

    def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``func`` through the breaker. For an ``async def`` function this returns the
        awaitable of :meth:`acall`."""
        if inspect.iscoroutinefunction(func):
            return self.acall(func, *args, **kwargs)
        if inspect.isasyncgenfunction(func):
            raise TypeError(
                f"breaker {self.name!r} cannot guard an async generator ({func!r}): "
                "guard the calls it makes instead"
            )
        permit = self.admit()
        self._listen("before_call", func, *args, **kwargs)
        try:
            ret = func(*args, **kwargs)
        except BaseException as exc:
            self._outcome(permit, exc)
            raise
        if isinstance(ret, types.GeneratorType):
            return self._generator_call(ret, permit)
        self._outcome(permit, None)
        return ret

    async def acall(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Await ``func(*args, **kwargs)`` through the breaker."""
        permit = await self.aadmit()
        self._listen("before_call", func, *args, **kwargs)
        try:
            ret = await func(*args, **kwargs)
        except BaseException as exc:
            await self._aoutcome(permit, exc)
            raise
        await self._aoutcome(permit, None)
        return ret

    def call_async(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """pybreaker's name for async calls (Tornado there); here it is :meth:`acall`."""
        return self.acall(func, *args, **kwargs)

    def _generator_call(self, gen: types.GeneratorType[Any, Any, Any], permit: Permit) -> Any:
        try:
            value = yield next(gen)
            while True:
                value = yield gen.send(value)
        except StopIteration:
            self._outcome(permit, None)
            return
        except BaseException as exc:
            with contextlib.suppress(BreakerOpen):
                self._outcome(permit, exc)
            gen.throw(exc)

    @contextlib.contextmanager
    def calling(self) -> Iterator[None]:
        """``with cb.calling(): ...`` guards the block."""
        permit = self.admit()
        self._listen("before_call", self.calling)
        try:
            yield
        except BaseException as exc:
            self._outcome(permit, exc)
            raise
        self._outcome(permit, None)

    @contextlib.asynccontextmanager
    async def acalling(self) -> AsyncIterator[None]:
        """``async with cb.acalling(): ...`` guards the block."""
        permit = await self.aadmit()
        self._listen("before_call", self.acalling)
        try:
            yield
        except BaseException as exc:
            await self._aoutcome(permit, exc)
            raise
        await self._aoutcome(permit, None)

    def __call__(self, *call_args: Any, **call_kwargs: Any) -> Any:
        """Decorate a function (``def`` or ``async def``) so every call goes through it."""
        call_kwargs.pop("__pybreaker_call_async", None)

        def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
            if inspect.isasyncgenfunction(func):
                raise TypeError(
                    f"breaker {self.name!r} cannot guard an async generator ({func!r}): "
                    "guard the calls it makes instead"
                )
            if inspect.iscoroutinefunction(func):

                @functools.wraps(func)
                async def awrapper(*args: Any, **kwargs: Any) -> Any:
                    return await self.acall(func, *args, **kwargs)

                return awrapper

            @functools.wraps(func)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return self.call(func, *args, **kwargs)

            return wrapper

        return decorate(*call_args) if call_args else decorate

    # --- what an exception means -------------------------------------------------------------
    def classify(self, exc: BaseException | None) -> Outcome:
        """``success`` for no exception and for excluded ones (as pybreaker counts them),
        ``ignored`` for control flow (deferrals, cancellation, Celery's ``Retry``),
        ``failure`` for the rest."""
        if exc is None:
            return "success"
        if isinstance(exc, tuple(ignored)):
            return "ignored"
        if isinstance(exc, Exception) and not self.is_system_error(exc):
            return "success"
        return "failure"

    def _listen(self, event: str, *args: Any, **kwargs: Any) -> None:
        for listener in [*self._listeners, *global_listeners]:
            try:
                getattr(listener, event)(self, *args, **kwargs)
            except Exception:
                logger.exception("breaker %s: listener %r failed", self.name, listener)

    def _outcome(self, permit: Permit, exc: BaseException | None) -> None:
        """Count one guarded call; raises :class:`BreakerOpen` if this failure opened it and
        ``throw_new_error_on_trip`` is set (pybreaker's behaviour)."""
        outcome = self.classify(exc)
        if outcome == "failure":
            self._listen("failure", exc)
        elif outcome == "success":
            self._listen("success")
        moved = self.record(permit, outcome)
        self._trip(moved, exc)

    async def _aoutcome(self, permit: Permit, exc: BaseException | None) -> None:
        outcome = self.classify(exc)
        if outcome == "failure":
            self._listen("failure", exc)
        elif outcome == "success":
            self._listen("success")
        moved = await self.arecord(permit, outcome)
        self._trip(moved, exc)

    def _trip(self, moved: tuple[str, str] | None, exc: BaseException | None) -> None:
        if moved is not None and moved[1] == rules.OPEN and self._throw_new_error_on_trip:
            if moved[0] == rules.HALF_OPEN:
                message = "Trial call failed, circuit breaker opened"
            else:
                message = "Failures threshold reached, circuit breaker opened"
            raise BreakerOpen(self.name, self.policy.open_s, rules.OPEN, message) from exc
