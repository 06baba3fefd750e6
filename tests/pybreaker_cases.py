"""What pybreaker users expect of a breaker, as cases run against every breaker proj offers.

Each case covers a behaviour of pybreaker's own storage-based suite
(``CircuitBreakerStorageBasedTestCase`` in pybreaker's ``tests/pybreaker_test.py``), written
anew. ``make(**kwargs)`` builds a breaker the way a pybreaker user would
(``fail_max``, ``reset_timeout``, ``listeners``, ``exclude``, ``success_threshold``,
``throw_new_error_on_trip``); the same case runs against pybreaker's memory storage (the
reference), ``pybreaker.CircuitBreaker`` on :class:`proj.BreakerStorage`, and
:class:`proj.Breaker`, in memory and on Redis.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pybreaker
import pytest

Make = Callable[..., pybreaker.CircuitBreaker]


class Boom(Exception):
    pass


def err() -> None:
    raise NotImplementedError


def suc() -> bool:
    return True


def _fails(cb: pybreaker.CircuitBreaker, n: int) -> None:
    for _ in range(n):
        with pytest.raises(NotImplementedError):
            cb.call(err)


def successful_call_keeps_it_closed(make: Make) -> None:
    cb = make()
    assert cb.call(suc) is True
    assert cb.fail_counter == 0
    assert cb.current_state == "closed"


def one_failure_keeps_it_closed(make: Make) -> None:
    cb = make()
    _fails(cb, 1)
    assert cb.fail_counter == 1
    assert cb.current_state == "closed"


def a_success_resets_the_failure_count(make: Make) -> None:
    cb = make()
    _fails(cb, 1)
    assert cb.fail_counter == 1
    assert cb.call(suc) is True
    assert cb.fail_counter == 0
    assert cb.current_state == "closed"


def fail_max_failures_in_a_row_open_it(make: Make) -> None:
    cb = make(fail_max=3)
    _fails(cb, 2)
    with pytest.raises(pybreaker.CircuitBreakerError):
        cb.call(err)  # the third failure trips it and says so
    assert cb.fail_counter == 3
    assert cb.current_state == "open"


def throw_new_error_on_trip_false_raises_the_original(make: Make) -> None:
    cb = make(fail_max=3, throw_new_error_on_trip=False)
    _fails(cb, 3)
    assert cb.fail_counter == 3
    assert cb.current_state == "open"
    with pytest.raises(pybreaker.CircuitBreakerError):
        cb.call(err)  # open: refused without calling
    assert cb.fail_counter == 3


def the_trip_error_carries_the_original_traceback(make: Make) -> None:
    cb = make(fail_max=3)
    _fails(cb, 2)
    try:
        cb.call(err)
    except pybreaker.CircuitBreakerError:
        assert "NotImplementedError" in traceback.format_exc()
    else:
        pytest.fail("CircuitBreakerError expected")


def open_refuses_without_calling(make: Make) -> None:
    cb = make(fail_max=2, reset_timeout=30)
    _fails(cb, 1)
    with pytest.raises(pybreaker.CircuitBreakerError):
        cb.call(err)
    calls: list[int] = []
    with pytest.raises(pybreaker.CircuitBreakerError):
        cb.call(lambda: calls.append(1))
    assert calls == []


def a_failed_call_after_the_timeout_reopens_it(make: Make) -> None:
    cb = make(fail_max=3, reset_timeout=0.5)
    _fails(cb, 2)
    assert cb.current_state == "closed"
    with pytest.raises(pybreaker.CircuitBreakerError):
        cb.call(err)
    assert cb.fail_counter == 3
    time.sleep(0.6)
    with pytest.raises(pybreaker.CircuitBreakerError):
        cb.call(err)  # the trial call failed
    assert cb.fail_counter == 4
    assert cb.current_state == "open"


def a_successful_call_after_a_subsecond_timeout_closes_it(make: Make) -> None:
    """0.5 s means 0.5 s: opened_at keeps milliseconds (pybreaker's Redis storage rounds to
    whole seconds, which made its own test wait 2 s)."""
    cb = make(fail_max=3, reset_timeout=0.5)
    calls: list[int] = []

    def counted() -> bool:
        calls.append(1)
        return True

    _fails(cb, 2)
    with pytest.raises(pybreaker.CircuitBreakerError):
        cb.call(err)
    with pytest.raises(pybreaker.CircuitBreakerError):
        cb.call(counted)
    time.sleep(0.6)
    assert cb.call(counted) is True
    assert cb.fail_counter == 0
    assert cb.current_state == "closed"
    assert calls == [1]


def a_failed_call_when_half_open_opens_it(make: Make) -> None:
    cb = make()
    cb.half_open()
    assert cb.fail_counter == 0
    assert cb.current_state == "half-open"
    with pytest.raises(pybreaker.CircuitBreakerError):
        cb.call(err)
    assert cb.fail_counter == 1
    assert cb.current_state == "open"


def a_successful_call_when_half_open_closes_it(make: Make) -> None:
    cb = make()
    cb.half_open()
    assert cb.current_state == "half-open"
    assert cb.call(suc) is True
    assert cb.fail_counter == 0
    assert cb.current_state == "closed"


def success_threshold_needs_that_many_successes(make: Make) -> None:
    cb = make(success_threshold=2)
    cb.half_open()
    assert cb.call(suc) is True
    assert cb.current_state == "half-open"
    assert cb.success_counter == 1
    assert cb.call(suc) is True
    assert cb.current_state == "closed"


def close_by_hand_resets_it(make: Make) -> None:
    cb = make(fail_max=3)
    _fails(cb, 2)
    with pytest.raises(pybreaker.CircuitBreakerError):
        cb.call(err)
    with pytest.raises(pybreaker.CircuitBreakerError):
        cb.call(err)
    assert cb.fail_counter == 3
    assert cb.current_state == "open"
    cb.close()
    assert cb.fail_counter == 0
    assert cb.current_state == "closed"


class _Transitions(pybreaker.CircuitBreakerListener):
    def __init__(self) -> None:
        self.out = ""

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        assert cb
        if old_state:
            self.out += old_state.name
        if new_state:
            self.out += "->" + new_state.name
        self.out += ","


def listeners_hear_every_transition(make: Make) -> None:
    listener = _Transitions()
    cb = make(listeners=(listener,))
    assert cb.current_state == "closed"
    cb.open()
    assert cb.current_state == "open"
    cb.half_open()
    assert cb.current_state == "half-open"
    cb.close()
    assert cb.current_state == "closed"
    assert listener.out == "closed->open,open->half-open,half-open->closed,"


class _Calls(pybreaker.CircuitBreakerListener):
    def __init__(self) -> None:
        self.out = ""

    def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
        assert cb
        self.out += "-"

    def success(self, cb: Any) -> None:
        self.out += "success"

    def failure(self, cb: Any, exc: BaseException) -> None:
        assert exc
        self.out += "failure"


def listeners_hear_every_call(make: Make) -> None:
    listener = _Calls()
    cb = make(listeners=(listener,))
    assert cb.call(suc)
    with pytest.raises(NotImplementedError):
        cb.call(err)
    assert listener.out == "-success-failure"


def excluded_exceptions_count_as_successes(make: Make) -> None:
    cb = make(fail_max=2, exclude=[LookupError, lambda e: isinstance(e, Boom) and "ok" in str(e)])
    for exc in (KeyError("k"), Boom("ok"), IndexError("i")):
        with pytest.raises(type(exc)):
            cb.call(_raiser(exc))
        assert cb.fail_counter == 0
    with pytest.raises(Boom):
        cb.call(_raiser(Boom("bad")))
    assert cb.fail_counter == 1
    assert cb.current_state == "closed"


def _raiser(exc: BaseException) -> Callable[[], None]:
    def f() -> None:
        raise exc

    return f


def generators_are_watched_to_the_end(make: Make) -> None:
    cb = make()

    @cb
    def ok(value: Any) -> Iterator[Any]:
        yield value

    @cb
    def bad(value: Any) -> Iterator[Any]:
        x = yield value
        raise NotImplementedError(x)

    s, e = ok(True), bad(True)
    next(e)
    with pytest.raises(NotImplementedError):
        e.send(True)
    assert cb.fail_counter == 1
    assert next(s)
    with pytest.raises((StopIteration, RuntimeError)):
        next(s)
    assert cb.fail_counter == 0


def a_decorated_context_manager_sees_the_exception(make: Make) -> None:
    cb = make()

    @contextlib.contextmanager
    @cb
    def wrapper() -> Iterator[None]:
        try:
            yield
        except NotImplementedError:
            raise ValueError("translated") from None

    with pytest.raises(ValueError, match="translated"), wrapper():
        raise NotImplementedError


def calling_guards_a_block(make: Make) -> None:
    cb = make(fail_max=2, reset_timeout=0.3)
    called: list[int] = []
    with pytest.raises(Boom), cb.calling():
        raise Boom
    with pytest.raises(pybreaker.CircuitBreakerError), cb.calling():
        raise Boom
    assert cb.current_state == "open"
    with pytest.raises(pybreaker.CircuitBreakerError), cb.calling():
        called.append(1)
    assert called == []
    time.sleep(0.4)
    with cb.calling():
        called.append(1)
    assert called == [1]
    assert cb.fail_counter == 0
    assert cb.current_state == "closed"


CASES: list[Callable[[Make], None]] = [
    successful_call_keeps_it_closed,
    one_failure_keeps_it_closed,
    a_success_resets_the_failure_count,
    fail_max_failures_in_a_row_open_it,
    throw_new_error_on_trip_false_raises_the_original,
    the_trip_error_carries_the_original_traceback,
    open_refuses_without_calling,
    a_failed_call_after_the_timeout_reopens_it,
    a_successful_call_after_a_subsecond_timeout_closes_it,
    a_failed_call_when_half_open_opens_it,
    a_successful_call_when_half_open_closes_it,
    success_threshold_needs_that_many_successes,
    close_by_hand_resets_it,
    listeners_hear_every_transition,
    listeners_hear_every_call,
    excluded_exceptions_count_as_successes,
    generators_are_watched_to_the_end,
    a_decorated_context_manager_sees_the_exception,
    calling_guards_a_block,
]
