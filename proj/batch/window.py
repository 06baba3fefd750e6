"""A runner's window: how many of its items it keeps in flight, adapted from call outcomes.

The worker pool's AIMD rule (:func:`proj.resilience.concurrency.decide`) within
1..PROJ_BATCH_CONCURRENCY, starting at the top, without slow start.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from proj.resilience.concurrency import ConcurrencyPolicy, ControllerState, decide

logger = logging.getLogger("proj.batch")


@dataclass
class Window:
    """The runner's in-flight limit, adapted from call outcomes."""

    policy: ConcurrencyPolicy
    state: ControllerState
    ok: int = 0
    failed: int = 0
    changed_at: float = field(default_factory=time.monotonic)

    @classmethod
    def for_limit(cls, limit: int) -> Window:
        policy = ConcurrencyPolicy(
            start=limit,
            minimum=1,
            maximum=limit,
            cooldown_s=0.5,
            min_samples=max(20, limit // 5),
            slow_start=False,
            increase=max(1, limit // 20),
        )
        return cls(policy, ControllerState(limit, slow_start=False))

    @property
    def limit(self) -> int:
        return self.state.limit

    def observe(self, ok: bool) -> None:
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        d = decide(
            self.policy,
            self.state,
            ok=self.ok,
            failed=self.failed,
            waiting=True,
            since_change_s=time.monotonic() - self.changed_at,
        )
        if d.changed:
            logger.info("batch window %d -> %d: %s", self.state.limit, d.limit, d.reason)
            self.state, self.ok, self.failed = d.state, 0, 0
            self.changed_at = time.monotonic()
