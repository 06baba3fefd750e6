"""Settings of calls to providers and other dependencies: circuit breakers, adaptive
concurrency, global rate limits, the providers and what their models cost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings

from proj.resilience.breaker import BreakerPolicy
from proj.resilience.concurrency import ConcurrencyPolicy
from proj.resilience.ratelimit import parse_rate
from proj.settings.fields import _alias, _config, env_name


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
