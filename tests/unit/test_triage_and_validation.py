"""Triage rules, the router reading triage's header, and item validation."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from proj.pipelines import aggregate, documents, leads
from proj.settings import load_settings
from proj.tasks.router import route_task
from proj.triage import QUEUE_HEADER, assess

S = load_settings(triage_complex_min_chars=100)


def test_triage_urgent_goes_to_urgent_queue_with_small_model() -> None:
    t = assess("lead", "Please call me ASAP", S)
    assert (t.urgency, t.queue, t.model) == ("high", "urgent", S.queues.model_small)


def test_triage_complex_goes_to_large_model_on_bulk() -> None:
    t = assess("document", "x" * 100, S)
    assert (t.complexity, t.queue, t.model) == ("complex", "bulk", S.queues.model_large)


def test_triage_explicit_flag_wins_over_words() -> None:
    assert assess("lead", "urgent!!", S, urgent=False).urgency == "normal"
    assert assess("lead", "hello", S, urgent=True).urgency == "high"
    assert assess("lead", "hello", S, urgency="low").queue == "bulk"


def test_triage_table_is_configurable() -> None:
    s = load_settings(triage_queue_by_urgency={"high": "bulk", "normal": "urgent", "low": "bulk"})
    assert assess("lead", "hello", s).queue == "urgent"


def test_router_follows_triage_header_but_explicit_queue_wins() -> None:
    task = SimpleNamespace(urgent=False)
    assert route_task("t", (), {}, {"headers": {QUEUE_HEADER: "urgent"}}, task=task) == {
        "queue": "urgent"
    }
    assert route_task("t", (), {}, {"headers": {QUEUE_HEADER: "bogus"}}, task=task) == {
        "queue": "bulk"
    }
    opts = {"headers": {QUEUE_HEADER: "urgent"}, "queue": "bulk"}
    assert route_task("t", (), {}, opts, task=task) == {"queue": "bulk"}


def test_lead_validation_names_item_field_and_value() -> None:
    plan = leads.build(
        [
            {"email": "ok@a.com"},
            {"email": "bad"},
            {"email": "x@y.com", "company_domain": "no spaces.com"},
            7,
        ]
    )
    assert plan.accepted == 1
    msgs = [str(r) for r in plan.rejected]
    assert msgs[0] == "lead 1 (bad): field 'email' is not a valid email address (got 'bad')"
    assert "field 'company_domain'" in msgs[1] and "'no spaces.com'" in msgs[1]
    assert msgs[2].startswith("lead 3: field '(item)' must be a JSON object")


def test_all_invalid_gives_no_signature() -> None:
    plan = leads.build([{"name": "x"}])
    assert plan.signature is None and plan.accepted == 0
    assert plan.rejected[0].field == "email" and plan.rejected[0].reason == "is required"


def test_lead_defaults_domain_and_key_from_email() -> None:
    lead = leads.Lead.model_validate({"email": "Ann@Acme.COM"})
    assert (lead.email, lead.company_domain, lead.key) == (
        "ann@acme.com",
        "acme.com",
        "ann@acme.com",
    )


def test_document_and_source_validation() -> None:
    assert documents.build({"id": "d", "text": ""}).rejected[0].field == "text"
    plan = aggregate.build(
        [
            {"name": "a", "url": "http://x"},
            {"name": "a", "url": "http://y"},
            {"name": "b", "url": "ftp://z"},
        ]
    )
    assert plan.accepted == 1
    assert {(r.field, r.reason) for r in plan.rejected} == {
        ("url", "must be an http(s) URL"),
        ("name", "is a duplicate"),
    }


@pytest.mark.parametrize(
    ("text", "code"),
    [("a\x00b", "U+0000"), ("ring\x07", "U+0007"), ("x\u202ey", "U+202E"), ("\u2066z", "U+2066")],
)
def test_validation_refuses_control_and_bidi_characters_by_field(text: str, code: str) -> None:

    plan = leads.build([{"email": "ann@acme.com", "message": text}, {"email": "bo@acme.com"}])
    assert plan.accepted == 1
    (r,) = plan.rejected
    assert r.field == "message" and code in r.reason


def test_validation_keeps_ordinary_whitespace() -> None:

    plan = leads.build([{"email": "ann@acme.com", "message": "line one\n\tline two\r\n"}])
    assert plan.accepted == 1 and plan.rejected == []


@pytest.mark.parametrize("bad", [None, "ann@acme.com", {"email": "ann@acme.com"}, 42])
def test_build_refuses_input_that_is_not_a_list_with_a_clear_error(bad: object) -> None:
    from proj.errors import ValidationError

    with pytest.raises(ValidationError, match="must be a list of JSON objects"):
        leads.build(bad)  # type: ignore[arg-type]


def test_a_huge_value_is_named_not_echoed() -> None:
    from proj.errors import ValidationError

    err = ValidationError("lead 0", "email", "x" * 10_000_000, "is not a valid email address")
    assert len(str(err)) < 400 and "10000002 characters" in str(err)


FIVE = {
    "legal": {"model": "large"},
    "finance": {},
    "content": {"model": "small"},
    "general": {},
}
RULES = [
    {"category": "critical", "queue": "urgent"},
    {"category": "legal", "queue": "legal", "model": "large"},
    {"keywords": ["balance sheet", "invoice"], "queue": "finance"},
    {"category": "simple_content", "queue": "content"},
    {"category": "*", "complexity": "complex", "queue": "general", "model": "gpt-4.1"},
]


def test_triage_rules_pick_queue_and_model_first_match_wins() -> None:
    s = load_settings(queues={"queues_env": FIVE, "triage_rules_env": RULES})
    legal = assess("legal", "Contract for review", s)
    assert (legal.queue, legal.model) == ("legal", s.queues.model_large)
    assert legal.rule == "rule 1: category=legal -> queue legal, model large"
    # No model in the rule: the queue's own default, else the complexity's.
    assert assess("report", "Q3 balance sheet", s).queue == "finance"
    assert assess("report", "Q3 balance sheet", s).model == s.queues.model_small
    content = assess("simple_content", "a tweet", s)
    assert (content.queue, content.model) == ("content", s.queues.model_small)
    assert assess("critical", "db down", s).queue == "urgent"
    big = assess("memo", "x" * 2000, s)
    assert (big.queue, big.model, big.rule) == (
        "general",
        "gpt-4.1",
        "rule 4: category=* complexity=complex -> queue general, model gpt-4.1",
    )
    # Nothing matches: urgency decides the queue, complexity the model, and no rule is named.
    plain = assess("lead", "hello", s)
    assert (plain.queue, plain.model, plain.rule) == ("bulk", s.queues.model_small, None)
    assert legal.headers() == {QUEUE_HEADER: "legal", "proj_category": "legal"}


def test_a_rule_naming_an_undeclared_queue_is_a_config_error() -> None:
    from proj.errors import ConfigError

    with pytest.raises(ConfigError, match="triage rule 0: queue names no declared queue"):
        load_settings(queues={"triage_rules_env": [{"category": "legal", "queue": "legal"}]})
    with pytest.raises(ConfigError, match=r"PROJ_TRIAGE_QUEUE_BY_URGENCY\['low'\] names no"):
        load_settings(triage_queue_by_urgency={"high": "urgent", "normal": "bulk", "low": "x"})
