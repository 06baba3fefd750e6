"""How long to wait before the next try: exponential backoff, capped, with optional jitter.
Pure: no clock, no sleep, no randomness of its own (the caller passes its random draw).

Celery tasks use Celery's own ``retry_backoff`` (:class:`proj.tasks.base.ProjTask`); this
policy is for the retries proj runs in-process: a batch item's retry, a runner's restart, a
watcher's reconnect, a database write (:mod:`proj.store`).

| attempt | wait before jitter |
|---|---|
| 1 (or less) | ``base_s`` |
| n | ``base_s`` x ``factor`` ^ (n - 1), at most ``max_s`` |

A ``max_s`` below ``base_s`` makes every wait ``max_s``.

Jitter spreads the wait over its top fraction: ``jitter`` 0.5 waits 0.5..1 of it (``rnd`` 0..1),
0 waits exactly it.
"""

from __future__ import annotations

from dataclasses import dataclass

from proj.errors import ConfigError


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``base_s`` doubling (``factor``) per attempt up to ``max_s``,
    of which ``jitter`` (a fraction, 0..1) is random."""

    base_s: float
    max_s: float
    jitter: float = 0.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if not self.base_s > 0:
            raise ConfigError(f"Backoff base_s must be > 0 seconds, got {self.base_s}")
        if not self.max_s > 0:
            raise ConfigError(f"Backoff max_s must be > 0 seconds, got {self.max_s}")
        if not 0 <= self.jitter <= 1:
            raise ConfigError(f"Backoff jitter must be in [0, 1], got {self.jitter}")
        if not self.factor >= 1:
            raise ConfigError(f"Backoff factor must be >= 1, got {self.factor}")

    def delay(self, attempt: int, rnd: float = 1.0) -> float:
        """Seconds to wait before try ``attempt + 1``, after ``attempt`` failures (1 = the
        first). ``rnd``: a uniform draw in [0, 1]; 1 gives the longest wait of the range."""
        if not 0 <= rnd <= 1:
            raise ValueError(f"rnd must be in [0, 1], got {rnd}")
        try:
            raw = min(self.max_s, self.base_s * self.factor ** max(0, attempt - 1))
        except OverflowError:  # thousands of attempts: long past the cap
            raw = self.max_s
        return raw * (1 - self.jitter + self.jitter * rnd)
