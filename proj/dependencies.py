"""Declared dependencies: every external API proj or its users call, declared once.

A declaration names a dependency and says where it is and how it is guarded: its base URL
(or the environment variable that holds it), the *name* of the environment variable that
holds its key (never the key), a timeout, a global rate, breaker overrides and a per-process
in-flight cap. ``config/dependencies.toml`` declares proj's own (``ai``, ``company``,
``person``, ``source``, ``webhook``); a deployment adds or changes entries with its own TOML
file (``PROJ_DEPENDENCIES_FILE``) and field by field from the environment
(``PROJ_DEPENDENCIES='{"payments": {"rate": "20/s"}}'``). Adding a dependency is one entry.

Pure: loading takes the texts and an environment mapping; :mod:`proj.settings` feeds them.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import pydantic
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from proj.resilience.ratelimit import RateLimit, parse_rate

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")


class Declaration(BaseModel):
    """One dependency as declared (TOML table or JSON object)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    base_url: str | None = Field(None, description="Its base URL, when it is not a secret.")
    base_url_env: str | None = Field(None, description="The variable that holds the base URL.")
    key_env: str | None = Field(None, description="The variable that holds its key.")
    key_header: str = Field("Authorization", description="Sent as 'Bearer <key>' there.")
    fallback: str | None = Field(
        None, description="With no base URL of its own: this dependency's URL and key."
    )
    timeout_s: float | None = Field(
        None, gt=0, description="Whole-call limit of one request (PROJ_HTTP_TIMEOUT_S if unset)."
    )
    rate: str | dict[str, Any] | None = Field(None, description="Global rate, e.g. '50/s'.")
    breaker: dict[str, Any] = Field(default_factory=dict, description="Breaker overrides.")
    max_in_flight: int | None = Field(None, ge=1, description="Requests at once, per process.")
    any_host: bool = Field(False, description="Requests may go to any URL (never with a key).")
    optional: bool = Field(False, description="May be left unconfigured (calls then fail).")
    secret_url: bool = Field(False, description="The URL holds a secret: never logged.")
    enabled: bool = Field(True, description="False: switched off in this deployment.")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None:
            check_url(v)
        return v

    @field_validator("rate")
    @classmethod
    def _rate(cls, v: Any) -> Any:
        if v is not None:
            parse_rate(v)
        return v


def check_url(url: str) -> None:
    """An http(s) URL with a host, or ValueError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL with a host, got {url!r}")


@dataclass(frozen=True)
class Dependency:
    """A declaration resolved against the environment: what a guarded client needs."""

    name: str
    base_url: str | None
    api_key: SecretStr | None = field(repr=False)
    key_header: str = "Authorization"
    timeout_s: float = 30.0
    rate: RateLimit | None = None
    breaker: Mapping[str, Any] = field(default_factory=dict)
    max_in_flight: int | None = None
    any_host: bool = False
    optional: bool = False
    secret_url: bool = False
    enabled: bool = True
    missing: tuple[str, ...] = ()  # what the environment lacks, in words

    def named(self, name: str) -> Dependency:
        """The same dependency under another name (its own breaker and limit): the
        ``source`` declaration serves every ``source.<name>``."""
        return replace(self, name=name)

    def shown_url(self) -> str:
        """The base URL as it may be shown (logs, errors)."""
        if self.base_url is None:
            return "<not set>"
        return "<hidden>" if self.secret_url else self.base_url


class DependencyError(ValueError):
    """A declaration is invalid; the message names the dependency, the field and the value."""


def _merge(base: dict[str, dict[str, Any]], patch: Mapping[str, Any], where: str) -> None:
    for name, fields in patch.items():
        if not isinstance(name, str) or not set(name) <= _NAME_CHARS or not name:
            raise DependencyError(
                f"{where}: a dependency name is lowercase letters, digits, '-' and '_', "
                f"got {name!r}"
            )
        if fields is None:  # null switches it off
            fields = {"enabled": False}
        if not isinstance(fields, Mapping):
            raise DependencyError(f"{where}[{name!r}]: must be a table of fields, got {fields!r}")
        base[name] = {**base.get(name, {}), **fields}


def declarations(
    shipped: str, user_toml: str | None = None, env_json: Mapping[str, Any] | None = None
) -> dict[str, Declaration]:
    """proj's declarations, then the deployment's file, then the environment, merged field by
    field and validated."""
    raw: dict[str, dict[str, Any]] = {}
    for text, where in (
        (shipped, "config/dependencies.toml"),
        (user_toml, "PROJ_DEPENDENCIES_FILE"),
    ):
        if text is None:
            continue
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise DependencyError(f"{where}: not valid TOML: {err}") from None
        _merge(raw, data, where)
    if env_json:
        _merge(raw, env_json, "PROJ_DEPENDENCIES")
    out: dict[str, Declaration] = {}
    for name, fields in raw.items():
        try:
            out[name] = Declaration(**fields)
        except pydantic.ValidationError as err:
            e = err.errors()[0]
            loc = ".".join(str(p) for p in e.get("loc", ())) or "?"
            msg = e["msg"].removeprefix("Value error, ")
            raise DependencyError(
                f"dependency {name!r}: {loc} {msg}, got {e.get('input')!r}"
            ) from None
    for name, d in out.items():
        if d.fallback is not None and d.fallback not in out:
            raise DependencyError(
                f"dependency {name!r}: fallback names no declared dependency, got {d.fallback!r}"
            )
    return out


def _env(environ: Mapping[str, str], name: str | None) -> str | None:
    value = environ.get(name) if name else None
    return value or None


def resolve(
    decls: Mapping[str, Declaration], environ: Mapping[str, str], *, timeout_s: float = 30.0
) -> dict[str, Dependency]:
    """Each declaration with its base URL and key taken from ``environ``; ``timeout_s`` for
    those that set none."""
    out: dict[str, Dependency] = {}
    for name, d in decls.items():
        url, key, missing = _locate(name, decls, environ, set())
        if url is not None:
            try:
                check_url(url)
            except ValueError as err:
                shown = "<hidden>" if d.secret_url else repr(url)
                raise DependencyError(
                    f"dependency {name!r}: {d.base_url_env or 'base_url'} {str(err).split(',')[0]}"
                    f", got {shown}"
                ) from None
        out[name] = Dependency(
            name=name,
            base_url=None if d.any_host else url,
            api_key=None if d.any_host else key,
            key_header=d.key_header,
            timeout_s=d.timeout_s or timeout_s,
            rate=parse_rate(d.rate) if d.rate is not None else None,
            breaker=dict(d.breaker),
            max_in_flight=d.max_in_flight,
            any_host=d.any_host,
            optional=d.optional,
            secret_url=d.secret_url,
            enabled=d.enabled,
            missing=() if d.any_host else tuple(missing),
        )
    return out


def _locate(
    name: str, decls: Mapping[str, Declaration], environ: Mapping[str, str], seen: set[str]
) -> tuple[str | None, SecretStr | None, list[str]]:
    """(base URL, key, what is missing) of one dependency, following its fallback."""
    d = decls[name]
    url = d.base_url or _env(environ, d.base_url_env)
    if url is None and d.fallback is not None and d.fallback not in seen | {name}:
        f_url, f_key, f_missing = _locate(d.fallback, decls, environ, seen | {name})
        if f_url is not None:
            return f_url, f_key, f_missing
    missing = []
    if url is None:
        what = d.base_url_env or "base_url"
        if d.fallback:
            what += f" (or {decls[d.fallback].base_url_env or d.fallback + ' base_url'})"
        missing.append(f"{what} is not set")
    raw_key = _env(environ, d.key_env)
    if d.key_env and raw_key is None and not (url is None and d.fallback):
        missing.append(f"{d.key_env} (its key) is not set")
    return url, SecretStr(raw_key) if raw_key else None, missing


def problems(deps: Mapping[str, Dependency]) -> list[str]:
    """What keeps the enabled, required dependencies from working, one phrase each."""
    out = []
    for name, d in sorted(deps.items()):
        if d.enabled and not d.optional and d.missing:
            out.append(f"dependency {name!r}: {', '.join(d.missing)}")
    return out
