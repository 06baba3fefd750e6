"""Per-queue and per-category figures from the counts workers keep (:mod:`proj.taskstats`,
:mod:`proj.guard.callstats`): runs and how they ended, error rate, mean run time, wait from
publish to start as p50 and p99 (estimated from the buckets, as Prometheus's
``histogram_quantile`` does), and cost. Pure: it takes the counts read from Redis."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: Upper bounds of the queue-wait buckets, in seconds (one more bucket holds the rest).
WAIT_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0,
)  # fmt: skip


def wait_bucket(wait_s: float) -> int:
    """Index of the first bucket whose bound holds ``wait_s`` (len(WAIT_BUCKETS): beyond)."""
    for i, bound in enumerate(WAIT_BUCKETS):
        if wait_s <= bound:
            return i
    return len(WAIT_BUCKETS)


@dataclass
class Figures:
    """The runs of one queue, one category, or one queue and category."""

    runs: dict[str, float] = field(default_factory=dict)  # outcome -> runs
    run_s: float = 0.0
    wait_buckets: list[float] = field(default_factory=lambda: [0.0] * (len(WAIT_BUCKETS) + 1))
    wait_s: float = 0.0
    cost_usd: float = 0.0

    @property
    def total(self) -> float:
        return sum(self.runs.values())

    @property
    def error_rate(self) -> float | None:
        """Failed runs over runs that ended (succeeded or failed); retries and deferrals are
        neither."""
        ended = self.runs.get("succeeded", 0.0) + self.runs.get("failed", 0.0)
        return self.runs.get("failed", 0.0) / ended if ended else None

    @property
    def mean_run_s(self) -> float | None:
        return self.run_s / self.total if self.total else None

    def wait_quantile(self, q: float) -> float | None:
        return quantile(self.wait_buckets, q)

    def add(self, other: Figures) -> None:
        for outcome, n in other.runs.items():
            self.runs[outcome] = self.runs.get(outcome, 0.0) + n
        self.run_s += other.run_s
        self.wait_buckets = [
            a + b for a, b in zip(self.wait_buckets, other.wait_buckets, strict=True)
        ]
        self.wait_s += other.wait_s
        self.cost_usd += other.cost_usd


def quantile(counts: list[float], q: float) -> float | None:
    """The ``q`` quantile of values counted per bucket (``counts[i]``: values in bucket ``i``
    of :data:`WAIT_BUCKETS`, the last one beyond the last bound), interpolated linearly inside
    its bucket. None with no values; the last bound for values beyond it."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            if i >= len(WAIT_BUCKETS):
                return WAIT_BUCKETS[-1]
            low = WAIT_BUCKETS[i - 1] if i else 0.0
            return low + (WAIT_BUCKETS[i] - low) * (rank - seen) / n
        seen += n
    return WAIT_BUCKETS[-1]


def by_route(counts: Mapping[tuple[str, ...], float]) -> dict[tuple[str, str], Figures]:
    """(queue, category) -> its figures, from the counts hash (field parts -> value)."""
    out: dict[tuple[str, str], Figures] = {}
    for parts, value in counts.items():
        kind = parts[0]
        if kind not in ("truns", "trun_s", "twait", "twait_s", "qcost") or len(parts) < 3:
            continue
        f = out.setdefault((parts[1], parts[2]), Figures())
        if kind == "truns" and len(parts) == 4:
            f.runs[parts[3]] = f.runs.get(parts[3], 0.0) + value
        elif kind == "trun_s":
            f.run_s += value
        elif kind == "twait" and len(parts) == 4 and parts[3].isdigit():
            i = int(parts[3])
            if i < len(f.wait_buckets):
                f.wait_buckets[i] += value
        elif kind == "twait_s":
            f.wait_s += value
        elif kind == "qcost":
            f.cost_usd += value
    return out


def rollup(routes: Mapping[tuple[str, str], Figures], by: int) -> dict[str, Figures]:
    """Figures per queue (``by=0``) or per category (``by=1``)."""
    out: dict[str, Figures] = {}
    for key, f in routes.items():
        out.setdefault(key[by], Figures()).add(f)
    return out
