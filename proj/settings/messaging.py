"""Settings of messages and their lifecycle: broker, queues, retries, results, the quarantine and
parked (deferred) tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings

from proj.settings.fields import (
    DEFAULT_PRICES,
    DEFAULT_REDIS_URL,
    ModelPrice,
    Priority,
    _alias,
    _config,
    env_name,
)


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
        redis_schemes = ("redis://", "rediss://", "unix://")
        for name in ("redis_url", "broker_url_override", "result_backend_override"):
            url = getattr(self, name)
            # The broker may be RabbitMQ; results and state stay in Redis.
            schemes = (*redis_schemes, "amqp://", "amqps://")
            allowed = schemes if name == "broker_url_override" else redis_schemes
            if url is not None and not url.startswith(allowed):
                env = env_name(BrokerSettings, name)
                kinds = ", ".join(s.removesuffix("//") for s in allowed)
                raise ValueError(f"{env} must be a URL of {kinds}, got {url!r}")
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
    """The queues (config/queues.toml and the deployment's), how a message is routed to one,
    and the model triage picks."""

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
    queues_file: Path | None = Field(
        None, description="A TOML file of the deployment's queues and triage rules."
    )
    queues_env: dict[str, Any] = Field(
        default_factory=dict,
        validation_alias=_alias("PROJ_QUEUES", "queues_env"),
        description='JSON per-queue fields: {"legal": {"model": "large"}}.',
    )
    triage_rules_env: list[Any] | None = Field(
        None,
        validation_alias=_alias("PROJ_TRIAGE_RULES", "triage_rules_env"),
        description="JSON list of triage rules, first match wins; replaces the file's.",
    )

    @model_validator(mode="after")
    def _check(self) -> QueueSettings:
        if self.urgent_queue == self.bulk_queue:
            raise ValueError(
                f"PROJ_URGENT_QUEUE and PROJ_BULK_QUEUE must differ, both are {self.urgent_queue!r}"
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


class ResultSettings(BaseSettings):
    """Where results are stored and summaries sent."""

    model_config = _config()

    database_url: str | None = Field(
        None, description="SQLAlchemy URL for enriched_leads; SQLite in PROJ_STATE_DIR if unset."
    )
    notify_webhook_url: SecretStr | None = Field(
        None, description="POST pipeline summaries here; a log line when unset."
    )


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
