"""The HTTP transport every dependency of a process shares.

Calls go through the httpx API on the ``httpx-aiohttp`` transport: httpx's own pool slows
down badly with hundreds of requests in flight (encode/httpx#3215), aiohttp's does not.
"""

from __future__ import annotations

import functools
import ssl

import httpx
from httpx_aiohttp import AiohttpTransport


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """httpx's default TLS context (certifi's CAs, or SSL_CERT_FILE / SSL_CERT_DIR), made once
    per process. Loading the CA bundle costs ~25 ms of CPU: made in a worker's main process
    before it forks (:func:`proj.signals.prepare_for_fork`), every pool process inherits it
    instead of paying that at start-up, all at once when the pool grows."""
    return httpx.create_ssl_context()


def make_transport(*, max_connections: int) -> AiohttpTransport:
    """The per-process transport every dependency shares (one aiohttp connection pool)."""
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    return AiohttpTransport(verify=shared_ssl_context(), limits=limits)


def make_http_client(*, max_connections: int, connect_timeout_s: float) -> httpx.AsyncClient:
    """An unguarded client on such a transport (benchmarks: the raw HTTP floor)."""
    return httpx.AsyncClient(
        transport=make_transport(max_connections=max_connections),
        timeout=httpx.Timeout(None, connect=connect_timeout_s),
        follow_redirects=False,
    )
