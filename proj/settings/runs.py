"""Settings of how work runs: batches, and the local stack (`proj up`, `proj demo`)."""

from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings

from proj.settings.fields import _alias, _config


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
    metrics_port: int = Field(
        0, ge=0, le=65535, description="proj up's `proj metrics` port; 0 picks a free one."
    )
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
