"""Signed callbacks: how proj signs what it POSTs to a caller's URL, how a receiver checks it,
and which destinations proj may call at all. Pure: no sockets (the sender resolves the host
and passes the addresses in).

Signature header (``Proj-Signature``), as Stripe and Slack do it::

    Proj-Signature: t=1733550000,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

The timestamp is signed with the body, so a captured request cannot be replayed later than
the receiver's tolerance (:func:`verify`, five minutes by default).

Destinations (PROJ_API_CALLBACK_ALLOW, comma-separated): a host name (``hooks.example.com``),
a wildcard for its subdomains (``*.example.com``), an IP address or a network (``10.0.0.0/8``).
A URL's host must be on the list; and every address the host resolves to must be a public one
or lie in a listed address or network. So loopback, link-local (the cloud metadata service at
169.254.169.254) and private addresses are never called unless the operator listed them.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

SIGNATURE_HEADER = "Proj-Signature"
DEFAULT_TOLERANCE_S = 300.0

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Refused(ValueError):
    """A destination proj must not call (the message says why)."""


def sign(secret: str, body: bytes, *, now: float | None = None) -> str:
    """The ``Proj-Signature`` value for ``body`` sent at ``now``."""
    t = int(time.time() if now is None else now)
    return f"t={t},v1={_mac(secret, t, body)}"


def verify(
    secret: str,
    body: bytes,
    header: str,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Whether ``header`` is a valid signature of ``body`` made within ``tolerance_s``."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    return hmac.compare_digest(parts.get("v1", ""), _mac(secret, t, body))


def _mac(secret: str, t: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class AllowList:
    """The destinations callbacks may go to (see the module's docstring)."""

    hosts: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()  # "*.example.com" -> ".example.com"
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, spec: str | Iterable[str]) -> AllowList:
        """From ``"hooks.example.com,*.acme.io,10.0.0.0/8"``; ValueError naming a bad entry."""
        entries = spec.split(",") if isinstance(spec, str) else list(spec)
        hosts, suffixes, networks = set(), [], []
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry.startswith("*."):
                suffixes.append(entry[1:])
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            if not entry.replace("-", "").replace(".", "").isalnum():
                raise ValueError(
                    f"{raw.strip()!r} is not a host name, *.domain, address or network"
                )
            hosts.add(entry)
        return cls(frozenset(hosts), tuple(suffixes), tuple(networks))

    def __bool__(self) -> bool:
        return bool(self.hosts or self.suffixes or self.networks)

    def _listed_address(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip in net for net in self.networks)

    def check_url(self, url: str) -> str:
        """The URL's host if the URL may be called (before resolving it); else :class:`Refused`."""
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as err:
            raise Refused(f"{url!r} is not a URL ({err})") from None
        if parts.scheme not in ("http", "https") or not host:
            raise Refused(f"{url!r} is not an http(s) URL")
        if parts.username or parts.password:
            raise Refused("a callback URL must not carry credentials")
        if not self:
            raise Refused("no callback destinations are allowed (PROJ_API_CALLBACK_ALLOW is empty)")
        try:
            listed = self._listed_address(host)
        except ValueError:
            listed = host in self.hosts or any(host.endswith(s) for s in self.suffixes)
        if not listed:
            raise Refused(f"host {host!r} is not on PROJ_API_CALLBACK_ALLOW")
        return host

    def check_addresses(self, host: str, addresses: Sequence[str]) -> None:
        """Refuse a host that resolves to nothing, or to any address that is neither public nor
        listed (loopback, link-local, private: a name on the list pointed inward)."""
        if not addresses:
            raise Refused(f"host {host!r} does not resolve")
        for a in addresses:
            ip = ipaddress.ip_address(a.split("%", 1)[0])
            inner = _embedded_ipv4(ip)
            public = ip.is_global and (inner is None or inner.is_global)
            if not (public or self._listed_address(str(ip))):
                shown = f"{ip} ({inner})" if inner is not None else str(ip)
                raise Refused(f"host {host!r} resolves to {shown}, which is not a public address")


#: IPv6 prefixes that carry an IPv4 address in their last 32 bits (NAT64, IPv4-compatible).
_CARRIERS = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("::/96"))


def _embedded_ipv4(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address leads to (mapped, 6to4, NAT64, IPv4-compatible)."""
    if ip.version == 4:
        return None
    assert isinstance(ip, ipaddress.IPv6Address)
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in _CARRIERS) and int(ip) > 1:  # not :: or ::1
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None
