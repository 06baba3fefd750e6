"""What a task's exception means: "come back later" (an open breaker, a rate-limit wait, a
429, however deep in its causes), and what it counts as for the task's breaker."""

from __future__ import annotations

from celery.exceptions import Retry

from proj.guard.breaker import Breaker
from proj.provider.errors import RateLimited
from proj.resilience.breaker import Outcome
from proj.resilience.deferral import Deferral
from proj.resilience.ratelimit import parse_retry_after


def breaker_outcome(cb: Breaker, exc: BaseException) -> Outcome:
    """What a task's exception means for its breaker. A retry counts as the failure that
    caused it; a deferral, neither."""
    if isinstance(exc, Retry):
        cause = exc.exc
        return "ignored" if cause is None or isinstance(cause, Deferral) else cb.classify(cause)
    if deferral_of(exc) is not None:
        return "ignored"
    return cb.classify(exc)


def deferral_of(exc: BaseException) -> tuple[float | None, float, bool] | None:
    """(wait, spread, overload) when ``exc`` (or what caused it) says "come back later": an
    open breaker or a rate-limit wait, or a 429 (``overload``; ``wait`` its Retry-After, None
    when it gave none)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, Deferral):
            return e.wait_s, e.spread, False
        if isinstance(e, RateLimited):
            # Spread the comebacks over the next wait too, or they all return at once.
            return e.retry_after_s, 1.0, True
        response = getattr(e, "response", None)
        if getattr(response, "status_code", None) == 429:
            headers = getattr(response, "headers", None) or {}
            return parse_retry_after(headers.get("Retry-After")), 1.0, True
        # What the code chose to raise instead (``raise X from None``) is not a 429.
        e = e.__cause__ if e.__cause__ is not None or e.__suppress_context__ else e.__context__
    return None
