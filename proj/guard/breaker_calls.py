"""pybreaker's ways to guard a call (``call``, ``calling()``, the decorator), for ``def``,
generator and ``async def`` functions: a mixin of :class:`proj.Breaker`, built on its
admission (``admit``/``aadmit``) and outcome (``_outcome``/``_aoutcome``) methods."""

from __future__ import annotations

import contextlib
import functools
import inspect
import types
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from proj.resilience.breaker import BreakerOpen

if TYPE_CHECKING:
    from proj.guard.breaker import Permit


class GuardedCalls:
    """The guarded-call half of :class:`proj.Breaker`."""

    if TYPE_CHECKING:

        @property
        def name(self) -> str: ...
        def admit(self) -> Permit: ...
        async def aadmit(self) -> Permit: ...
        def _listen(self, event: str, *args: Any, **kwargs: Any) -> None: ...
        def _outcome(self, permit: Permit, exc: BaseException | None) -> None: ...
        async def _aoutcome(self, permit: Permit, exc: BaseException | None) -> None: ...

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
