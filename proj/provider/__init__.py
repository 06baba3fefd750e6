"""Calls to external dependencies: the AI provider and JSON APIs."""

from proj.provider.client import ChatResult, ProviderClient, Usage
from proj.provider.errors import (
    MalformedResponse,
    PermanentError,
    ProviderConnectionError,
    ProviderError,
    ProviderServerError,
    ProviderTimeout,
    RateLimited,
    RetryableError,
)

__all__ = [
    "ChatResult",
    "MalformedResponse",
    "PermanentError",
    "ProviderClient",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderServerError",
    "ProviderTimeout",
    "RateLimited",
    "RetryableError",
    "Usage",
]
