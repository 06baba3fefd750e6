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
"""

from __future__ import annotations

import functools
import os
import secrets
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import pydantic
from pydantic import AliasChoices, BaseModel, Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from proj import dependencies
from proj.dependencies import Dependency
from proj.errors import ConfigError
from proj.resilience.breaker import BreakerPolicy
from proj.resilience.concurrency import ConcurrencyPolicy
from proj.resilience.ratelimit import RateLimit, parse_rate

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

Priority = Annotated[int, Field(ge=0, le=9)]


class ModelPrice(BaseModel):
    """What one model costs, in US dollars per million tokens."""

    input_per_1m_usd: float = Field(ge=0)
    output_per_1m_usd: float = Field(ge=0)


DEFAULT_PRICES = {
    "gpt-4o-mini": ModelPrice(input_per_1m_usd=0.15, output_per_1m_usd=0.60),
    "gpt-4o": ModelPrice(input_per_1m_usd=2.50, output_per_1m_usd=10.00),
}


def _config(prefix: str = "PROJ_") -> SettingsConfigDict:
    return SettingsConfigDict(
        env_prefix=prefix,
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        env_ignore_empty=True,  # VAR= is unset, as a shell user means it
    )


def _alias(*names: str) -> Any:
    """The environment names of a field whose name is not prefix + field (the first is the
    one users are told about)."""
    return AliasChoices(*names)


class BrokerSettings(BaseSettings):
    """Where messages and results live, and how long a message is reserved."""

    model_config = _config()

    redis_url: str = Field(
        DEFAULT_REDIS_URL,
        validation_alias=_alias("REDIS_URL", "PROJ_REDIS_URL", "redis_url"),
        description="Redis for broker, results, breaker and limiter state (env REDIS_URL).",
    )
    broker_url_override: str | None = Field(
        None,
        validation_alias=_alias("CELERY_BROKER_URL", "broker_url_override"),
        description="Overrides the broker URL only (env CELERY_BROKER_URL).",
    )
    result_backend_override: str | None = Field(
        None,
        validation_alias=_alias("CELERY_RESULT_BACKEND", "result_backend_override"),
        description="Overrides the result backend only (env CELERY_RESULT_BACKEND).",
    )
    visibility_timeout_s: int = Field(
        3600, gt=0, description="Unacked message is redelivered after this long."
    )
    task_soft_time_limit_s: float = Field(
        300, gt=0, description="SoftTimeLimitExceeded is raised in the task after this."
    )
    task_time_limit_s: float = Field(
        360, gt=0, description="The task's process is killed after this."
    )
    result_expires_s: int = Field(86400, gt=0, description="Results are forgotten after this.")

    @model_validator(mode="after")
    def _check(self) -> BrokerSettings:
        if self.task_soft_time_limit_s >= self.task_time_limit_s:
            raise ValueError(
                "PROJ_TASK_SOFT_TIME_LIMIT_S must be below PROJ_TASK_TIME_LIMIT_S, got "
                f"{self.task_soft_time_limit_s} >= {self.task_time_limit_s}"
            )
        if self.task_time_limit_s >= self.visibility_timeout_s:
            raise ValueError(
                "PROJ_TASK_TIME_LIMIT_S must be below PROJ_VISIBILITY_TIMEOUT_S (a task still "
                f"running when its message becomes visible again runs twice), got "
                f"{self.task_time_limit_s} >= {self.visibility_timeout_s}"
            )
        for name in ("redis_url", "broker_url_override", "result_backend_override"):
            url = getattr(self, name)
            if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
                env = env_name(BrokerSettings, name)
                raise ValueError(f"{env} must be a redis://, rediss:// or unix:// URL, got {url!r}")
        return self

    @property
    def broker_url(self) -> str:
        return self.broker_url_override or self.redis_url

    @property
    def result_backend(self) -> str:
        return self.result_backend_override or self.redis_url

    @property
    def redis_url_is_explicit(self) -> bool:
        """True when the user pointed proj at a Redis (so ``proj up`` must not start one)."""
        return "redis_url" in self.model_fields_set

    @property
    def max_countdown_s(self) -> float:
        """Longest countdown proj may schedule: half the visibility timeout, so it is never
        redelivered while it waits."""
        return self.visibility_timeout_s / 2


class QueueSettings(BaseSettings):
    """The two queues, how a message is routed to one, and the model triage picks."""

    model_config = _config()

    default_priority: Priority = Field(
        5, description="Priority of a message sent without one; 0 is the most urgent on Redis."
    )
    urgent_priority_max: Priority = Field(
        2, description="A message with priority <= this (more urgent) goes to the urgent queue."
    )
    urgent_queue: str = Field("urgent", min_length=1)
    bulk_queue: str = Field("bulk", min_length=1)
    triage_queue_by_urgency: dict[str, str] = Field(
        default_factory=lambda: {"high": "urgent", "normal": "bulk", "low": "bulk"},
        description="JSON: urgency (high, normal, low) -> queue.",
    )
    triage_complex_min_chars: int = Field(
        1200, ge=1, description="Text at least this long is complex work (the large model)."
    )
    model_small: str = Field("gpt-4o-mini", min_length=1, description="Model for simple work.")
    model_large: str = Field("gpt-4o", min_length=1, description="Model for complex work.")
    model_prices: dict[str, ModelPrice] = Field(
        default_factory=lambda: dict(DEFAULT_PRICES),
        description='JSON: {"model": {"input_per_1m_usd": x, "output_per_1m_usd": y}}.',
    )

    @model_validator(mode="after")
    def _check(self) -> QueueSettings:
        if self.urgent_queue == self.bulk_queue:
            raise ValueError(
                f"PROJ_URGENT_QUEUE and PROJ_BULK_QUEUE must differ, both are {self.urgent_queue!r}"
            )
        for urgency, queue in self.triage_queue_by_urgency.items():
            if queue not in (self.urgent_queue, self.bulk_queue):
                raise ValueError(
                    f"PROJ_TRIAGE_QUEUE_BY_URGENCY[{urgency!r}] must be "
                    f"{self.urgent_queue!r} or {self.bulk_queue!r}, got {queue!r}"
                )
        return self


class RetrySettings(BaseSettings):
    """Retries of transient failures, and how long a fan-out branch may take."""

    model_config = _config()

    task_max_retries: int = Field(
        5, ge=0, description="Retries of a transient failure (timeout, 5xx) before a task fails."
    )
    retry_backoff_max_s: float = Field(
        60.0, gt=0, description="Cap of the exponential backoff between retries."
    )
    task_max_rate_limited: int = Field(
        100,
        ge=1,
        description="429s in a row after which a task fails (an exhausted quota); an open "
        "breaker or a rate-limit wait never fails a task.",
    )
    branch_timeout_override_s: float | None = Field(
        None,
        gt=0,
        validation_alias=_alias("PROJ_BRANCH_TIMEOUT_S", "branch_timeout_override_s"),
        description="A fan-out branch slower than this is a timeout error; by default 60 s, "
        "or 80% of the soft time limit if that is shorter.",
    )


class BreakerSettings(BaseSettings, BreakerPolicy):
    """The defaults of every circuit breaker (one per dependency): :class:`BreakerPolicy`'s
    fields, each read from ``PROJ_BREAKER_<FIELD>``; and overrides per name."""

    model_config = _config("PROJ_BREAKER_")

    enabled: bool = Field(True, description="Off: calls are never paused (tests, debug).")
    cache_s: float = Field(
        0.1, ge=0, le=5, description="How long a process trusts a 'closed' answer."
    )
    overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        validation_alias=_alias("PROJ_BREAKERS", "overrides"),
        description='JSON per-breaker overrides: {"ai": {"open_s": 60, "failure_rate": 0.5}}.',
    )

    def defaults(self) -> dict[str, Any]:
        """The PROJ_BREAKER_* values as :class:`BreakerPolicy` fields."""
        return self.model_dump(include=set(BreakerPolicy.model_fields))


class AdaptiveSettings(BaseSettings, ConcurrencyPolicy):
    """Adaptive concurrency, per worker node: :class:`ConcurrencyPolicy`'s fields, each read
    from ``PROJ_ADAPTIVE_<FIELD>`` (the bounds from ``PROJ_ADAPTIVE_MIN`` and ``_MAX``), plus
    the switch and the controller's tick."""

    model_config = _config("PROJ_ADAPTIVE_")

    enabled: bool = Field(
        False,
        validation_alias=_alias("PROJ_ADAPTIVE_CONCURRENCY", "enabled"),
        description="Run the adaptive controller in every worker (or pass --adaptive).",
    )
    start: int = Field(
        5, ge=1, description="Pool size adaptive workers start at (kept within the bounds)."
    )
    minimum: int = Field(2, ge=1, validation_alias=_alias("PROJ_ADAPTIVE_MIN", "minimum"))
    maximum: int = Field(10, ge=1, validation_alias=_alias("PROJ_ADAPTIVE_MAX", "maximum"))
    tick_s: float = Field(0.5, gt=0, description="How often the controller decides.")

    @model_validator(mode="after")
    def _bounds(self) -> AdaptiveSettings:
        """Replaces the policy's check: ``start`` outside the bounds is clamped, not refused."""
        if self.minimum > self.maximum:
            raise ValueError(
                f"PROJ_ADAPTIVE_MIN must be <= PROJ_ADAPTIVE_MAX, got {self.minimum} > "
                f"{self.maximum}"
            )
        try:
            self.policy()
        except pydantic.ValidationError as err:
            e = err.errors()[0]
            raise ValueError(f"PROJ_ADAPTIVE_*: {e['msg'].removeprefix('Value error, ')}") from None
        return self

    def policy(self, **overrides: Any) -> ConcurrencyPolicy:
        """The adaptive controller's policy (``overrides`` from worker options)."""
        values = {**self.model_dump(include=set(ConcurrencyPolicy.model_fields)), **overrides}
        values["start"] = min(values["maximum"], max(values["minimum"], values["start"]))
        return ConcurrencyPolicy(**values)


class RateLimitSettings(BaseSettings):
    """Global rate limits (per dependency, shared by all workers)."""

    model_config = _config("PROJ_RATE_LIMIT_")

    specs: dict[str, Any] = Field(
        default_factory=dict,
        validation_alias=_alias("PROJ_RATE_LIMITS", "specs"),
        description='JSON: {"ai": "50/s", "company": {"rate": "20/s", "burst": 5}}.',
    )
    max_wait_s: float = Field(
        5.0, ge=0, description="Sleep for a slot up to this long; defer the task beyond it."
    )
    headroom: float = Field(
        0.02,
        ge=0,
        lt=0.5,
        description="Run limits this much below nominal, so network jitter never makes the "
        "provider see more than the limit in any second.",
    )
    pause_s: float = Field(
        0.25,
        ge=0,
        validation_alias=_alias("PROJ_RATE_LIMITED_PAUSE_S", "pause_s"),
        description="After a 429 with no Retry-After, the caller waits this long.",
    )

    @model_validator(mode="after")
    def _check(self) -> RateLimitSettings:
        for name, spec in self.specs.items():
            try:
                parse_rate(spec)
            except (ValueError, TypeError) as err:
                raise ValueError(f"PROJ_RATE_LIMITS[{name!r}]: {err}") from None
        return self


class BatchSettings(BaseSettings):
    """Batches: runners, leases, the result cache and item retries."""

    model_config = _config("PROJ_BATCH_")

    concurrency: int = Field(250, ge=1, le=5000, description="Calls in flight per runner.")
    runners: int = Field(2, ge=1, le=512, description="Runner tasks a large batch gets.")
    small_max: int = Field(
        250, ge=0, description="Batches this small get one runner (bench/batch_small.py)."
    )
    slice: int = Field(50, ge=1, description="Items a runner claims at a time.")
    lease_s: float = Field(
        120.0, gt=0, description="A claimed item not finished by then is claimed again."
    )
    runner_lease_s: float = Field(
        30.0,
        gt=0,
        description="A runner renews its lease every third of this; once it lapses the runner "
        "counts as dead and a worker's watchdog starts the batch again.",
    )
    watchdog_interval_s: float = Field(
        5.0,
        ge=0,
        description="Every worker looks this often for batches whose runners died; 0: never.",
    )
    runner_budget_override_s: float | None = Field(
        None,
        gt=0,
        validation_alias=_alias("PROJ_BATCH_RUNNER_BUDGET_S", "runner_budget_override_s"),
        description="A runner hands over to a fresh task after this long (below the soft limit).",
    )
    ttl_s: int = Field(7 * 86400, gt=0, description="Batch state is kept this long.")
    cache_ttl_s: int = Field(
        86400,
        ge=0,
        validation_alias=_alias("PROJ_CACHE_TTL_S", "cache_ttl_s"),
        description="Results are reused for identical input.",
    )
    retry_backoff_s: float = Field(
        1.0,
        gt=0,
        validation_alias=_alias("PROJ_RETRY_BACKOFF_S", "retry_backoff_s"),
        description="First retry delay; doubles each time.",
    )


class ResultSettings(BaseSettings):
    """Where results are stored and summaries sent."""

    model_config = _config()

    database_url: str | None = Field(
        None, description="SQLAlchemy URL for enriched_leads; SQLite in PROJ_STATE_DIR if unset."
    )
    notify_webhook_url: SecretStr | None = Field(
        None, description="POST pipeline summaries here; a log line when unset."
    )


class ProviderSettings(BaseSettings):
    """The AI provider and lookup API, the HTTP client's limits, and the declared
    dependencies (config/dependencies.toml)."""

    model_config = _config()

    provider_base_url: str | None = Field(
        None,
        validation_alias=_alias("PROVIDER_BASE_URL", "PROJ_PROVIDER_BASE_URL", "provider_base_url"),
        description="OpenAI-compatible API root, e.g. https://api.openai.com "
        "(env PROVIDER_BASE_URL).",
    )
    provider_api_key: SecretStr | None = Field(
        None,
        validation_alias=_alias("PROVIDER_API_KEY", "PROJ_PROVIDER_API_KEY", "provider_api_key"),
        description="Bearer key for the AI provider (env PROVIDER_API_KEY); never logged.",
    )
    lookup_base_url: str | None = Field(
        None, description="Company and person lookup API root; defaults to PROVIDER_BASE_URL."
    )
    lookup_api_key: SecretStr | None = Field(None, description="Bearer key for the lookup API.")
    http_timeout_s: float = Field(30.0, gt=0, description="Whole-call limit of one HTTP call.")
    http_connect_timeout_s: float = Field(5.0, gt=0)
    http_max_connections: int = Field(1000, ge=1, description="Per worker process.")
    dependencies_file: Path | None = Field(
        None, description="A TOML file of the deployment's dependencies, merged over proj's."
    )
    dependencies_env: dict[str, Any] = Field(
        default_factory=dict,
        validation_alias=_alias("PROJ_DEPENDENCIES", "dependencies_env"),
        description='JSON per-dependency fields: {"payments": {"rate": "20/s"}}.',
    )

    @model_validator(mode="after")
    def _check(self) -> ProviderSettings:
        for name in ("provider_base_url", "lookup_base_url"):
            url = getattr(self, name)
            if url is not None and not url.startswith(("http://", "https://")):
                raise ValueError(
                    f"{env_name(ProviderSettings, name)} must be an http(s) URL, got {url!r}"
                )
        return self

    @property
    def lookup_url(self) -> str | None:
        return self.lookup_base_url or self.provider_base_url

    @property
    def lookup_key(self) -> SecretStr | None:
        """The lookup API's key; the provider's when lookups share the provider's URL."""
        if self.lookup_api_key is not None or self.lookup_base_url is not None:
            return self.lookup_api_key
        return self.provider_api_key


class StackSettings(BaseSettings):
    """The local stack (``proj up``, ``proj demo``): state, processes, Flower, simulator."""

    model_config = _config()

    state_dir: Path = Field(Path(".proj"), description="Project-local state: Redis data, logs.")
    redis_server: str = Field(
        "auto",
        description="redis-server for the embedded stack: auto (PATH, else the embedded "
        "extra's binary), embedded, or a path.",
    )
    urgent_concurrency: int = Field(4, ge=1, le=512)
    bulk_concurrency: int = Field(20, ge=1, le=512)
    flower_port: int = Field(0, ge=0, le=65535, description="0 picks a free port.")
    flower_basic_auth: str | None = Field(
        None,
        validation_alias=_alias("FLOWER_BASIC_AUTH", "PROJ_FLOWER_BASIC_AUTH", "flower_basic_auth"),
        description="user:password for Flower; generated and printed when unset.",
    )
    sim_port: int = Field(0, ge=0, le=65535, description="proj sim / proj up port; 0 picks one.")

    @model_validator(mode="after")
    def _check(self) -> StackSettings:
        if self.flower_basic_auth is not None:
            user, sep, password = self.flower_basic_auth.partition(":")
            if not (sep and user and password):
                raise ValueError(
                    "FLOWER_BASIC_AUTH must be user:password, both non-empty "
                    f"(got a value of {len(self.flower_basic_auth)} characters)"
                )
        return self

    def flower_credentials(self) -> tuple[str, str]:
        """(user, password) for Flower, generating a password when none is configured."""
        if self.flower_basic_auth:
            user, _, password = self.flower_basic_auth.partition(":")
            return user, password
        return "proj", secrets.token_urlsafe(12)


class QuarantineSettings(BaseSettings):
    """Poison messages (``proj quarantine``)."""

    model_config = _config("PROJ_QUARANTINE_")

    max: int = Field(
        10_000, gt=0, description="At most this many quarantined messages are kept (oldest go)."
    )
    ttl_s: int = Field(7 * 86400, gt=0, description="A quarantined message is kept this long.")
    body_max: int = Field(
        256 * 1024, gt=0, description="A quarantined body is kept up to this many bytes."
    )


class ParkingSettings(BaseSettings):
    """Deferred work (parked in Redis, moved back by every worker)."""

    model_config = _config("PROJ_PARKING_")

    tick_s: float = Field(
        0.5, gt=0, le=60, description="Every worker moves due parked tasks this often."
    )
    batch: int = Field(
        50, ge=1, description="At most this many tasks of one lot move per tick per worker."
    )
    lease_s: float = Field(
        30.0, gt=0, description="A mover's claim on parked tasks lapses after this."
    )


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
}


def env_name(section: type[BaseSettings], field: str) -> str:
    """The environment variable of ``field``: the first name of its alias, else the section's
    prefix + the field, as pydantic-settings reads it."""
    info = section.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        first = alias.choices[0]
        return first if isinstance(first, str) else field.upper()
    if isinstance(alias, str):
        return alias
    return f"{section.model_config.get('env_prefix', '')}{field}".upper()


class Settings(BaseModel):
    """All of proj's configuration, one section per concern."""

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

    _deps: dict[str, Dependency] = PrivateAttr(default_factory=dict)

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
        return self

    def _check_breaker(self, name: str, where: str) -> None:
        try:
            self.breaker_policy(name)
        except pydantic.ValidationError as err:
            e = err.errors()[0]
            field = ".".join(str(p) for p in e.get("loc", ()))
            raise ValueError(f"{where}{field}: {e['msg']}, got {e.get('input')!r}") from None

    def _resolve_dependencies(self) -> None:
        """Load the declarations (proj's, the deployment's file, PROJ_DEPENDENCIES) and take
        their URLs and keys from the environment (the settings fields when set)."""
        p = self.providers
        shipped = resources.files("proj.config").joinpath("dependencies.toml").read_text()
        user = None
        if p.dependencies_file is not None:
            try:
                user = p.dependencies_file.read_text()
            except OSError as err:
                raise ValueError(
                    f"PROJ_DEPENDENCIES_FILE: cannot read {str(p.dependencies_file)!r}: "
                    f"{err.strerror}"
                ) from None
        environ = dict(os.environ)
        for section, field in _DEPENDENCY_FIELDS:
            value = getattr(getattr(self, section), field)
            if value is not None:
                env = env_name(SECTIONS[section], field)
                environ[env] = value.get_secret_value() if isinstance(value, SecretStr) else value
        try:
            decls = dependencies.declarations(shipped, user, p.dependencies_env)
            self._deps = dependencies.resolve(decls, environ, timeout_s=p.http_timeout_s)
        except dependencies.DependencyError as err:
            raise ValueError(str(err)) from None
        for name in self._deps:
            self._check_breaker(name, f"dependency {name!r}: breaker.")

    # --- declared dependencies -------------------------------------------------------------
    @property
    def dependencies(self) -> dict[str, Dependency]:
        """Every declared dependency, resolved against the environment."""
        return dict(self._deps)

    def dependency(self, name: str) -> Dependency:
        """The enabled dependency ``name`` (``source.<x>``: the ``source`` declaration), or
        :class:`ConfigError` naming the known ones."""
        dep = self._deps.get(name)
        if dep is None and "." in name:
            parent = self._deps.get(name.split(".", 1)[0])
            dep = parent.named(name) if parent is not None else None
        if dep is None:
            known = ", ".join(sorted(self._deps)) or "none"
            raise ConfigError(
                f"no dependency named {name!r}; declared: {known} (declare it in "
                "PROJ_DEPENDENCIES_FILE or PROJ_DEPENDENCIES)"
            )
        if not dep.enabled:
            raise ConfigError(f"dependency {name!r} is switched off in this deployment")
        return dep

    def dependency_problems(self) -> list[str]:
        """What keeps an enabled, required dependency from working (checked at worker start)."""
        return dependencies.problems(self._deps)

    def dependency_breakers(self) -> list[str]:
        """Breakers every deployment has: one per enabled dependency with a fixed host
        (optional ones once configured)."""
        return sorted(
            n
            for n, d in self._deps.items()
            if d.enabled and not d.any_host and (d.base_url is not None or not d.optional)
        )

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


#: Settings fields that stand for a dependency's environment variable.
_DEPENDENCY_FIELDS = (
    ("providers", "provider_base_url"),
    ("providers", "provider_api_key"),
    ("providers", "lookup_base_url"),
    ("providers", "lookup_api_key"),
    ("results", "notify_webhook_url"),
)


def _shown(section: type[BaseSettings], field: str, value: object) -> str:
    """A rejected value as an error shows it: never a secret's."""
    annotation = str(section.model_fields[field].annotation)
    if "SecretStr" in annotation or field == "flower_basic_auth":
        return "<hidden>"
    return repr(value)


def _format_error(section: type[BaseSettings] | None, err: pydantic.ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = e.get("loc") or ()
        msg = e["msg"].removeprefix("Value error, ")
        field = _field_of(section, str(loc[0])) if loc and section is not None else None
        if section is not None and field is not None:
            shown = _shown(section, field, e.get("input"))
            lines.append(f"{env_name(section, field)}: {msg}, got {shown}")
        else:
            lines.append(msg)
    return "invalid settings: " + "; ".join(lines)


def _field_of(section: type[BaseSettings] | None, name: str) -> str | None:
    """The field an error's location names (a field, or one of its aliases)."""
    if section is None:
        return None
    if name in section.model_fields:
        return name
    for field, info in section.model_fields.items():
        alias = info.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        if name in choices:
            return field
    return None


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
            raise ConfigError(_format_error(model, err)) from None
    try:
        return Settings(**sections)
    except pydantic.ValidationError as err:
        raise ConfigError(_format_error(None, err)) from None


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()


def reset_settings() -> None:
    """Forget the cached settings (tests, and the CLI after it changes the environment)."""
    get_settings.cache_clear()
