"""proj: parallel AI and HTTP calls on Celery that survive their providers' bad days.

The resilience is public API, for any task or client:

- :func:`breaker` / :class:`Breaker`: a pybreaker-compatible circuit breaker shared by every
  process on every host (failure-rate rule, one probe per open period, ``async def``);
- :class:`BreakerStorage`: shared state for a plain ``pybreaker.CircuitBreaker``;
- :func:`limiter`: a global rate limit across every worker on every host;
- :func:`http` / :func:`ahttp`: httpx clients for a declared dependency whose transport
  applies its breaker, global rate limit, 429 pause and outcome reporting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proj import lazy

if TYPE_CHECKING:
    from proj.app import app
    from proj.errors import ConfigError, ProjError, QueueFull
    from proj.guard.breaker import Breaker
    from proj.guard.http import RequestRefused, ahttp, http
    from proj.guard.registry import breaker, limiter
    from proj.guard.storage import BreakerStorage
    from proj.resilience.breaker import BreakerOpen
    from proj.resilience.ratelimit import RateLimitWait

#: Public name -> the module that defines it. Imported on first use (PEP 562), so a command
#: that needs none of them (``proj status``) does not pay for Celery's import; the first one
#: used loads the app first, which installs proj's handlers in every process that uses proj.
_PUBLIC = {
    "ConfigError": "proj.errors",
    "ProjError": "proj.errors",
    "QueueFull": "proj.errors",
    "Breaker": "proj.guard.breaker",
    "RequestRefused": "proj.guard.http",
    "ahttp": "proj.guard.http",
    "http": "proj.guard.http",
    "breaker": "proj.guard.registry",
    "limiter": "proj.guard.registry",
    "BreakerStorage": "proj.guard.storage",
    "BreakerOpen": "proj.resilience.breaker",
    "RateLimitWait": "proj.resilience.ratelimit",
}


__getattr__ = lazy.install(__name__, _PUBLIC, shadowed={"app": "proj.app"}, first="proj.app")

__all__ = [
    "Breaker",
    "BreakerOpen",
    "BreakerStorage",
    "ConfigError",
    "ProjError",
    "QueueFull",
    "RateLimitWait",
    "RequestRefused",
    "ahttp",
    "app",
    "breaker",
    "http",
    "limiter",
]
__version__ = "0.1.0"
