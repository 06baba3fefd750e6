"""A task's JSON arguments checked against its signature before it is enqueued."""

from __future__ import annotations

from typing import Any

from proj.api.arguments import check


def charge(customer: str, amount_cents: int, *, currency: str = "eur", note: Any = None) -> None:
    pass


def untyped(a, b=1):  # type: ignore[no-untyped-def]
    pass


def test_arguments_that_fit_pass() -> None:
    assert check(charge, ["c1", 500], {}) is None
    assert check(charge, [], {"customer": "c1", "amount_cents": 5, "currency": "usd"}) is None
    assert check(charge, ["c1", 5], {"note": {"any": ["thing"]}}) is None
    assert check(untyped, ["anything", "goes"], {}) is None


def test_a_mistake_names_the_parameter_and_the_value() -> None:
    assert check(charge, ["c1"], {}) == "arguments: missing a required argument: 'amount_cents'"
    assert check(charge, ["c1", 5, "usd"], {}) == "arguments: too many positional arguments"
    assert check(charge, ["c1", 5], {"colour": 1}) == (
        "arguments: got an unexpected keyword argument 'colour'"
    )
    assert check(charge, ["c1", "500"], {}) == (
        "amount_cents: Input should be a valid integer, got '500'"
    )
    assert check(charge, [7, 5], {}) == "customer: Input should be a valid string, got 7"
    assert check(untyped, [], {}) == "arguments: missing a required argument: 'a'"
