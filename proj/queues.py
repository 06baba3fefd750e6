"""Declared queues and triage rules: the queues work can go to, and which work goes where.

``config/queues.toml`` declares proj's own queues (``urgent``, ``bulk``, ``compliance``) and no
triage rule. A deployment adds or changes queues in its own TOML file (``PROJ_QUEUES_FILE``,
merged field by field) or from the environment (``PROJ_QUEUES='{"legal": {"model": "large"}}'``),
and gives its triage rules as ``[[triage]]`` entries of that file or as a JSON list in
``PROJ_TRIAGE_RULES`` (which replaces the file's). A queue has a class (``urgent``, ``normal``,
``low``), and optionally a default model, a maximum depth, and active hours (``low`` queues
only: consumed only inside them). A rule maps a category (and an urgency, a complexity, words
in the text) to a queue and a model; the first rule that matches wins.

Pure: loading takes the texts; :mod:`proj.settings` feeds them and checks the names.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

QueueClass = Literal["urgent", "normal", "low"]
Urgency = Literal["high", "normal", "low"]
Complexity = Literal["simple", "complex"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


class QueueError(ValueError):
    """A declaration or a rule that cannot be used; the message names the field and value."""


@dataclass(frozen=True)
class Hours:
    """A daily window in UTC, ``start`` included, ``end`` excluded; it may wrap midnight
    (``22:00-06:00``)."""

    start_min: int
    end_min: int

    @classmethod
    def parse(cls, text: str) -> Hours:
        m = _HOURS.match(text)
        if m is None:
            raise ValueError(f"must be HH:MM-HH:MM (UTC), got {text!r}")
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if start == end:
            raise ValueError(f"must not start and end at the same time, got {text!r}")
        return cls(start, end)

    def active(self, now: datetime) -> bool:
        minute = now.astimezone(UTC).hour * 60 + now.astimezone(UTC).minute
        if self.start_min < self.end_min:
            return self.start_min <= minute < self.end_min
        return minute >= self.start_min or minute < self.end_min

    def next_change(self, now: datetime) -> datetime:
        """When the window next opens (if closed now) or closes (if open now)."""
        now = now.astimezone(UTC)
        target = self.end_min if self.active(now) else self.start_min
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        at = day + timedelta(minutes=target)
        return at if at > now else at + timedelta(days=1)

    def __str__(self) -> str:
        return f"{_hhmm(self.start_min)}-{_hhmm(self.end_min)}"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


class QueueDecl(BaseModel):
    """One queue as declared (TOML table or JSON object)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    kind: QueueClass = Field("normal", alias="class", description="urgent, normal or low.")
    model: str | None = Field(
        None, min_length=1, description="Default model of its work: small, large or a name."
    )
    max_depth: int | None = Field(None, ge=1, description="Publishing beyond it: QueueFull.")
    active_hours: str | None = Field(None, description="HH:MM-HH:MM UTC; low queues only.")

    @field_validator("active_hours")
    @classmethod
    def _hours(cls, v: str | None) -> str | None:
        if v is not None:
            Hours.parse(v)
        return v


@dataclass(frozen=True)
class Queue:
    """A declared queue, ready to use."""

    name: str
    kind: QueueClass
    model: str | None = None
    max_depth: int | None = None
    hours: Hours | None = None

    def active(self, now: datetime) -> bool:
        return self.hours is None or self.hours.active(now)


class TriageRule(BaseModel):
    """One rule: what it matches (every field given must match) and where the work goes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    category: str | list[str] = Field("*", description="A category, a list of them, or *.")
    urgency: Urgency | None = None
    complexity: Complexity | None = None
    keywords: list[str] = Field(default_factory=list, description="Any of these in the text.")
    queue: str | None = Field(None, description="The queue (else the urgency's).")
    model: str | None = Field(None, min_length=1, description="small, large or a model name.")

    def matches(self, category: str, urgency: str, complexity: str, text: str) -> bool:
        cats = [self.category] if isinstance(self.category, str) else self.category
        if "*" not in cats and category not in cats:
            return False
        if self.urgency is not None and urgency != self.urgency:
            return False
        if self.complexity is not None and complexity != self.complexity:
            return False
        if self.keywords:
            lowered = text.lower()
            return any(k.lower() in lowered for k in self.keywords)
        return True

    def describe(self) -> str:
        cats = self.category if isinstance(self.category, str) else ",".join(self.category)
        parts = [f"category={cats}"]
        parts += [
            f"{k}={v}" for k, v in (("urgency", self.urgency), ("complexity", self.complexity)) if v
        ]
        if self.keywords:
            parts.append("keywords=" + ",".join(self.keywords))
        goes = [f"queue {self.queue}"] if self.queue else []
        goes += [f"model {self.model}"] if self.model else []
        return " ".join(parts) + " -> " + (", ".join(goes) or "defaults")


@dataclass(frozen=True)
class QueueConfig:
    """Every declared queue and the triage rules, in order."""

    queues: Mapping[str, Queue]
    rules: tuple[TriageRule, ...] = ()

    @property
    def names(self) -> list[str]:
        return sorted(self.queues)

    def known(self) -> str:
        return ", ".join(self.names)

    def get(self, name: str) -> Queue:
        """The queue called ``name``, or :class:`QueueError` naming the declared ones."""
        q = self.queues.get(name)
        if q is None:
            raise QueueError(f"no queue named {name!r}; declared: {self.known()}")
        return q


def _merge(into: dict[str, dict[str, Any]], data: Any, where: str) -> None:
    if not isinstance(data, Mapping):
        raise QueueError(f"{where}: must be a table of queues, got {type(data).__name__}")
    for name, fields in data.items():
        if not isinstance(fields, Mapping):
            raise QueueError(f"{where}: queue {name!r} must be a table, got {fields!r}")
        into.setdefault(str(name), {}).update(fields)


def _first_error(err: pydantic.ValidationError) -> tuple[str, str, Any]:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e.get("loc", ())) or "?"
    return loc, e["msg"].removeprefix("Value error, "), e.get("input")


def load(
    shipped: str,
    user_toml: str | None = None,
    env_queues: Mapping[str, Any] | None = None,
    env_rules: Sequence[Any] | None = None,
    *,
    required: Mapping[str, QueueClass] | None = None,
) -> QueueConfig:
    """proj's declarations, then the deployment's file, then the environment, merged and
    checked. ``required``: queues that must exist (the urgent and bulk queues of the
    settings), added with their class when not declared."""
    raw: dict[str, dict[str, Any]] = {}
    rules_raw: list[Any] = []
    for text, where in ((shipped, "config/queues.toml"), (user_toml, "PROJ_QUEUES_FILE")):
        if text is None:
            continue
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise QueueError(f"{where}: not valid TOML: {err}") from None
        _merge(raw, data.get("queues", {}), where)
        if "triage" in data:
            rules_raw = list(data["triage"])
    if env_queues:
        _merge(raw, env_queues, "PROJ_QUEUES")
    if env_rules is not None:
        rules_raw = list(env_rules)
    for name, kind in (required or {}).items():
        raw.setdefault(name, {"class": kind})
    queues: dict[str, Queue] = {}
    for name, fields in raw.items():
        if not _NAME.match(name):
            raise QueueError(
                f"queue name must be lowercase letters, digits, '_', '-' or '.', got {name!r}"
            )
        try:
            d = QueueDecl(**fields)
        except pydantic.ValidationError as err:
            loc, msg, got = _first_error(err)
            raise QueueError(f"queue {name!r}: {loc} {msg}, got {got!r}") from None
        if d.active_hours is not None and d.kind != "low":
            raise QueueError(
                f"queue {name!r}: active_hours is for low queues only, got class {d.kind!r}"
            )
        hours = Hours.parse(d.active_hours) if d.active_hours else None
        queues[name] = Queue(name, d.kind, d.model, d.max_depth, hours)
    config = QueueConfig(queues)
    rules: list[TriageRule] = []
    for i, r in enumerate(rules_raw):
        if not isinstance(r, Mapping):
            raise QueueError(f"triage rule {i}: must be a table, got {r!r}")
        try:
            rule = TriageRule(**r)
        except pydantic.ValidationError as err:
            loc, msg, got = _first_error(err)
            raise QueueError(f"triage rule {i}: {loc} {msg}, got {got!r}") from None
        if rule.queue is not None and rule.queue not in queues:
            raise QueueError(
                f"triage rule {i}: queue names no declared queue, got {rule.queue!r} "
                f"(declared: {config.known()})"
            )
        rules.append(rule)
    return QueueConfig(queues, tuple(rules))


def parse_json(text: str | None, what: str, kind: type) -> Any:
    """An environment variable's JSON (an object for PROJ_QUEUES, a list for the rules)."""
    if text is None or not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise QueueError(f"{what}: not valid JSON ({err.msg}), got {text!r}") from None
    if not isinstance(value, kind):
        raise QueueError(f"{what}: must be a JSON {kind.__name__}, got {text!r}")
    return value
