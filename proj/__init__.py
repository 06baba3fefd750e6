"""proj: parallel AI and HTTP calls on Celery that survive their providers' bad days.

The resilience is public API, for any task or client:

- :func:`breaker` / :class:`Breaker`: a pybreaker-compatible circuit breaker shared by every
  process on every host (failure-rate rule, one probe per open period, ``async def``);
- :class:`BreakerStorage`: shared state for a plain ``pybreaker.CircuitBreaker``;
- :func:`limiter`: a global rate limit across every worker on every host;
- :func:`http` / :func:`ahttp`: httpx clients for a declared dependency whose transport
  applies its breaker, global rate limit, 429 pause and outcome reporting.
"""

from proj.app import app
from proj.errors import ConfigError, ProjError
from proj.guard.breaker import Breaker
from proj.guard.http import RequestRefused, ahttp, http
from proj.guard.registry import breaker, limiter
from proj.guard.storage import BreakerStorage
from proj.resilience.breaker import BreakerOpen
from proj.resilience.ratelimit import RateLimitWait

__all__ = [
    "Breaker",
    "BreakerOpen",
    "BreakerStorage",
    "ConfigError",
    "ProjError",
    "RateLimitWait",
    "RequestRefused",
    "ahttp",
    "app",
    "breaker",
    "http",
    "limiter",
]
__version__ = "0.1.0"
