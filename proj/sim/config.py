"""What the simulator does with each request: its configuration and the pure decision.

The configuration has a ``default`` route behaviour and per-route overrides (``chat``,
``company``, ``person``, ``source``). Everything can be changed at runtime through
``POST /admin/config``.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ROUTES = ("chat", "company", "person", "source")
Outcome = Literal["ok", "error", "rate_limited", "outage", "malformed", "timeout"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "error", "rate_limited", "outage", "malformed", "timeout")

#: The header every ``/admin/`` call carries the admin key in, and the variable the server
#: reads the key from (``proj sim`` makes one up and prints it when the variable is unset).
ADMIN_KEY_HEADER = "X-Admin-Key"
ADMIN_KEY_ENV = "SIM_ADMIN_KEY"


class Outage(BaseModel):
    """The route answers ``status`` from ``start_s`` for ``duration_s`` seconds after the
    configuration was applied; with ``every_s`` it repeats."""

    model_config = ConfigDict(extra="forbid")
    start_s: float = Field(0.0, ge=0)
    duration_s: float = Field(gt=0)
    every_s: float | None = Field(None, gt=0)
    status: int = Field(503, ge=500, le=599)

    def active(self, elapsed_s: float) -> bool:
        if elapsed_s < self.start_s:
            return False
        t = elapsed_s - self.start_s
        if self.every_s is not None:
            t = math.fmod(t, self.every_s)
        return t < self.duration_s


class RouteConfig(BaseModel):
    """How one route behaves. Rates are fractions in [0, 1]."""

    model_config = ConfigDict(extra="forbid")
    latency_ms: float = Field(20.0, ge=0, description="Median latency of a good answer.")
    latency_sigma: float = Field(
        0.0, ge=0, description="Lognormal spread of the latency; 0 is a fixed latency."
    )
    error_rate: float = Field(0.0, ge=0, le=1)
    error_status: int = Field(500, ge=400, le=599)
    error_by_key: bool = Field(
        False, description="Fail the same keys every time (a key hashing below error_rate)."
    )
    malformed_rate: float = Field(0.0, ge=0, le=1)
    timeout_rate: float = Field(
        0.0, ge=0, le=1, description="Hang for hang_s instead of answering."
    )
    hang_s: float = Field(120.0, ge=0)
    capacity_concurrent: int | None = Field(None, ge=1, description="429 beyond this many.")
    capacity_rps: float | None = Field(None, gt=0, description="429 beyond this many per second.")
    retry_after_s: float = Field(1.0, ge=0)
    retry_after_format: Literal["seconds", "http-date"] = "seconds"
    down: bool = Field(False, description="Answer 503 to everything until switched off.")
    rate_limit_next: int = Field(
        0, ge=0, description="Answer 429 (with Retry-After) to the next N requests."
    )
    outages: list[Outage] = Field(default_factory=list)


class SimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    default: RouteConfig = Field(default_factory=RouteConfig)
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    seed: int | None = None

    @model_validator(mode="after")
    def _known_routes(self) -> SimConfig:
        for name in self.routes:
            if name not in ROUTES:
                raise ValueError(f"routes: unknown route {name!r}, expected one of {ROUTES}")
        return self

    def route(self, name: str) -> RouteConfig:
        return self.routes.get(name, self.default)

    def merged(self, patch: dict[str, Any]) -> SimConfig:
        """This configuration with ``patch`` applied field by field (a partial update)."""
        data = self.model_dump()
        if "default" in patch:
            data["default"] = {**data["default"], **patch["default"]}
        for name, fields in (patch.get("routes") or {}).items():
            base = data["routes"].get(name, data["default"])
            data["routes"][name] = {**base, **fields}
        if "seed" in patch:
            data["seed"] = patch["seed"]
        return SimConfig.model_validate(data)


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    status: int
    delay_s: float
    retry_after_s: float | None = None


def key_fraction(key: str) -> float:
    """A stable number in [0, 1) for a key, the same in every process and run."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def decide(
    cfg: RouteConfig,
    *,
    key: str,
    elapsed_s: float,
    in_flight: int,
    arrivals_last_s: int,
    rng: random.Random,
) -> Decision:
    """What to answer. ``in_flight`` excludes this request; ``arrivals_last_s`` includes it."""
    if cfg.down:
        return Decision("outage", 503, 0.0)
    for outage in cfg.outages:
        if outage.active(elapsed_s):
            return Decision("outage", outage.status, 0.0)
    if cfg.capacity_concurrent is not None and in_flight >= cfg.capacity_concurrent:
        return Decision("rate_limited", 429, 0.0, cfg.retry_after_s)
    if cfg.capacity_rps is not None and arrivals_last_s > cfg.capacity_rps:
        return Decision("rate_limited", 429, 0.0, cfg.retry_after_s)
    latency = cfg.latency_ms / 1000.0
    if cfg.latency_sigma > 0:
        latency *= math.exp(rng.gauss(0.0, cfg.latency_sigma))
    if cfg.timeout_rate and rng.random() < cfg.timeout_rate:
        return Decision("timeout", 504, cfg.hang_s)
    failing = (
        key_fraction(key) < cfg.error_rate if cfg.error_by_key else rng.random() < cfg.error_rate
    )
    if cfg.error_rate and failing:
        return Decision("error", cfg.error_status, latency)
    if cfg.malformed_rate and rng.random() < cfg.malformed_rate:
        return Decision("malformed", 200, latency)
    return Decision("ok", 200, latency)
