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

Overload (429s) is the provider saying where its capacity is, so the rule remembers it, as
TCP CUBIC remembers the window where it last lost packets:

- a size just grown to that meets ``overload_min`` 429s goes straight back to the size that
  held, without waiting for the cooldown or ``min_samples``: the first 429s of a burst are
  enough, and the rest of the burst never happens;
- that size becomes the *ceiling*: growth halves the distance to it each step (BIC-TCP's
  binary search) up to one below it, and holds there for ``ceiling_hold_s`` before it probes
  the ceiling again (a probe that holds clears it: the capacity grew). Without the ceiling,
  additive increase probes above capacity every few seconds, and every probe is a burst of
  429s;
- a size that held before and now sees only a few failures, all 429s, is a little over the
  capacity: one less. Other failures (timeouts, 5xx), or many 429s (the capacity dropped),
  shrink it multiplicatively, as before.
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
    overload_min: int = Field(
        2, ge=1, description="429s that send a size just grown to straight back."
    )
    ceiling_hold_s: float = Field(
        10.0, ge=0, description="Time held just below the ceiling before probing it again."
    )
    overload_step_success: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Failures that are all 429s, at least this success: -1, not x decrease_ratio.",
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
    ceiling: int = 0  # the size where overload was last seen (0: none known)

    @property
    def probing(self) -> bool:
        """The last change was an increase that has not held yet."""
        return self.limit > self.last_good > 0


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
    overloaded: int = 0,
) -> Decision:
    """The next concurrency, from the outcomes of calls made since the last change
    (``overloaded``: how many of the ``failed`` were 429s). ``in_use`` is how many of the
    ``limit`` slots are busy right now (None: unknown); a size that is not used yet says
    nothing about a bigger one."""
    if isinstance(state, int):
        state = ControllerState(state, slow_start=policy.slow_start)
    limit = state.limit
    clamped = min(policy.maximum, max(policy.minimum, limit))
    if clamped != limit:
        return Decision(
            replace(state, limit=clamped), f"bounds are {policy.minimum}..{policy.maximum}", True
        )
    if state.probing and overloaded >= policy.overload_min:
        back = max(policy.minimum, state.last_good)
        return Decision(
            ControllerState(back, False, back, ceiling=limit),
            f"{overloaded} calls overloaded (429) at {limit}: back to {back}, the last size "
            "that held",
            True,
        )
    if since_change_s < policy.cooldown_s:
        return Decision(state, "cooldown", False)
    calls = ok + failed
    # In slow start a small pool is judged on one call per slot (at least 5): waiting for
    # min_samples at 5 slots of 0.5 s calls costs seconds, and a wrong step costs one revert.
    need = min(policy.min_samples, max(5, limit)) if state.slow_start else policy.min_samples
    if calls < need:
        return Decision(state, f"{calls} calls since the last change, need {need}", False)
    rate = ok / calls
    if rate > policy.target_success:
        return _grow(policy, state, calls, rate, waiting, since_change_s, in_use, overloaded)
    why = (
        f"success {rate:.1%} <= {policy.target_success:.0%} ({failed} of {calls} calls "
        "failed, timed out or were rate-limited)"
    )
    ceiling = limit if overloaded else state.ceiling
    if state.probing:
        back = max(policy.minimum, state.last_good)
        return Decision(
            ControllerState(back, False, back, ceiling=ceiling),
            f"{why}: back to {back}, the last size that held",
            True,
        )
    if failed == overloaded and rate >= policy.overload_step_success:
        # Only 429s, and few: a little over the provider's capacity. Step under it.
        new = max(policy.minimum, limit - 1)
        if new < limit:
            return Decision(
                ControllerState(new, False, new, ceiling=limit), f"{why}, all 429s: -1", True
            )
    new = max(policy.minimum, min(limit - 1, math.floor(limit * policy.decrease_ratio)))
    if new >= limit:
        return Decision(
            replace(state, slow_start=False, ceiling=ceiling),
            f"success {rate:.1%}, at the minimum {policy.minimum}",
            False,
        )
    return Decision(ControllerState(new, False, state.last_good, ceiling=ceiling), why, True)


def _grow(
    policy: ConcurrencyPolicy,
    state: ControllerState,
    calls: int,
    rate: float,
    waiting: bool,
    since_change_s: float,
    in_use: int | None,
    overloaded: int,
) -> Decision:
    """Success above the target: grow if there is work for a bigger size, up to the ceiling."""
    limit = state.limit
    held = replace(state, last_good=limit)  # this size held
    if state.ceiling and limit >= state.ceiling:
        held = replace(held, ceiling=0)  # a probe of the ceiling held: the capacity grew
    if overloaded >= policy.overload_min and limit > policy.minimum:
        # Mostly fine, but over the provider's capacity: step under it and remember where.
        return Decision(
            ControllerState(limit - 1, False, limit - 1, ceiling=limit),
            f"success {rate:.1%}, but {overloaded} calls overloaded (429): -1",
            True,
        )
    # A size that is not in use yet has not held: it is still on trial.
    if not waiting:
        return Decision(state, f"success {rate:.1%}, no work waiting", False)
    if in_use is not None and in_use < math.ceil(limit * policy.grow_when_used):
        return Decision(state, f"success {rate:.1%}, {in_use} of {limit} busy", False)
    if limit >= policy.maximum:
        return Decision(held, f"success {rate:.1%}, at the maximum {policy.maximum}", False)
    ok_calls = round(rate * calls)
    step = limit if state.slow_start else policy.increase
    new = min(policy.maximum, limit + step)
    how = "doubling (slow start)" if state.slow_start else f"+{policy.increase}"
    ceiling = held.ceiling
    if ceiling and limit < ceiling - 1 and not state.slow_start:
        # Far below the ceiling: halve the distance each step (BIC-TCP's binary search), so
        # a size that fell a long way climbs back in a few steps, not one slot at a time.
        new = max(new, min(policy.maximum, limit + (ceiling - limit) // 2))
        how = f"halfway to the ceiling of {ceiling}"
    if ceiling and new >= ceiling:
        if limit < ceiling - 1:
            new, how = ceiling - 1, f"up to {ceiling - 1}, below the ceiling of {ceiling}"
        elif since_change_s < policy.ceiling_hold_s:
            return Decision(
                held,
                f"success {rate:.1%}, holding below the ceiling of {ceiling} "
                f"for {policy.ceiling_hold_s:g}s",
                False,
            )
        else:
            new, how = ceiling, f"probing the ceiling of {ceiling}"
    return Decision(
        ControllerState(new, held.slow_start, limit, ceiling),
        f"success {rate:.1%} of {ok_calls} calls > {policy.target_success:.0%}"
        f"{'' if in_use is None else f', {in_use} of {limit} busy'} and work waiting: {how}",
        True,
    )
