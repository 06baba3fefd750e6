"""What the simulated provider remembers: its configuration, counters, arrivals and the
concurrency each route sees."""

from __future__ import annotations

import collections
import random
import time
from typing import Any

from proj.sim.config import OUTCOMES, ROUTES, Decision, SimConfig, decide

_TIMELINE_KEEP_S = 900


class SimState:
    """Configuration and counters, shared by all requests of one server process."""

    def __init__(
        self, config: SimConfig | None = None, api_key: str | None = None, *, admin_key: str
    ) -> None:
        if not admin_key:
            raise ValueError("the simulator's admin key must not be empty")
        self.api_key = api_key
        self.admin_key = admin_key
        self.apply(config or SimConfig())
        # A gauge, not a counter: a reset must not forget the requests in flight, or the
        # concurrent capacity is off by what was in flight when it happened.
        self.in_flight = dict.fromkeys(ROUTES, 0)
        self.reset_counters()

    def apply(self, config: SimConfig) -> None:
        self.config = config
        self.applied_at = time.monotonic()
        self.rng = random.Random(config.seed)
        self.forced_429 = {r: config.route(r).rate_limit_next for r in ROUTES}

    def reset_counters(self) -> None:
        self.counts = {r: dict.fromkeys(OUTCOMES, 0) for r in ROUTES}
        self.max_in_flight = dict(self.in_flight)
        self.arrivals: dict[str, collections.deque[float]] = {
            r: collections.deque() for r in ROUTES
        }
        self.timeline: dict[str, collections.Counter[int]] = {
            r: collections.Counter() for r in ROUTES
        }
        self.unauthorized = 0
        # Requests refused with a 400 before the route's simulation: not outcomes.
        self.bad_request = dict.fromkeys(ROUTES, 0)
        self.arrival_log: dict[str, collections.deque[float]] = {
            r: collections.deque(maxlen=200_000) for r in ROUTES
        }
        # What each request asked for (a domain, an email), in arrival order.
        self.subjects: dict[str, collections.deque[str]] = {
            r: collections.deque(maxlen=10_000) for r in ROUTES
        }

    def admit(self, route: str, key: str) -> Decision:
        self.arrival_log[route].append(time.time())
        self.subjects[route].append(key)
        if self.forced_429[route] > 0:
            self.forced_429[route] -= 1
            self.counts[route]["rate_limited"] += 1
            return Decision("rate_limited", 429, 0.0, self.config.route(route).retry_after_s)
        now = time.monotonic()
        arrivals = self.arrivals[route]  # admitted requests in the last second
        while arrivals and arrivals[0] <= now - 1.0:
            arrivals.popleft()
        second = int(time.time())
        timeline = self.timeline[route]
        timeline[second] += 1
        if len(timeline) > _TIMELINE_KEEP_S:
            del timeline[min(timeline)]
        decision = decide(
            self.config.route(route),
            key=key,
            elapsed_s=now - self.applied_at,
            in_flight=self.in_flight[route],
            arrivals_last_s=len(arrivals) + 1,
            rng=self.rng,
        )
        if decision.outcome != "rate_limited":
            arrivals.append(now)
        self.counts[route][decision.outcome] += 1
        return decision

    def stats(self, timeline: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "counts": self.counts,
            "totals": {r: sum(c.values()) for r, c in self.counts.items()},
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "unauthorized": self.unauthorized,
            "bad_request": self.bad_request,
        }
        if timeline:
            out["timeline"] = {
                r: {str(k): v for k, v in sorted(t.items())} for r, t in self.timeline.items()
            }
            out["subjects"] = {r: list(s) for r, s in self.subjects.items()}
        return out
