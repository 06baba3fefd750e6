"""Adaptive worker concurrency: AIMD on the success rate of provider calls. Pure.

Rule (defaults from the product design): start at 5; while more than 95% of the calls since
the last change succeeded and work is waiting, grow (up to 10); when 95% or fewer succeeded
(429s, timeouts, 5xx and connection errors all count as failures), multiply by 0.9 and drop
at least 1 (down to 2). At most one change per cooldown, and only once enough calls were seen
since the last change to judge the new size.

Growth starts like TCP's slow start: the size doubles until the first failures, which send it
back to the last size that held; from then on it grows by ``increase`` (additive increase,
multiplicative decrease). Without slow start, reaching 40 from 5 one step per cooldown takes
35 cooldowns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ConcurrencyPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    start: int = Field(5, ge=1)
    minimum: int = Field(2, ge=1)
    maximum: int = Field(10, ge=1)
    target_success: float = Field(0.95, gt=0, lt=1, description="Grow only above this.")
    increase: int = Field(1, ge=1, description="Added per step up.")
    decrease_ratio: float = Field(0.9, gt=0, lt=1, description="Multiplied per step down.")
    cooldown_s: float = Field(2.0, ge=0, description="Least time between two changes.")
    window_s: float = Field(10.0, gt=0, description="Longest look-back for outcomes.")
    min_samples: int = Field(20, ge=1, description="Calls needed to judge a size.")
    slow_start: bool = Field(True, description="Double until the first failures.")
    grow_when_used: float = Field(
        0.9, gt=0, le=1, description="Grow only once this share of the size is busy."
    )

    @model_validator(mode="after")
    def _bounds(self) -> ConcurrencyPolicy:
        if not self.minimum <= self.start <= self.maximum:
            raise ValueError(
                f"need minimum <= start <= maximum, got {self.minimum} <= {self.start} "
                f"<= {self.maximum}"
            )
        return self


@dataclass(frozen=True)
class ControllerState:
    """What the rule remembers between decisions."""

    limit: int
    slow_start: bool = True
    last_good: int = 0  # the size before the last increase


@dataclass(frozen=True)
class Decision:
    state: ControllerState
    reason: str
    changed: bool

    @property
    def limit(self) -> int:
        return self.state.limit


def decide(
    policy: ConcurrencyPolicy,
    state: ControllerState | int,
    *,
    ok: int,
    failed: int,
    waiting: bool,
    since_change_s: float,
    in_use: int | None = None,
) -> Decision:
    """The next concurrency, from the outcomes of calls made since the last change.
    ``in_use`` is how many of the ``limit`` slots are busy right now (None: unknown); a size
    that is not used yet says nothing about a bigger one."""
    if isinstance(state, int):
        state = ControllerState(state, slow_start=policy.slow_start)
    limit = state.limit
    clamped = min(policy.maximum, max(policy.minimum, limit))
    if clamped != limit:
        return Decision(
            replace(state, limit=clamped), f"bounds are {policy.minimum}..{policy.maximum}", True
        )
    if since_change_s < policy.cooldown_s:
        return Decision(state, "cooldown", False)
    calls = ok + failed
    if calls < policy.min_samples:
        return Decision(
            state, f"{calls} calls since the last change, need {policy.min_samples}", False
        )
    rate = ok / calls
    if rate > policy.target_success:
        if not waiting:
            return Decision(state, f"success {rate:.1%}, no work waiting", False)
        if limit >= policy.maximum:
            return Decision(state, f"success {rate:.1%}, at the maximum {policy.maximum}", False)
        if in_use is not None and in_use < math.ceil(limit * policy.grow_when_used):
            return Decision(state, f"success {rate:.1%}, {in_use} of {limit} busy", False)
        step = limit if state.slow_start else policy.increase
        new = min(policy.maximum, limit + step)
        how = "doubling (slow start)" if state.slow_start else f"+{policy.increase}"
        return Decision(
            replace(state, limit=new, last_good=limit),
            f"success {rate:.1%} > {policy.target_success:.0%} and work waiting: {how}",
            True,
        )
    why = (
        f"success {rate:.1%} <= {policy.target_success:.0%} ({failed} of {calls} calls "
        "failed, timed out or were rate-limited)"
    )
    if state.slow_start and policy.minimum <= state.last_good < limit:
        return Decision(
            ControllerState(state.last_good, False, state.last_good),
            f"{why}: back to {state.last_good}, the last size that held",
            True,
        )
    new = max(policy.minimum, min(limit - 1, math.floor(limit * policy.decrease_ratio)))
    if new >= limit:
        return Decision(
            replace(state, slow_start=False),
            f"success {rate:.1%}, at the minimum {policy.minimum}",
            False,
        )
    return Decision(ControllerState(new, False, state.last_good), why, True)
