"""What every settings section shares: how a section reads the environment, and the
defaults more than one section needs."""

from __future__ import annotations

from typing import Annotated, Any

import pydantic
from pydantic import AliasChoices, BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

Priority = Annotated[int, Field(ge=0, le=9)]


def _config(prefix: str = "PROJ_") -> SettingsConfigDict:
    return SettingsConfigDict(
        env_prefix=prefix,
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        env_ignore_empty=True,  # VAR= is unset, as a shell user means it
    )


def _alias(*names: str) -> Any:
    """The environment names of a field whose name is not prefix + field (the first is the
    one users are told about)."""
    return AliasChoices(*names)


class ModelPrice(BaseModel):
    """What one model costs, in US dollars per million tokens."""

    input_per_1m_usd: float = Field(ge=0)
    output_per_1m_usd: float = Field(ge=0)


DEFAULT_PRICES = {
    "gpt-4o-mini": ModelPrice(input_per_1m_usd=0.15, output_per_1m_usd=0.60),
    "gpt-4o": ModelPrice(input_per_1m_usd=2.50, output_per_1m_usd=10.00),
}


def env_name(section: type[BaseSettings], field: str) -> str:
    """The environment variable of ``field``: the first name of its alias, else the section's
    prefix + the field, as pydantic-settings reads it."""
    info = section.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        first = alias.choices[0]
        return first if isinstance(first, str) else field.upper()
    if isinstance(alias, str):
        return alias
    return f"{section.model_config.get('env_prefix', '')}{field}".upper()


def _shown(section: type[BaseSettings], field: str, value: object) -> str:
    """A rejected value as an error shows it: never a secret's."""
    annotation = str(section.model_fields[field].annotation)
    if "SecretStr" in annotation or field == "flower_basic_auth":
        return "<hidden>"
    return repr(value)


def format_error(section: type[BaseSettings] | None, err: pydantic.ValidationError) -> str:
    """A section's validation errors as one line, each naming the variable and the value."""
    lines = []
    for e in err.errors():
        loc = e.get("loc") or ()
        msg = e["msg"].removeprefix("Value error, ")
        field = _field_of(section, str(loc[0])) if loc and section is not None else None
        if section is not None and field is not None:
            shown = _shown(section, field, e.get("input"))
            lines.append(f"{env_name(section, field)}: {msg}, got {shown}")
        else:
            lines.append(msg)
    return "invalid settings: " + "; ".join(lines)


def _field_of(section: type[BaseSettings] | None, name: str) -> str | None:
    """The field an error's location names (a field, or one of its aliases)."""
    if section is None:
        return None
    if name in section.model_fields:
        return name
    for field, info in section.model_fields.items():
        alias = info.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        if name in choices:
            return field
    return None
