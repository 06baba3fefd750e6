"""The process's named breakers and limits, made on first use from the settings.

``proj.breaker("payments")`` anywhere in a process returns the same :class:`Breaker`; its
state is shared with every other process through Redis. The policy is, in order: the
``PROJ_BREAKER_*`` defaults, the declared dependency's ``breaker`` table, ``PROJ_BREAKERS``,
then the arguments of the first call that made it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import pybreaker
import pydantic

from proj.errors import ConfigError
from proj.guard import connections
from proj.guard.breaker import Breaker, LogListener, add_global_listener
from proj.guard.limiter import Limiter
from proj.resilience.breaker import BreakerPolicy
from proj.resilience.breaker_store import (
    AsyncBreakerStore,
    AsyncRedisBreakerStore,
    RedisBreakerStore,
)
from proj.resilience.ratelimit import RateLimit, parse_rate
from proj.resilience.ratelimit_store import (
    AsyncLimiterStore,
    AsyncRedisLimiterStore,
    RedisLimiterStore,
)
from proj.settings import get_settings

_lock = threading.Lock()
_breakers: dict[str, Breaker] = {}
_limiters: dict[str, Limiter] = {}

#: pybreaker's names for two policy knobs.
_ALIASES = {"reset_timeout": "open_s"}
_BREAKER_ARGS = ("exclude", "listeners", "throw_new_error_on_trip")

add_global_listener(LogListener())


def _redis_store() -> RedisBreakerStore:
    return RedisBreakerStore(connections.sync_client)


def _async_redis_store() -> AsyncBreakerStore:
    client = connections.loop_client()
    if client is not None:
        return AsyncRedisBreakerStore(client)
    return cast(AsyncBreakerStore, connections.InThread(_redis_store()))


def _async_limiter_store() -> AsyncLimiterStore:
    client = connections.loop_client()
    if client is not None:
        return AsyncRedisLimiterStore(client)
    return cast(AsyncLimiterStore, connections.InThread(RedisLimiterStore(connections.sync_client)))


def _register(name: str, policy: BreakerPolicy) -> None:
    _redis_store().register(name, policy)


def _policy(name: str, overrides: dict[str, Any]) -> BreakerPolicy:
    base = get_settings().breaker_policy(name).model_dump()
    known = set(BreakerPolicy.model_fields) | set(_ALIASES) | set(_BREAKER_ARGS)
    for key in overrides:
        if key not in known:
            raise ConfigError(
                f"proj.breaker({name!r}): unknown option {key!r}; known: {', '.join(sorted(known))}"
            )
    for key, value in overrides.items():
        if key not in _BREAKER_ARGS:
            base[_ALIASES.get(key, key)] = value
    try:
        return BreakerPolicy(**base)
    except pydantic.ValidationError as err:
        e = err.errors()[0]
        field = ".".join(str(p) for p in e.get("loc", ()))
        raise ConfigError(
            f"proj.breaker({name!r}): {field} {e['msg']}, got {e.get('input')!r}"
        ) from None


def breaker(
    name: str,
    *,
    exclude: Iterable[type[BaseException] | Callable[[BaseException], bool]] | None = None,
    listeners: Sequence[pybreaker.CircuitBreakerListener] | None = None,
    throw_new_error_on_trip: bool = True,
    **policy: Any,
) -> Breaker:
    """The circuit breaker ``name``, shared by every process on every host.

    By default it opens when more than ``PROJ_BREAKER_FAILURE_RATE`` (20%) of the calls in
    the last ``window_s`` failed, with at least ``min_calls`` calls; with ``fail_max=N`` it
    opens after N failures in a row, as pybreaker does. Other options: ``reset_timeout`` (or
    ``open_s``), ``success_threshold``, ``probes``, ``exclude``, ``listeners``,
    ``throw_new_error_on_trip`` and every field of :class:`BreakerPolicy`.
    """
    if not isinstance(name, str) or not name or len(name) > 200:
        raise ConfigError(f"proj.breaker: name must be a non-empty string, got {name!r}")
    if "state_storage" in policy:
        raise ConfigError(
            "proj.breaker keeps its state in proj's Redis; to give a plain "
            "pybreaker.CircuitBreaker shared state, pass state_storage=proj.BreakerStorage(name)"
        )
    given = {**policy}
    if exclude is not None or listeners is not None or not throw_new_error_on_trip:
        given.update(exclude=exclude, listeners=listeners)
    with _lock:
        existing = _breakers.get(name)
        if existing is not None:
            if given and _policy(name, given) != existing.policy:
                raise ConfigError(
                    f"proj.breaker({name!r}) was already made with other options in this "
                    "process; make it once and share the object"
                )
            if exclude is not None or listeners is not None:
                raise ConfigError(
                    f"proj.breaker({name!r}) already exists: add listeners or exclusions to it "
                    "with add_listener() / add_excluded_exception()"
                )
            return existing
        cb = Breaker(
            name,
            _policy(name, given),
            _redis_store(),
            _async_redis_store,
            exclude=exclude,
            listeners=listeners,
            throw_new_error_on_trip=throw_new_error_on_trip,
            cache_s=get_settings().breaker.cache_s,
            register=_register,
        )
        cb.enabled = get_settings().breaker.enabled
        _breakers[name] = cb
        return cb


def limiter(name: str, rate: RateLimit | str | dict[str, Any] | None = None) -> Limiter:
    """The global rate limit ``name``: ``rate`` when given (``"20/s"``, Celery's syntax),
    else the configured one (``PROJ_RATE_LIMITS``, the dependency's ``rate``), else none
    (429 pushes still hold every caller off)."""
    settings = get_settings()
    if rate is not None and not isinstance(rate, RateLimit):
        try:
            rate = parse_rate(rate)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"rate limit {name!r}: {err}") from None
    with _lock:
        existing = _limiters.get(name)
        if existing is not None:
            if rate is not None and existing.limit != _headroom(rate):
                raise ConfigError(
                    f"rate limit {name!r} is {existing.limit} in this process already; "
                    f"got {rate} (tasks sharing a rate_limit_key must give the same rate)"
                )
            return existing
        enforced = _headroom(rate) if rate is not None else settings.enforced_rate_limit(name)
        lim = Limiter(
            name,
            enforced,
            RedisLimiterStore(connections.sync_client),
            _async_limiter_store,
            max_wait_s=settings.limits.max_wait_s,
        )
        _limiters[name] = lim
        return lim


def _headroom(limit: RateLimit) -> RateLimit:
    """Run a limit ``PROJ_RATE_LIMIT_HEADROOM`` below nominal (network jitter)."""
    return RateLimit(limit.rate * (1 - get_settings().limits.headroom), limit.per_s, limit.burst)


def breakers() -> dict[str, Breaker]:
    """The breakers this process has made."""
    return dict(_breakers)


def flush() -> None:
    """Send every buffered outcome of this process now."""
    for cb in list(_breakers.values()):
        cb.flush()


def reset() -> None:
    """Forget every breaker and limit of this process (tests, and after settings change)."""
    with _lock:
        _breakers.clear()
        _limiters.clear()
