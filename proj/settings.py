"""The one settings object: read from the environment once, validated at start-up.

Every knob has a default and a unit in its name. ``REDIS_URL`` is the only one most users
set; broker, result backend and (later) breaker and limiter state all live there.
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


class Settings(BaseSettings):
    """All of proj's configuration. Environment variables are ``PROJ_<FIELD>`` unless noted."""

    model_config = SettingsConfigDict(
        env_prefix="PROJ_",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        env_ignore_empty=True,  # VAR= is unset, as a shell user means it
    )

    # --- where things live -------------------------------------------------------------
    redis_url: str = Field(
        DEFAULT_REDIS_URL,
        validation_alias=AliasChoices("REDIS_URL", "PROJ_REDIS_URL"),
        description="Redis for broker, results, breaker and limiter state (env REDIS_URL).",
    )
    broker_url_override: str | None = Field(
        None,
        validation_alias="CELERY_BROKER_URL",
        description="Overrides the broker URL only (env CELERY_BROKER_URL).",
    )
    result_backend_override: str | None = Field(
        None,
        validation_alias="CELERY_RESULT_BACKEND",
        description="Overrides the result backend only (env CELERY_RESULT_BACKEND).",
    )
    state_dir: Path = Field(Path(".proj"), description="Project-local state: Redis data, logs.")
    redis_server: str = Field(
        "auto",
        description="redis-server for the embedded stack: auto (PATH, else the embedded "
        "extra's binary), embedded, or a path.",
    )

    # --- delivery guarantees -------------------------------------------------------------
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

    # --- routing -------------------------------------------------------------------------
    default_priority: Priority = Field(
        5, description="Priority of a message sent without one; 0 is the most urgent on Redis."
    )
    urgent_priority_max: Priority = Field(
        2, description="A message with priority <= this (more urgent) goes to the urgent queue."
    )
    urgent_queue: str = Field("urgent", min_length=1)
    bulk_queue: str = Field("bulk", min_length=1)

    # --- the local stack (proj up / proj demo) -------------------------------------------
    urgent_concurrency: int = Field(4, ge=1, le=512)
    bulk_concurrency: int = Field(20, ge=1, le=512)
    flower_port: int = Field(0, ge=0, le=65535, description="0 picks a free port.")
    flower_basic_auth: str | None = Field(
        None,
        validation_alias=AliasChoices("FLOWER_BASIC_AUTH", "PROJ_FLOWER_BASIC_AUTH"),
        description="user:password for Flower; generated and printed when unset.",
    )

    # --- providers ------------------------------------------------------------------------
    provider_base_url: str | None = Field(
        None,
        validation_alias=AliasChoices("PROVIDER_BASE_URL", "PROJ_PROVIDER_BASE_URL"),
        description="OpenAI-compatible API root, e.g. https://api.openai.com "
        "(env PROVIDER_BASE_URL).",
    )
    provider_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("PROVIDER_API_KEY", "PROJ_PROVIDER_API_KEY"),
        description="Bearer key for the AI provider (env PROVIDER_API_KEY); never logged.",
    )
    lookup_base_url: str | None = Field(
        None, description="Company and person lookup API root; defaults to PROVIDER_BASE_URL."
    )
    lookup_api_key: SecretStr | None = Field(None, description="Bearer key for the lookup API.")
    http_timeout_s: float = Field(30.0, gt=0, description="Whole-call limit of one HTTP call.")
    http_connect_timeout_s: float = Field(5.0, gt=0)
    http_max_connections: int = Field(1000, ge=1, description="Per worker process.")
    branch_timeout_override_s: float | None = Field(
        None,
        gt=0,
        validation_alias=AliasChoices("PROJ_BRANCH_TIMEOUT_S", "branch_timeout_s"),
        description="A fan-out branch slower than this is a timeout error; by default 60 s, "
        "or 80% of the soft time limit if that is shorter.",
    )
    model_small: str = Field("gpt-4o-mini", min_length=1, description="Model for simple work.")
    model_large: str = Field("gpt-4o", min_length=1, description="Model for complex work.")
    model_prices: dict[str, ModelPrice] = Field(
        default_factory=lambda: dict(DEFAULT_PRICES),
        description='JSON: {"model": {"input_per_1m_usd": x, "output_per_1m_usd": y}}.',
    )

    # --- triage ---------------------------------------------------------------------------
    triage_queue_by_urgency: dict[str, str] = Field(
        default_factory=lambda: {"high": "urgent", "normal": "bulk", "low": "bulk"},
        description="JSON: urgency (high, normal, low) -> queue.",
    )
    triage_complex_min_chars: int = Field(
        1200, ge=1, description="Text at least this long is complex work (the large model)."
    )

    # --- results --------------------------------------------------------------------------
    database_url: str | None = Field(
        None, description="SQLAlchemy URL for enriched_leads; SQLite in PROJ_STATE_DIR if unset."
    )
    notify_webhook_url: SecretStr | None = Field(
        None, description="POST pipeline summaries here; a log line when unset."
    )

    # --- retries ----------------------------------------------------------------------------
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

    # --- circuit breakers (one per dependency; PROJ_BREAKERS overrides per name) -------------
    breaker_enabled: bool = Field(True, description="Off: calls are never paused (tests, debug).")
    breaker_failure_rate: float = Field(0.2, gt=0, lt=1, description="Opens above this rate.")
    breaker_window_s: float = Field(10.0, gt=0, description="Sliding window length.")
    breaker_window_buckets: int = Field(10, ge=1, le=600)
    breaker_min_calls: int = Field(20, ge=1, description="Fewer calls in the window never open it.")
    breaker_open_s: float = Field(30.0, gt=0, description="Open this long before one probe.")
    breaker_probes: int = Field(1, ge=1, description="Half-open probes at once, cluster-wide.")
    breaker_probe_lease_s: float = Field(
        60.0, gt=0, description="A probe that never reports frees its slot after this."
    )
    breaker_half_open_wait_s: float = Field(1.0, gt=0)
    breaker_cache_s: float = Field(
        0.1, ge=0, le=5, description="How long a process trusts a 'closed' answer."
    )
    breakers: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description='JSON per-breaker overrides: {"ai": {"open_s": 60, "failure_rate": 0.5}}.',
    )

    # --- adaptive concurrency (per worker node) -------------------------------------------
    adaptive_enabled: bool = Field(
        False,
        validation_alias=AliasChoices("PROJ_ADAPTIVE_CONCURRENCY", "adaptive_enabled"),
        description="Run the adaptive controller in every worker (or pass --adaptive).",
    )
    adaptive_start: int = Field(
        5, ge=1, description="Pool size proj up starts adaptive workers at."
    )
    adaptive_min: int = Field(2, ge=1)
    adaptive_max: int = Field(10, ge=1)
    adaptive_target_success: float = Field(0.95, gt=0, lt=1)
    adaptive_increase: int = Field(1, ge=1)
    adaptive_decrease_ratio: float = Field(0.9, gt=0, lt=1)
    adaptive_cooldown_s: float = Field(2.0, ge=0)
    adaptive_window_s: float = Field(10.0, gt=0)
    adaptive_min_samples: int = Field(20, ge=1)
    adaptive_tick_s: float = Field(0.5, gt=0)

    # --- global rate limits (per dependency, shared by all workers) -------------------------
    rate_limits: dict[str, Any] = Field(
        default_factory=dict,
        description='JSON: {"ai": "50/s", "company": {"rate": "20/s", "burst": 5}}.',
    )
    rate_limit_max_wait_s: float = Field(
        5.0, ge=0, description="Sleep for a slot up to this long; defer the task beyond it."
    )
    rate_limit_headroom: float = Field(
        0.02,
        ge=0,
        lt=0.5,
        description="Run limits this much below nominal, so network jitter never makes the "
        "provider see more than the limit in any second.",
    )
    rate_limited_pause_s: float = Field(
        0.25, ge=0, description="After a 429 with no Retry-After, the caller waits this long."
    )

    # --- batches ---------------------------------------------------------------------------
    batch_concurrency: int = Field(250, ge=1, le=5000, description="Calls in flight per runner.")
    batch_runners: int = Field(2, ge=1, le=512, description="Runner tasks a large batch gets.")
    batch_small_max: int = Field(
        250, ge=0, description="Batches this small get one runner (bench/batch_small.py)."
    )
    batch_slice: int = Field(50, ge=1, description="Items a runner claims at a time.")
    batch_lease_s: float = Field(
        120.0, gt=0, description="A claimed item not finished by then is claimed again."
    )
    batch_runner_lease_s: float = Field(
        30.0,
        gt=0,
        description="A runner renews its lease every third of this; once it lapses the runner "
        "counts as dead and a worker's watchdog starts the batch again.",
    )
    batch_watchdog_interval_s: float = Field(
        5.0,
        ge=0,
        description="Every worker looks this often for batches whose runners died; 0: never.",
    )
    batch_runner_budget_override_s: float | None = Field(
        None,
        gt=0,
        validation_alias=AliasChoices("PROJ_BATCH_RUNNER_BUDGET_S", "batch_runner_budget_s"),
        description="A runner hands over to a fresh task after this long (below the soft limit).",
    )
    batch_ttl_s: int = Field(7 * 86400, gt=0, description="Batch state is kept this long.")
    cache_ttl_s: int = Field(86400, ge=0, description="Results are reused for identical input.")
    retry_backoff_s: float = Field(1.0, gt=0, description="First retry delay; doubles each time.")

    # --- poison messages (proj quarantine) ----------------------------------------------------
    quarantine_max: int = Field(
        10_000, gt=0, description="At most this many quarantined messages are kept (oldest go)."
    )
    quarantine_ttl_s: int = Field(
        7 * 86400, gt=0, description="A quarantined message is kept this long."
    )
    quarantine_body_max: int = Field(
        256 * 1024, gt=0, description="A quarantined body is kept up to this many bytes."
    )

    # --- deferred work (parked in Redis, moved back by every worker) ----------------------
    parking_tick_s: float = Field(
        0.5, gt=0, le=60, description="Every worker moves due parked tasks this often."
    )
    parking_batch: int = Field(
        50, ge=1, description="At most this many tasks of one lot move per tick per worker."
    )
    parking_lease_s: float = Field(
        30.0, gt=0, description="A mover's claim on parked tasks lapses after this."
    )

    # --- declared dependencies (config/dependencies.toml) ----------------------------------
    dependencies_file: Path | None = Field(
        None, description="A TOML file of the deployment's dependencies, merged over proj's."
    )
    dependencies_env: dict[str, Any] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("PROJ_DEPENDENCIES", "dependencies_env"),
        description='JSON per-dependency fields: {"payments": {"rate": "20/s"}}.',
    )

    # --- simulated provider ---------------------------------------------------------------
    sim_port: int = Field(0, ge=0, le=65535, description="proj sim / proj up port; 0 picks one.")

    @model_validator(mode="after")
    def _check_limits(self) -> Settings:
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
        if self.urgent_queue == self.bulk_queue:
            raise ValueError(
                f"PROJ_URGENT_QUEUE and PROJ_BULK_QUEUE must differ, both are {self.urgent_queue!r}"
            )
        if self.branch_timeout_s >= self.task_soft_time_limit_s:
            # Only reachable when PROJ_BRANCH_TIMEOUT_S is set explicitly.
            raise ValueError(
                "PROJ_BRANCH_TIMEOUT_S must be below PROJ_TASK_SOFT_TIME_LIMIT_S, got "
                f"{self.branch_timeout_s} >= {self.task_soft_time_limit_s}"
            )
        for urgency, queue in self.triage_queue_by_urgency.items():
            if queue not in (self.urgent_queue, self.bulk_queue):
                raise ValueError(
                    f"PROJ_TRIAGE_QUEUE_BY_URGENCY[{urgency!r}] must be "
                    f"{self.urgent_queue!r} or {self.bulk_queue!r}, got {queue!r}"
                )
        for name in self.breakers:
            try:
                self.breaker_policy(name)
            except pydantic.ValidationError as err:
                e = err.errors()[0]
                field = ".".join(str(p) for p in e.get("loc", ()))
                raise ValueError(
                    f"PROJ_BREAKERS[{name!r}].{field}: {e['msg']}, got {e.get('input')!r}"
                ) from None
        if self.batch_runner_budget_s >= self.task_soft_time_limit_s:
            raise ValueError(
                "PROJ_BATCH_RUNNER_BUDGET_S must be below PROJ_TASK_SOFT_TIME_LIMIT_S, got "
                f"{self.batch_runner_budget_s} >= {self.task_soft_time_limit_s}"
            )
        for name, spec in self.rate_limits.items():
            try:
                parse_rate(spec)
            except (ValueError, TypeError) as err:
                raise ValueError(f"PROJ_RATE_LIMITS[{name!r}]: {err}") from None
        try:
            self.concurrency_policy()
        except pydantic.ValidationError as err:
            e = err.errors()[0]
            raise ValueError(f"PROJ_ADAPTIVE_*: {e['msg'].removeprefix('Value error, ')}") from None
        for name in ("provider_base_url", "lookup_base_url"):
            url = getattr(self, name)
            if url is not None and not url.startswith(("http://", "https://")):
                raise ValueError(f"{_env_name(name)} must be an http(s) URL, got {url!r}")
        self._resolve_dependencies()
        if self.flower_basic_auth is not None:
            user, sep, password = self.flower_basic_auth.partition(":")
            if not (sep and user and password):
                raise ValueError(
                    "FLOWER_BASIC_AUTH must be user:password, both non-empty "
                    f"(got a value of {len(self.flower_basic_auth)} characters)"
                )
        for name in ("redis_url", "broker_url_override", "result_backend_override"):
            url = getattr(self, name)
            if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
                env = _ENV_NAMES.get(name, "PROJ_" + name.upper())
                raise ValueError(f"{env} must be a redis://, rediss:// or unix:// URL, got {url!r}")
        return self

    _deps: dict[str, Dependency] = PrivateAttr(default_factory=dict)

    def _resolve_dependencies(self) -> None:
        """Load the declarations (proj's, the deployment's file, PROJ_DEPENDENCIES) and take
        their URLs and keys from the environment (the settings fields when set)."""
        shipped = resources.files("proj.config").joinpath("dependencies.toml").read_text()
        user = None
        if self.dependencies_file is not None:
            try:
                user = self.dependencies_file.read_text()
            except OSError as err:
                raise ValueError(
                    f"PROJ_DEPENDENCIES_FILE: cannot read {str(self.dependencies_file)!r}: "
                    f"{err.strerror}"
                ) from None
        environ = dict(os.environ)
        for fld, env in _DEPENDENCY_FIELDS.items():
            value = getattr(self, fld)
            if value is not None:
                environ[env] = value.get_secret_value() if isinstance(value, SecretStr) else value
        try:
            decls = dependencies.declarations(shipped, user, self.dependencies_env)
            self._deps = dependencies.resolve(decls, environ, timeout_s=self.http_timeout_s)
        except dependencies.DependencyError as err:
            raise ValueError(str(err)) from None
        for name in self._deps:
            try:
                self.breaker_policy(name)
            except pydantic.ValidationError as err:
                e = err.errors()[0]
                field = ".".join(str(p) for p in e.get("loc", ()))
                raise ValueError(
                    f"dependency {name!r}: breaker.{field} {e['msg']}, got {e.get('input')!r}"
                ) from None

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

    # --- derived values ------------------------------------------------------------------
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

    @property
    def lookup_url(self) -> str | None:
        return self.lookup_base_url or self.provider_base_url

    @property
    def branch_timeout_s(self) -> float:
        if self.branch_timeout_override_s is not None:
            return self.branch_timeout_override_s
        return min(60.0, 0.8 * self.task_soft_time_limit_s)

    @property
    def batch_runner_budget_s(self) -> float:
        if self.batch_runner_budget_override_s is not None:
            return self.batch_runner_budget_override_s
        return min(120.0, 0.5 * self.task_soft_time_limit_s)

    @property
    def lookup_key(self) -> SecretStr | None:
        """The lookup API's key; the provider's when lookups share the provider's URL."""
        if self.lookup_api_key is not None or self.lookup_base_url is not None:
            return self.lookup_api_key
        return self.provider_api_key

    @property
    def database(self) -> str:
        """The SQLAlchemy URL of the results database."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.state_dir / 'proj.sqlite3').resolve()}"

    def breaker_policy(self, name: str) -> BreakerPolicy:
        """The policy of breaker ``name``: the PROJ_BREAKER_* defaults, then its overrides."""
        base = {
            "failure_rate": self.breaker_failure_rate,
            "window_s": self.breaker_window_s,
            "window_buckets": self.breaker_window_buckets,
            "min_calls": self.breaker_min_calls,
            "open_s": self.breaker_open_s,
            "probes": self.breaker_probes,
            "probe_lease_s": self.breaker_probe_lease_s,
            "half_open_wait_s": self.breaker_half_open_wait_s,
        }
        declared = self._deps.get(name) or self._deps.get(name.split(".", 1)[0])
        own = dict(declared.breaker) if declared is not None else {}
        return BreakerPolicy(**{**base, **own, **self.breakers.get(name, {})})

    def concurrency_policy(self, **overrides: Any) -> ConcurrencyPolicy:
        """The adaptive controller's policy (``overrides`` from worker options)."""
        values = {
            "start": self.adaptive_start,
            "minimum": self.adaptive_min,
            "maximum": self.adaptive_max,
            "target_success": self.adaptive_target_success,
            "increase": self.adaptive_increase,
            "decrease_ratio": self.adaptive_decrease_ratio,
            "cooldown_s": self.adaptive_cooldown_s,
            "window_s": self.adaptive_window_s,
            "min_samples": self.adaptive_min_samples,
            **overrides,
        }
        values["start"] = min(values["maximum"], max(values["minimum"], values["start"]))
        return ConcurrencyPolicy(**values)

    def rate_limit(self, name: str) -> RateLimit | None:
        """The configured global rate limit of dependency ``name``, if any (nominal)."""
        spec = self.rate_limits.get(name)
        if spec is not None:
            return parse_rate(spec)
        declared = self._deps.get(name)
        return declared.rate if declared is not None else None

    def enforced_rate_limit(self, name: str) -> RateLimit | None:
        """The limit as enforced: nominal less PROJ_RATE_LIMIT_HEADROOM."""
        limit = self.rate_limit(name)
        if limit is None:
            return None
        return RateLimit(limit.rate * (1 - self.rate_limit_headroom), limit.per_s, limit.burst)

    def flower_credentials(self) -> tuple[str, str]:
        """(user, password) for Flower, generating a password when none is configured."""
        if self.flower_basic_auth:
            user, _, password = self.flower_basic_auth.partition(":")
            return user, password
        return "proj", secrets.token_urlsafe(12)


_ENV_NAMES = {
    "redis_url": "REDIS_URL",
    "broker_url_override": "CELERY_BROKER_URL",
    "result_backend_override": "CELERY_RESULT_BACKEND",
    "flower_basic_auth": "FLOWER_BASIC_AUTH",
    "provider_base_url": "PROVIDER_BASE_URL",
    "provider_api_key": "PROVIDER_API_KEY",
    "branch_timeout_override_s": "PROJ_BRANCH_TIMEOUT_S",
    "batch_runner_budget_override_s": "PROJ_BATCH_RUNNER_BUDGET_S",
    "dependencies_env": "PROJ_DEPENDENCIES",
}


#: Settings fields that stand for a dependency's environment variable (load_settings(...)).
_DEPENDENCY_FIELDS = {
    "provider_base_url": "PROVIDER_BASE_URL",
    "provider_api_key": "PROVIDER_API_KEY",
    "lookup_base_url": "PROJ_LOOKUP_BASE_URL",
    "lookup_api_key": "PROJ_LOOKUP_API_KEY",
    "notify_webhook_url": "PROJ_NOTIFY_WEBHOOK_URL",
}

_SECRET_FIELDS = {"provider_api_key", "lookup_api_key", "notify_webhook_url", "flower_basic_auth"}


def _env_name(field: str) -> str:
    return _ENV_NAMES.get(field, "PROJ_" + field.upper())


def _format_error(err: pydantic.ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = e.get("loc") or ()
        msg = e["msg"].removeprefix("Value error, ")
        if loc:
            field = str(loc[0])
            field = next((f for f, a in _ENV_NAMES.items() if a == field), field)
            field = field.lower()
            shown = "<hidden>" if field in _SECRET_FIELDS else repr(e.get("input"))
            lines.append(f"{_env_name(field)}: {msg}, got {shown}")
        else:
            lines.append(msg)
    return "invalid settings: " + "; ".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment (and ``overrides``), raising :class:`ConfigError`."""
    try:
        return Settings(**overrides)
    except pydantic.ValidationError as err:
        raise ConfigError(_format_error(err)) from None


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()


def reset_settings() -> None:
    """Forget the cached settings (tests, and the CLI after it changes the environment)."""
    get_settings.cache_clear()
