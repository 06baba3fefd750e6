"""The base class of every proj task: routing flag, retries with backoff, and deferral."""

from __future__ import annotations

import logging
import random
import time
from typing import Any, NoReturn

from celery import Task
from celery.exceptions import Retry

from proj.provider.errors import RateLimited, RetryableError
from proj.resilience.breaker import jitter_wait
from proj.resilience.deferral import Deferral
from proj.settings import get_settings
from proj.signals import SENT_AT_HEADER

logger = logging.getLogger("proj.tasks")

DEFERRALS_HEADER = "proj_deferrals"

_settings = get_settings()


class ProjTask(Task):
    """A Celery task with proj's defaults.

    - ``urgent = True`` on a task (``@app.task(urgent=True)``) routes it to the urgent queue;
    - a transient provider failure (timeout, connection error, 5xx, malformed answer) is
      retried with exponential backoff and jitter, up to PROJ_TASK_MAX_RETRIES times;
    - an open circuit breaker, a rate limit with no slot soon, or a 429 *defers* the task:
      it is sent again with the same id (chords still count it) after the wait, and that
      does not use up a retry.
    """

    urgent: bool = False
    autoretry_for = (RetryableError,)
    max_retries = _settings.task_max_retries
    retry_backoff = 1
    retry_backoff_max = int(min(_settings.retry_backoff_max_s, _settings.max_countdown_s))
    retry_jitter = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Deferral as exc:  # an open breaker, a rate limit with no slot soon enough
            self.defer(exc.wait_s, exc, spread=exc.spread)
        except RateLimited as exc:
            # Spread the comebacks over the next wait too, or they all return at once.
            wait = exc.retry_after_s if exc.retry_after_s is not None else 1.0
            self.defer(wait, exc, spread=1.0)

    def defer(self, wait_s: float, reason: BaseException, spread: float = 0.1) -> NoReturn:
        """Run this task again in about ``wait_s`` (with jitter), keeping its retry count."""
        request = self.request
        if request.called_directly or request.is_eager:
            raise reason
        countdown = jitter_wait(wait_s, random.random(), get_settings().max_countdown_s, spread)
        deferrals = int(request.get(DEFERRALS_HEADER) or 0) + 1
        headers = {**(request.headers or {}), DEFERRALS_HEADER: deferrals}
        sig = self.signature_from_request(request, countdown=countdown, headers=headers)
        sig.apply_async()
        logger.info(
            "%s[%s] deferred %.1fs (%d): %s", self.name, request.id, countdown, deferrals, reason
        )
        raise Retry(f"deferred {countdown:.1f}s: {reason}", reason, when=countdown, sig=sig)

    def queue_wait_s(self) -> float | None:
        """Seconds this message waited between publish and the start of this run."""
        sent_at = self.request.get(SENT_AT_HEADER)
        if sent_at is None:
            headers = self.request.get("headers") or {}
            sent_at = headers.get(SENT_AT_HEADER)
        if sent_at is None:
            return None
        return max(0.0, time.time() - float(sent_at))
