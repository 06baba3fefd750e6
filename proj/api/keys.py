"""API keys: who may call ``proj api``, with which scopes, at what rate.

Keys live in a TOML file (PROJ_API_KEYS_FILE, default ``config/api_keys.toml``) as SHA-256
hashes, never in clear::

    [keys.crm]
    sha256 = "9f86d081..."          # proj api key crm  (prints the key once)
    scopes = ["batches:write", "batches:read"]
    rate_limit = "20/s"             # Celery's syntax; across every proj api process

A key is a random 32-byte token, so a plain SHA-256 is enough to keep it (no password hash:
nothing to guess). A request names its key as ``Authorization: Bearer <key>``. ``proj api``
follows the file: keys added or removed there count within a second, without a restart.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proj.errors import ConfigError
from proj.resilience.ratelimit import RateLimit, parse_rate

logger = logging.getLogger("proj.api")

SCOPES = ("batches:write", "batches:read", "tasks:write", "tasks:read")
KEY_PREFIX = "pk_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh API key (shown once; only its hash is kept)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ApiKey:
    name: str
    sha256: str
    scopes: frozenset[str]
    rate_limit: RateLimit | None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "*" in self.scopes


class KeyRing:
    """The configured keys, found by the hash of what a request presents. A ring loaded from a
    file follows it: a key added or removed there counts within RELOAD_S, with no restart (a
    file that no longer parses, or is gone, keeps the keys that were in force, and says so
    once)."""

    RELOAD_S = 1.0

    def __init__(self, keys: Iterable[ApiKey], path: Path | None = None) -> None:
        self._by_hash = {k.sha256: k for k in keys}
        self.path = path
        self._stamp = _stamp(path)
        self._checked = time.monotonic()
        self._broken: str | None = None

    def __len__(self) -> int:
        return len(self._by_hash)

    def find(self, presented: str) -> ApiKey | None:
        self._follow()
        return self._by_hash.get(hash_key(presented))

    def _follow(self) -> None:
        if self.path is None or time.monotonic() - self._checked < self.RELOAD_S:
            return
        self._checked = time.monotonic()
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._by_hash = {k.sha256: k for k in _read(self.path, missing_ok=False)}
        except ConfigError as err:
            if str(err) != self._broken:
                logger.error("API keys not reloaded, the previous ones stay: %s", err)
            self._broken = str(err)
            return
        self._broken = None
        logger.info("API keys reloaded from %s: %d keys", self.path, len(self._by_hash))

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        """The keys in ``path`` (none while it does not exist); ConfigError naming the file and
        the field of a bad entry."""
        return cls(_read(path), path)


def _stamp(path: Path | None) -> tuple[int, ...] | None:
    try:
        st = path.stat() if path is not None else None
    except OSError:
        return None
    return None if st is None else (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def _read(path: Path, *, missing_ok: bool = True) -> list[ApiKey]:
    if not path.exists():
        if missing_ok:
            return []
        raise ConfigError(f"{path}: the file is gone")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # TOMLDecodeError and UnicodeDecodeError are both
        raise ConfigError(f"{path}: {err}") from None
    return parse_keys(data.get("keys", {}), where=str(path))


def parse_keys(table: Mapping[str, Any], *, where: str) -> list[ApiKey]:
    out = []
    for name, entry in table.items():
        at = f"{where}: keys.{name}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{at}: must be a table, got {entry!r}")
        digest = str(entry.get("sha256", "")).lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ConfigError(f"{at}.sha256: must be 64 hex digits, got {entry.get('sha256')!r}")
        scopes = entry.get("scopes", [])
        bad = [s for s in scopes if s not in SCOPES and s != "*"] if isinstance(scopes, list) else 0
        if not isinstance(scopes, list) or bad:
            raise ConfigError(f"{at}.scopes: {bad or scopes!r} not in {', '.join(SCOPES)} or '*'")
        rate = entry.get("rate_limit")
        try:
            limit = parse_rate(rate) if rate else None
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{at}.rate_limit: {err}") from None
        if limit is not None and not isinstance(rate, Mapping):
            # "20/s" lets a client send its 20 at once; {rate = "20/s", burst = 5} to narrow it.
            limit = RateLimit(limit.rate, limit.per_s, max(1, int(limit.rate)))
        out.append(ApiKey(str(name), digest, frozenset(scopes), limit))
    return out


def toml_entry(name: str, key: str, scopes: Iterable[str], rate_limit: str | None) -> str:
    """The TOML lines that let ``key`` in (its hash, never the key)."""
    lines = [f"[keys.{name}]", f'sha256 = "{hash_key(key)}"']
    lines.append("scopes = [" + ", ".join(f'"{s}"' for s in scopes) + "]")
    if rate_limit:
        lines.append(f'rate_limit = "{rate_limit}"')
    return "\n".join(lines) + "\n"
