"""The one settings object, by section: read from the environment once, validated at start-up.

Each section is a pydantic-settings model with its own prefix, so every environment name is
the library's (prefix + field, or the alias a field names) and the names users know stay as
they are: ``PROJ_BATCH_CONCURRENCY`` is ``settings.batch.concurrency``,
``PROJ_VISIBILITY_TIMEOUT_S`` is ``settings.broker.visibility_timeout_s``, ``REDIS_URL`` is
``settings.broker.redis_url``. Every knob has a default and a unit in its name.

Entry points (the worker, ``proj``, the app when a task runs) read it once through
:func:`get_settings`; nothing reads it when proj is imported, so a program may set a variable
after ``import proj``. The policy objects (breaker, adaptive, rate limits) are built here, from
the sections, and nowhere else.

The sections live by concern: :mod:`proj.settings.messaging` (broker, queues, retries, results,
quarantine, parking), :mod:`proj.settings.calls` (breakers, adaptive concurrency, rate limits,
providers), :mod:`proj.settings.runs` (batches, the local stack), :mod:`proj.settings.api`
(the HTTP front door); :mod:`proj.settings.fields`
holds what they share (how a section reads the environment, errors that name the variable).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pydantic
from pydantic import BaseModel, PrivateAttr, model_validator
from pydantic_settings import BaseSettings

from proj.dependencies import Dependency
from proj.errors import ConfigError
from proj.queues import QueueConfig
from proj.resilience.breaker import BreakerPolicy
from proj.resilience.concurrency import ConcurrencyPolicy
from proj.resilience.ratelimit import RateLimit, parse_rate
from proj.settings.api import ApiSettings
from proj.settings.calls import (
    AdaptiveSettings,
    BreakerSettings,
    ProviderSettings,
    RateLimitSettings,
)
from proj.settings.declared import Declarations
from proj.settings.fields import (
    DEFAULT_PRICES,
    DEFAULT_REDIS_URL,
    ModelPrice,
    Priority,
    env_name,
    format_error,
)
from proj.settings.messaging import (
    BrokerSettings,
    ParkingSettings,
    QuarantineSettings,
    QueueSettings,
    ResultSettings,
    RetrySettings,
)
from proj.settings.runs import BatchSettings, StackSettings

__all__ = [
    "DEFAULT_PRICES",
    "DEFAULT_REDIS_URL",
    "SECTIONS",
    "AdaptiveSettings",
    "ApiSettings",
    "BatchSettings",
    "BreakerSettings",
    "BrokerSettings",
    "ModelPrice",
    "ParkingSettings",
    "Priority",
    "ProviderSettings",
    "QuarantineSettings",
    "QueueSettings",
    "RateLimitSettings",
    "ResultSettings",
    "RetrySettings",
    "Settings",
    "StackSettings",
    "env_name",
    "get_settings",
    "load_settings",
    "reset_settings",
]

T = TypeVar("T")

#: Section name -> its model, in the order the sections are read.
SECTIONS: dict[str, type[BaseSettings]] = {
    "broker": BrokerSettings,
    "queues": QueueSettings,
    "retries": RetrySettings,
    "breaker": BreakerSettings,
    "adaptive": AdaptiveSettings,
    "limits": RateLimitSettings,
    "batch": BatchSettings,
    "results": ResultSettings,
    "providers": ProviderSettings,
    "stack": StackSettings,
    "quarantine": QuarantineSettings,
    "parking": ParkingSettings,
    "api": ApiSettings,
}


class Settings(Declarations, BaseModel):
    """All of proj's configuration, one section per concern, and the declared dependencies
    and queues (:class:`proj.settings.declared.Declarations`)."""

    model_config = {"frozen": True}

    broker: BrokerSettings
    queues: QueueSettings
    retries: RetrySettings
    breaker: BreakerSettings
    adaptive: AdaptiveSettings
    limits: RateLimitSettings
    batch: BatchSettings
    results: ResultSettings
    providers: ProviderSettings
    stack: StackSettings
    quarantine: QuarantineSettings
    parking: ParkingSettings
    api: ApiSettings

    _deps: dict[str, Dependency] = PrivateAttr(default_factory=dict)
    _queues: QueueConfig = PrivateAttr(default_factory=lambda: QueueConfig({}))
    _derived: dict[str, Any] = PrivateAttr(default_factory=dict)

    def derived(self, key: str, make: Callable[[Settings], T]) -> T:
        """A value worked out from these settings once (the router's policy, the label sets of
        the per-queue figures). It lives and goes with this object, so code that runs for every
        message pays for it once, and a reset never leaves a stale one behind."""
        try:
            value: T = self._derived[key]
        except KeyError:
            value = self._derived[key] = make(self)
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        """Rules across sections, then the declared dependencies."""
        soft = self.broker.task_soft_time_limit_s
        if self.branch_timeout_s >= soft:
            # Only reachable when PROJ_BRANCH_TIMEOUT_S is set explicitly.
            raise ValueError(
                "PROJ_BRANCH_TIMEOUT_S must be below PROJ_TASK_SOFT_TIME_LIMIT_S, got "
                f"{self.branch_timeout_s} >= {soft}"
            )
        if self.batch_runner_budget_s >= soft:
            raise ValueError(
                "PROJ_BATCH_RUNNER_BUDGET_S must be below PROJ_TASK_SOFT_TIME_LIMIT_S, got "
                f"{self.batch_runner_budget_s} >= {soft}"
            )
        for name in self.breaker.overrides:
            self._check_breaker(name, f"PROJ_BREAKERS[{name!r}].")
        self._resolve_dependencies()
        self._resolve_queues()
        return self

    def _check_breaker(self, name: str, where: str) -> None:
        try:
            self.breaker_policy(name)
        except pydantic.ValidationError as err:
            e = err.errors()[0]
            field = ".".join(str(p) for p in e.get("loc", ()))
            raise ValueError(f"{where}{field}: {e['msg']}, got {e.get('input')!r}") from None

    # --- values across sections ----------------------------------------------------------
    @property
    def branch_timeout_s(self) -> float:
        if self.retries.branch_timeout_override_s is not None:
            return self.retries.branch_timeout_override_s
        return min(60.0, 0.8 * self.broker.task_soft_time_limit_s)

    @property
    def batch_runner_budget_s(self) -> float:
        if self.batch.runner_budget_override_s is not None:
            return self.batch.runner_budget_override_s
        return min(120.0, 0.5 * self.broker.task_soft_time_limit_s)

    @property
    def database(self) -> str:
        """The SQLAlchemy URL of the results database."""
        if self.results.database_url:
            return self.results.database_url
        return f"sqlite:///{(self.stack.state_dir / 'proj.sqlite3').resolve()}"

    # --- policies -----------------------------------------------------------------------
    def breaker_policy(self, name: str) -> BreakerPolicy:
        """The policy of breaker ``name``: the PROJ_BREAKER_* defaults, then what its
        dependency declares, then its PROJ_BREAKERS overrides."""
        declared = self._deps.get(name) or self._deps.get(name.split(".", 1)[0])
        own = dict(declared.breaker) if declared is not None else {}
        return BreakerPolicy(
            **{**self.breaker.defaults(), **own, **self.breaker.overrides.get(name, {})}
        )

    def concurrency_policy(self, **overrides: Any) -> ConcurrencyPolicy:
        """The adaptive controller's policy (``overrides`` from worker options)."""
        return self.adaptive.policy(**overrides)

    def rate_limit(self, name: str) -> RateLimit | None:
        """The configured global rate limit of dependency ``name``, if any (nominal)."""
        spec = self.limits.specs.get(name)
        if spec is not None:
            return parse_rate(spec)
        declared = self._deps.get(name)
        return declared.rate if declared is not None else None

    def enforced_rate_limit(self, name: str) -> RateLimit | None:
        """The limit as enforced: nominal less PROJ_RATE_LIMIT_HEADROOM."""
        limit = self.rate_limit(name)
        if limit is None:
            return None
        return RateLimit(limit.rate * (1 - self.limits.headroom), limit.per_s, limit.burst)


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, raising :class:`ConfigError` naming the variable.

    ``overrides`` are field values by section (``batch={"concurrency": 5}``) or, for a field
    whose name is unique, by the field's name (``visibility_timeout_s=100``)."""
    by_section: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for key, value in overrides.items():
        if key in SECTIONS:
            by_section[key].update(value)
            continue
        owners = [n for n, model in SECTIONS.items() if key in model.model_fields]
        if len(owners) != 1:
            raise TypeError(f"load_settings: no single section has a field {key!r}")
        by_section[owners[0]][key] = value
    sections: dict[str, BaseSettings] = {}
    for name, model in SECTIONS.items():
        try:
            sections[name] = model(**by_section[name])
        except pydantic.ValidationError as err:
            raise ConfigError(format_error(model, err)) from None
    try:
        return Settings(**sections)
    except pydantic.ValidationError as err:
        raise ConfigError(format_error(None, err)) from None


_cached: tuple[int, Settings] | None = None
_generation = 0


def get_settings() -> Settings:
    """The process-wide settings, read once."""
    global _cached
    cached = _cached
    if cached is not None and cached[0] == _generation:
        return cached[1]
    generation = _generation
    settings = load_settings()
    if generation == _generation:  # not reset while it was read (another thread's reset)
        _cached = (generation, settings)
    return settings


def reset_settings() -> None:
    """Forget the cached settings (tests, and the CLI after it changes the environment). A read
    that was under way in another thread when this ran is not kept."""
    global _cached, _generation
    _generation += 1
    _cached = None
