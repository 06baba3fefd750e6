"""The base class of every task on proj's app: routing flag, guard options, retries with
backoff, deferral, and the adaptive controller's signal."""

from __future__ import annotations

import logging
import random
import time
from typing import Any, NoReturn

from celery import Task, states
from celery.exceptions import Ignore, Reject, Retry
from kombu.utils.json import dumps

from proj import taskstats
from proj.errors import ConfigError, ProjError
from proj.guard import callstats, connections, outcomes, registry
from proj.guard.breaker import STORE_ERRORS, Breaker, ignore_exceptions
from proj.guard.limiter import Limiter
from proj.parking import Parking
from proj.provider.errors import MalformedResponse, RetryableError
from proj.resilience import parking
from proj.resilience.breaker import BreakerOpen, jitter_wait
from proj.resilience.deferral import Deferral
from proj.resilience.ratelimit import RateLimitWait, parse_rate
from proj.settings import get_settings
from proj.signals import SENT_AT_HEADER
from proj.tasks.deferrals import breaker_outcome, deferral_of

logger = logging.getLogger("proj.tasks")

DEFERRALS_HEADER = "proj_deferrals"
RATE_LIMITED_HEADER = "proj_rate_limited"  # 429s in a row, carried across deferrals

#: A task waits at most this long for its global rate-limit slot; beyond it, it is deferred
#: rather than hold a pool process idle.
TASK_MAX_RATE_WAIT_S = 1.0

# Celery's control flow says nothing about a dependency.
ignore_exceptions(Retry, Reject, Ignore)


class ProjTask(Task):
    """A Celery task with proj's defaults and options.

    - ``urgent=True`` routes it to the urgent queue;
    - ``breaker="payments"`` (a name, or a :class:`proj.Breaker`): its exceptions count as
      failures of that breaker (except the breaker's ``exclude`` and Celery's ``Retry``,
      ``Reject`` and ``Ignore``); while the breaker is open the task does not run but is
      deferred to the next probe time;
    - ``global_rate_limit="20/s"`` (Celery's ``rate_limit`` syntax): at most that many starts
      per period across every worker on every host; ``rate_limit_key="payments"`` lets
      several tasks share one budget (with no ``global_rate_limit``: the budget configured
      for that name). A task whose slot is more than a second away is deferred;
    - a transient provider failure (timeout, connection error, 5xx, malformed answer) is
      retried with exponential backoff and jitter, up to PROJ_TASK_MAX_RETRIES times;
    - an open breaker, a rate-limit wait or a 429 (proj's own, or any exception carrying a
      429 ``response``, such as ``httpx.HTTPStatusError`` or the OpenAI SDK's
      ``RateLimitError``) *defers* the task: it is parked in Redis and sent again with the
      same id (chords still count it) after the wait, and that does not use up a retry;
    - ``expose=True`` lets ``proj api`` callers enqueue it (``POST /v1/tasks/<name>``), its
      JSON arguments checked against its signature first; no other task is reachable there.
    """

    urgent: bool = False
    expose: bool = False
    breaker: str | Breaker | None = None
    global_rate_limit: str | None = None
    rate_limit_key: str | None = None
    autoretry_for = (RetryableError, MalformedResponse)
    # From the settings when the task is bound to the app (at its first use, not at import),
    # unless the task sets its own: see on_bound.
    max_retries = 5
    retry_backoff = 1
    retry_backoff_max = 60
    retry_jitter = True

    _proj_guards: tuple[Breaker | None, Limiter | None] | None = None

    @classmethod
    def on_bound(cls, app: Any) -> None:
        """Take the retry defaults from the settings and check the guard options when the
        task is made (Celery reads its autoretry options right after), not at its first run."""
        settings = get_settings()
        defaults = {
            "max_retries": settings.retries.task_max_retries,
            "retry_backoff": max(1, round(settings.batch.retry_backoff_s)),
            "retry_backoff_max": int(
                min(settings.retries.retry_backoff_max_s, settings.broker.max_countdown_s)
            ),
        }
        for name, value in defaults.items():
            if not _set_below(cls, name):
                setattr(cls, name, value)
        if cls.global_rate_limit is not None:
            try:
                parse_rate(cls.global_rate_limit)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"task {cls.name}: global_rate_limit: {err}") from None
        if cls.breaker is not None and not isinstance(cls.breaker, str | Breaker):
            raise ConfigError(
                f"task {cls.name}: breaker must be a name or a proj.Breaker, got {cls.breaker!r}"
            )

    def _guards(self) -> tuple[Breaker | None, Limiter | None]:
        guards = self._proj_guards
        if guards is None:
            cb = registry.breaker(self.breaker) if isinstance(self.breaker, str) else self.breaker
            lim = None
            if self.global_rate_limit is not None or self.rate_limit_key is not None:
                lim = registry.limiter(self.rate_limit_key or self.name, self.global_rate_limit)
            guards = self._proj_guards = (cb, lim)
        return guards

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        if self._finished_already(request):
            raise Ignore()
        outcomes.task_started()
        signal: bool | None = False
        overload = False
        counted_for = callstats.PIPELINE.set(self.name)
        route = taskstats.route_of(request)
        routed, started, ended = taskstats.started(route), time.monotonic(), "failed"
        try:
            result = self._run_guarded(args, kwargs)
            signal, ended = True, "succeeded"
            return result
        except Retry as exc:
            deferred = isinstance(exc.exc, Deferral)
            signal, ended = (None, "deferred") if deferred else (False, "retried")
            raise
        except BaseException as exc:
            later = deferral_of(exc)
            if later is None:
                raise
            ended = "deferred"
            wait, spread, overload = later
            signal = False if overload else None  # a 429 is the provider saying "too much"
            if overload:
                self._check_429_budget(exc)
                if not wait and outcomes.calls_reported == 0:
                    # Over capacity with no Retry-After, from the task's own client: hold this
                    # process a moment, or it turns straight to the next task and another 429
                    # (the guarded client does the same for its calls).
                    time.sleep(get_settings().limits.pause_s)
            self.defer(1.0 if wait is None else wait, spread, reason=exc)
        finally:
            callstats.PIPELINE.reset(counted_for)
            outcomes.task_finished(signal, overload)
            run_s = time.monotonic() - started
            taskstats.ended(route, routed, ended, self.queue_wait_s(request), run_s)

    def _finished_already(self, request: Any) -> bool:
        """A redelivered copy of a task whose run already finished (its worker died before
        the acknowledgement, or a parked copy was published twice) is skipped, not run again.
        Only redelivered and deferred messages are checked: one read of the result backend
        each."""
        redelivered = (request.delivery_info or {}).get("redelivered")
        if not (redelivered or request.get(DEFERRALS_HEADER)) or self.ignore_result:
            return False
        try:
            state = self.backend.get_state(request.id)
        except Exception:  # no backend answer: run it (at least once beats at most once)
            return False
        if state not in states.READY_STATES:
            return False
        logger.warning(
            "%s[%s]: a redelivered copy of a run that already ended (%s): skipped",
            self.name,
            request.id,
            state,
        )
        return True

    def _run_guarded(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        guarded = self.breaker or self.global_rate_limit or self.rate_limit_key
        cb, lim = self._guards() if guarded else (None, None)
        if cb is None:
            if lim is not None:
                lim.acquire(max_wait_s=TASK_MAX_RATE_WAIT_S)  # RateLimitWait: deferred
            return super().__call__(*args, **kwargs)
        # The breaker first: while it is open, a task must not spend the rate budget.
        permit = cb.admit()  # BreakerOpen: deferred
        try:
            if lim is not None:
                lim.acquire(max_wait_s=TASK_MAX_RATE_WAIT_S)
            result = super().__call__(*args, **kwargs)
        except BaseException as exc:
            cb.record(permit, breaker_outcome(cb, exc))
            raise
        cb.record(permit, "success")
        return result

    def _check_429_budget(self, exc: BaseException) -> None:
        """A provider that answers 429 to every attempt (an exhausted quota) would defer the
        task forever: past PROJ_TASK_MAX_RATE_LIMITED deferrals the 429 fails it."""
        request = self.request
        count = int(request.get(RATE_LIMITED_HEADER) or 0) + 1
        limit = get_settings().retries.task_max_rate_limited
        if count > limit:
            raise TaskRateLimited(
                f"{self.name}: answered 429 {count} times in a row "
                f"(PROJ_TASK_MAX_RATE_LIMITED={limit}): {exc}"
            ) from exc
        request.headers = {**(request.headers or {}), RATE_LIMITED_HEADER: count}

    def defer(self, wait_s: float, spread: float = 0.1, *, reason: BaseException) -> NoReturn:
        """Run this task again in about ``wait_s`` (with jitter), keeping its retry count.

        The message is parked in Redis (:mod:`proj.parking`), in the lot of what it waits
        for, and this run ends (its message is acknowledged): nothing waits in the worker.
        The workers' movers publish it again once it is due, gated by its breaker."""
        request = self.request
        if request.called_directly or request.is_eager:
            raise reason
        countdown = jitter_wait(
            wait_s, random.random(), get_settings().broker.max_countdown_s, spread
        )
        deferrals = int(request.get(DEFERRALS_HEADER) or 0) + 1
        headers = {**(request.headers or {}), DEFERRALS_HEADER: deferrals}
        sig = self.signature_from_request(request, headers=headers)
        sig.options.pop("redelivered", None)  # this copy is a new delivery
        lot = self._lot(reason)
        try:
            Parking(connections.sync_client()).park(lot, time.time() + countdown, dumps(dict(sig)))
            where = lot
        except STORE_ERRORS as err:
            # No Redis for parking: the broker holds it instead (an ETA message, which waits
            # in a worker), rather than lose it.
            sig.apply_async(countdown=countdown)
            where = f"an ETA message ({type(err).__name__} parking it)"
        logger.info(
            "%s[%s] deferred %.1fs in %s (%d): %s",
            self.name,
            request.id,
            countdown,
            where,
            deferrals,
            reason,
        )
        why = reason if isinstance(reason, Deferral) else Deferral(str(reason))
        raise Retry(f"deferred {countdown:.1f}s: {reason}", why, when=countdown, sig=sig)

    def _lot(self, reason: BaseException) -> str:
        """The parking lot of a deferral: the breaker or rate limit it waits for, else the
        task's breaker, else the dependency that answered 429, else the task itself."""
        e: BaseException | None = reason
        seen: set[int] = set()
        while e is not None and id(e) not in seen:
            seen.add(id(e))
            if isinstance(e, BreakerOpen):
                return parking.lot(parking.BREAKER, e.name)
            if isinstance(e, RateLimitWait):
                return parking.lot(parking.LIMIT, e.name)
            e = e.__cause__ or e.__context__
        cb = self.breaker.name if isinstance(self.breaker, Breaker) else self.breaker
        if cb:
            return parking.lot(parking.BREAKER, cb)
        dependency = getattr(reason, "dependency", "")
        if dependency and dependency in get_settings().dependency_breakers():
            return parking.lot(parking.BREAKER, dependency)
        return parking.lot(parking.TASK, self.name)

    def queue_wait_s(self, request: Any = None) -> float | None:
        """Seconds this message waited between publish and the start of this run."""
        if request is None:
            request = self.request
        sent_at = request.get(SENT_AT_HEADER)
        if sent_at is None:
            headers = request.get("headers") or {}
            sent_at = headers.get(SENT_AT_HEADER)
        if sent_at is None:
            return None
        return max(0.0, time.time() - float(sent_at))


class TaskRateLimited(ProjError):
    """A task that met 429s PROJ_TASK_MAX_RATE_LIMITED times in a row."""


def _set_below(cls: type, name: str) -> bool:
    """Whether a class below :class:`ProjTask` (the task, or a base of the user's) sets
    ``name`` itself."""
    return any(
        name in k.__dict__
        for k in cls.__mro__
        if k is not ProjTask and k is not Task and issubclass(k, ProjTask)
    )
