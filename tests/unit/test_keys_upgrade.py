"""The names keys of an earlier version move to: breakers', batches' (every part), the dead
letters' and the quarantine's; this version's keys and anything not proj's stay as they are."""

from __future__ import annotations

import pytest

from proj import keys
from proj.keys_upgrade import new_name


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("proj:cb:payments", keys.breaker("payments")),
        ("proj:cb:payments:win", keys.breaker_window("payments")),
        ("proj:cb:payments:probes", keys.breaker_probes("payments")),
        ("proj:cb:openai:chat", keys.breaker("openai:chat")),
        ("proj:batch:b1", keys.batch("b1")),
        ("proj:batch:b1:runners", keys.batch("b1", "runners")),
        ("proj:batch:2024:jan", keys.batch("2024:jan")),
        ("proj:batch:2024:jan:results", keys.batch("2024:jan", "results")),
        ("proj:dlq", keys.DLQ),
        ("proj:dlq:index", keys.DLQ_INDEX),
        ("proj:quarantine", keys.QUARANTINE),
        ("proj:quarantine:index", keys.QUARANTINE_INDEX),
        ("proj:quarantine:counts", keys.QUARANTINE_COUNTS),
    ],
)
def test_a_legacy_key_gets_its_hash_tagged_name(old: str, new: str) -> None:
    assert new_name(old) == new


@pytest.mark.parametrize(
    "key",
    [
        keys.breaker("payments"),
        keys.breaker_window("payments"),
        keys.batch("b1", "items"),
        keys.DLQ,
        keys.QUARANTINE_COUNTS,
        keys.BATCHES,
        keys.BATCH_LEASES,
        keys.BREAKER_REGISTRY,
        keys.rate_limit("crm"),
        "proj:cb:",
        "proj:batch:",
        "celery",
    ],
)
def test_any_other_key_keeps_its_name(key: str) -> None:
    assert new_name(key) is None
