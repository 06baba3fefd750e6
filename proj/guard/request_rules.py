"""What may leave through a dependency's client, and what an answer means. Pure."""

from __future__ import annotations

from urllib.parse import unquote

import httpx

from proj.dependencies import Dependency
from proj.errors import ProjError
from proj.resilience.breaker import Outcome


class RequestRefused(ProjError):
    """A request that would leave its dependency: refused before anything was sent."""


def _dot_segment(raw_segment: str) -> bool:
    r"""A segment some server would read as ``.`` or ``..``: percent-encoded, with a
    ``;param`` (Tomcat), or hiding more segments behind an encoded ``/`` or a ``\`` (IIS)."""
    decoded = unquote(unquote(raw_segment))  # twice: %252e
    parts = decoded.replace("\\", "/").split("/")
    return any(p.split(";", 1)[0] in (".", "..") for p in parts)


def refusal(dep: Dependency, url: httpx.URL) -> str | None:
    """Why a request to ``url`` may not go out through ``dep``, or None. Pure."""
    if url.scheme not in ("http", "https"):
        return f"scheme {url.scheme!r} is not http(s)"
    raw = url.raw_path.decode("ascii", "replace").split("?", 1)[0]
    segments = raw.split("/")
    if any(_dot_segment(seg) for seg in segments[1:]):
        return "the path has dot segments"
    if dep.any_host:
        return None
    if dep.base_url is None:
        return "the dependency has no base URL"
    base = httpx.URL(dep.base_url)
    if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port):
        return "it goes to another host than the dependency's"
    # Compared as sent (raw) and as a server that decodes %2F would route it.
    prefix = base.raw_path.decode("ascii", "replace").split("?", 1)[0].rstrip("/")
    for path in (raw, unquote(raw)):
        if path != prefix and not path.startswith(prefix + "/"):
            return "its path is outside the dependency's base URL"
    return None


def classify_status(status: int) -> tuple[Outcome, bool | None]:
    """(breaker outcome, adaptive signal) of an answer: ``None`` is no signal. Pure."""
    if status == 429:
        return "ignored", False
    if status >= 500 or status == 408:
        return "failure", False
    if status >= 400:
        return "ignored", None
    return "success", True
