"""What makes a task message poison: the checks made before Celery reads it (no servers)."""

from __future__ import annotations

from typing import Any

import pytest

from proj import poison

KNOWN = {"t": object()}
GOOD = {"task": "t", "id": "abc", "eta": None, "timelimit": [None, None], "retries": 0}


def _h(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


@pytest.mark.parametrize(
    ("headers", "kind", "words"),
    [
        ("nope", "headers", "headers must be a mapping"),
        ({"id": "x"}, "headers", "no task header"),
        (_h(task=5), "headers", "task header must be a task name, got 5"),
        (_h(id=None), "headers", "id header must be a non-empty text, got None"),
        (_h(id=""), "headers", "id header"),
        (_h(root_id=3), "headers", "root_id header must be text or null, got 3"),
        (_h(eta="soon"), "headers", "eta header must be an ISO 8601 time or null, got 'soon'"),
        (_h(expires=12), "headers", "expires header"),
        (_h(timelimit="x"), "headers", "timelimit header must be [soft, hard] seconds"),
        (_h(timelimit=[1, "2"]), "headers", "timelimit"),
        (_h(timelimit=[1]), "headers", "timelimit"),
        (_h(timelimit=[float("nan"), None]), "headers", "timelimit"),
        (_h(timelimit=[True, None]), "headers", "timelimit"),
        (_h(retries=-1), "headers", "retries header must be a whole number"),
        (_h(task="other"), "unknown_task", "task 'other' is not registered"),
    ],
)
def test_bad_headers_are_named(headers: object, kind: str, words: str) -> None:
    problem = poison.examine_headers(headers, KNOWN)
    assert problem is not None and problem.kind == kind
    assert words in problem.detail


def test_good_headers_pass() -> None:
    assert (
        poison.examine_headers(_h(eta="2026-12-02T10:00:00.5+00:00", timelimit=[1, 2.5]), KNOWN)
        is None
    )
    assert poison.examine_headers(_h(timelimit=None, retries=None), KNOWN) is None


def _two(a: int, b: int = 0) -> None:
    return None


@pytest.mark.parametrize(
    ("body", "kind", "words"),
    [
        ({"a": 1}, "body", "body must be [args, kwargs, embed], got {'a': 1}"),
        ([[], {}], "body", "body must be"),
        (["x", {}, {}], "body", "args must be a list"),
        ([[], [], {}], "body", "kwargs must be a mapping"),
        ([[], {1: 2}, {}], "body", "kwargs must be a mapping"),
        ([[], {}, "x"], "body", "embed must be a mapping"),
        ([[], {}, {"callbacks": 5}], "body", "embed callbacks must be a list"),
        ([[], {}, {"chord": []}], "body", "embed chord must be a signature"),
        ([[], {}, {}], "arguments", "arguments do not fit t: missing a required argument: 'a'"),
        ([[1, 2, 3], {}, {}], "arguments", "too many positional arguments"),
        ([[1], {"c": 1}, {}], "arguments", "unexpected keyword argument 'c'"),
    ],
)
def test_bad_bodies_are_named(body: object, kind: str, words: str) -> None:
    import inspect

    def check(*args: Any, **kwargs: Any) -> None:
        inspect.signature(_two).bind(*args, **kwargs)

    problem = poison.examine_body("t", body, check)
    assert problem is not None and problem.kind == kind
    assert words in problem.detail, problem.detail


def test_good_bodies_pass() -> None:
    embed = {"callbacks": None, "errbacks": [], "chain": None, "chord": None}
    assert poison.examine_body("t", [[1], {"b": 2}, embed], None) is None
    assert poison.examine_body("t", ([1], {}, None), None) is None


def test_values_in_messages_are_cut_to_200_characters() -> None:
    problem = poison.examine_headers(_h(eta="x" * 10_000), KNOWN)
    assert problem is not None and len(problem.detail) < 300
    assert "(10002 characters)" in problem.detail
