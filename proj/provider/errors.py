"""Typed provider errors, and the pure mapping from an HTTP outcome to one of them.

The resilience layer acts on the class: :class:`RetryableError` is worth retrying and counts
against a breaker, :class:`RateLimited` is the rate limiter's signal, :class:`PermanentError`
is our own fault and retrying will not help.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from proj.errors import ProjError
from proj.resilience.ratelimit import parse_retry_after


class ProviderError(ProjError):
    """A call to an external dependency failed. ``kind`` is a stable label for reports."""

    kind = "provider"
    retryable = False

    def __init__(self, message: str, *, dependency: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.dependency = dependency
        self.status = status

    def record(self) -> dict[str, object]:
        """A JSON-safe description for fan-in results and dead letters."""
        return {"kind": self.kind, "message": str(self), "status": self.status}


class RetryableError(ProviderError):
    """Transient: a timeout, a broken connection or a 5xx. Counts as a provider failure."""

    kind = "retryable"
    retryable = True


class ProviderTimeout(RetryableError):
    kind = "timeout"


class ProviderConnectionError(RetryableError):
    kind = "connection"


class ProviderServerError(RetryableError):
    kind = "server_error"


class RateLimited(ProviderError):
    """429: slow down. ``retry_after_s`` is how long the provider asked us to wait."""

    kind = "rate_limited"
    retryable = True

    def __init__(
        self, message: str, *, retry_after_s: float | None, dependency: str = "", status: int = 429
    ) -> None:
        super().__init__(message, dependency=dependency, status=status)
        self.retry_after_s = retry_after_s

    def record(self) -> dict[str, object]:
        return {**super().record(), "retry_after_s": self.retry_after_s}


class PermanentError(ProviderError):
    """Another 4xx: our request is wrong (or not allowed); retrying does not help."""

    kind = "permanent"


class MalformedResponse(ProviderError):
    """The provider answered 2xx with a body we cannot use. Counts as a provider failure."""

    kind = "malformed"
    retryable = True


def error_for_status(
    status: int,
    headers: Mapping[str, str],
    *,
    dependency: str,
    url: str,
    body: str = "",
    now: datetime | None = None,
) -> ProviderError | None:
    """The error an HTTP status means, or ``None`` for success (2xx)."""
    if 200 <= status < 300:
        return None
    snippet = body[:200].replace("\n", " ")
    where = f"{dependency}: {status} from {url}"
    if status == 429:
        retry_after = parse_retry_after(headers.get("retry-after"), now)
        return RateLimited(
            f"{where} (retry after {retry_after}s)",
            retry_after_s=retry_after,
            dependency=dependency,
        )
    if status >= 500 or status in (408,):
        return ProviderServerError(f"{where}: {snippet}", dependency=dependency, status=status)
    return PermanentError(f"{where}: {snippet}", dependency=dependency, status=status)
