"""Declared queues and triage rules: loading, merging, errors that name field and value, and
the active-hours window. Pure."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources

import pytest

from proj.queues import Hours, QueueError, load, parse_json

SHIPPED = resources.files("proj.config").joinpath("queues.toml").read_text()
REQUIRED = {"urgent": "urgent", "bulk": "normal"}


def test_shipped_declarations_are_the_two_queues_and_compliance_with_no_rule() -> None:
    cfg = load(SHIPPED, required=REQUIRED)
    assert cfg.names == ["bulk", "compliance", "urgent"]
    assert cfg.queues["urgent"].kind == "urgent"
    assert cfg.queues["compliance"].model == "large"
    assert cfg.rules == ()


def test_file_and_environment_merge_field_by_field_and_env_rules_replace_the_files() -> None:
    user = """
[queues.legal]
model = "large"
max_depth = 100

[queues.bulk]
max_depth = 5000

[[triage]]
category = "legal"
queue = "legal"
"""
    cfg = load(
        SHIPPED,
        user,
        {"legal": {"max_depth": 10}, "reports": {"class": "low", "active_hours": "22:00-06:00"}},
        required=REQUIRED,
    )
    assert cfg.queues["legal"].model == "large" and cfg.queues["legal"].max_depth == 10
    assert cfg.queues["bulk"].kind == "normal" and cfg.queues["bulk"].max_depth == 5000
    assert str(cfg.queues["reports"].hours) == "22:00-06:00"
    assert [r.queue for r in cfg.rules] == ["legal"]
    replaced = load(SHIPPED, user, env_rules=[{"category": "finance", "queue": "bulk"}])
    assert [r.category for r in replaced.rules] == ["finance"]


def test_required_queues_are_added_with_their_class_when_not_declared() -> None:
    cfg = load("", required={"hot": "urgent", "cold": "normal"})
    assert (cfg.queues["hot"].kind, cfg.queues["cold"].kind) == ("urgent", "normal")


@pytest.mark.parametrize(
    ("queues", "rules", "message"),
    [
        ({"legal": {"max_depth": 0}}, None, "queue 'legal': max_depth Input should be greater"),
        ({"legal": {"class": "vip"}}, None, "queue 'legal': class Input should be 'urgent'"),
        ({"legal": {"colour": "red"}}, None, "queue 'legal': colour Extra inputs"),
        ({"Legal!": {}}, None, "queue name must be lowercase letters"),
        ({"r": {"class": "low", "active_hours": "25:00-01:00"}}, None, "must be HH:MM-HH:MM"),
        ({"r": {"active_hours": "22:00-06:00"}}, None, "active_hours is for low queues only"),
        (
            None,
            [{"category": "legal", "queue": "lgal"}],
            "queue names no declared queue, got 'lgal'",
        ),
        (None, [{"categry": "legal"}], "triage rule 0: categry Extra inputs"),
        (None, [{"urgency": "asap"}], "triage rule 0: urgency Input should be 'high'"),
    ],
)
def test_a_bad_declaration_names_the_field_and_the_value(
    queues: dict[str, object] | None, rules: list[object] | None, message: str
) -> None:
    with pytest.raises(QueueError, match=message.replace("(", r"\(")):
        load(SHIPPED, None, queues, rules, required=REQUIRED)


def test_unknown_queue_lookup_lists_the_declared_ones() -> None:
    cfg = load(SHIPPED, required=REQUIRED)
    with pytest.raises(
        QueueError, match="no queue named 'legal'; declared: bulk, compliance, urgent"
    ):
        cfg.get("legal")


def test_environment_json_must_be_the_right_shape() -> None:
    assert parse_json(None, "PROJ_QUEUES", dict) is None
    assert parse_json('{"a": {}}', "PROJ_QUEUES", dict) == {"a": {}}
    with pytest.raises(QueueError, match="PROJ_TRIAGE_RULES: must be a JSON list"):
        parse_json('{"a": 1}', "PROJ_TRIAGE_RULES", list)
    with pytest.raises(QueueError, match="PROJ_QUEUES: not valid JSON"):
        parse_json("{nope", "PROJ_QUEUES", dict)


def _at(hh: int, mm: int = 0) -> datetime:
    return datetime(2026, 12, 7, hh, mm, tzinfo=UTC)


def test_hours_window_within_a_day_and_across_midnight() -> None:
    day = Hours.parse("09:00-17:30")
    assert not day.active(_at(8, 59)) and day.active(_at(9)) and not day.active(_at(17, 30))
    assert day.next_change(_at(8)) == _at(9)
    assert day.next_change(_at(12)) == _at(17, 30)
    assert day.next_change(_at(18)) == datetime(2026, 12, 8, 9, tzinfo=UTC)
    night = Hours.parse("22:00-06:00")
    assert night.active(_at(23)) and night.active(_at(5, 59)) and not night.active(_at(6))
    assert night.next_change(_at(12)) == _at(22)
    assert night.next_change(_at(23)) == datetime(2026, 12, 8, 6, tzinfo=UTC)


def test_rules_match_on_every_field_they_give() -> None:
    cfg = load(
        SHIPPED,
        env_queues={"legal": {}},
        env_rules=[
            {"category": ["legal", "contract"], "urgency": "high", "queue": "urgent"},
            {"category": "legal", "queue": "legal", "model": "large"},
            {"keywords": ["invoice", "balance sheet"], "queue": "bulk", "model": "small"},
        ],
        required=REQUIRED,
    )
    first, second, third = cfg.rules
    assert first.matches("contract", "high", "simple", "")
    assert not first.matches("contract", "normal", "simple", "")
    assert second.matches("legal", "normal", "complex", "")
    assert third.matches("report", "normal", "simple", "Q3 Balance Sheet attached")
    assert not third.matches("report", "normal", "simple", "hello")
    assert second.describe() == "category=legal -> queue legal, model large"


class _Consumer:
    """What the off-peak step calls on Celery's consumer."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def cancel_task_queue(self, name: str) -> None:
        self.calls.append(("cancel", name))

    def add_task_queue(self, name: str) -> None:
        self.calls.append(("add", name))


def test_off_peak_queue_is_paused_outside_its_hours_and_resumed_inside() -> None:
    from proj.offpeak import ActiveHours, plan

    cfg = load(
        SHIPPED,
        env_queues={"nightly": {"class": "low", "active_hours": "22:00-06:00"}},
        required=REQUIRED,
    )
    nightly = cfg.queues["nightly"]
    assert plan([nightly], set(), _at(12)) == (["nightly"], [])
    assert plan([nightly], {"nightly"}, _at(12)) == ([], [])
    assert plan([nightly], {"nightly"}, _at(23)) == ([], ["nightly"])
    step = ActiveHours.__new__(ActiveHours)
    step.queues, step.paused, step.timer_entry = [nightly], {}, None
    c = _Consumer()
    step.check(c, _at(12))
    assert c.calls == [("cancel", "nightly")]
    assert step.paused == {"nightly": "2026-12-07T22:00+00:00"}
    step.check(c, _at(21, 59))  # still outside: nothing more
    step.check(c, _at(22))
    assert c.calls == [("cancel", "nightly"), ("add", "nightly")] and step.paused == {}
    step.check(c, _at(6))
    assert c.calls[-1] == ("cancel", "nightly")
    assert step.paused == {"nightly": "2026-12-07T22:00+00:00"}
