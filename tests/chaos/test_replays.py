"""Six replays of one batch's dead letters at once (``proj dlq replay`` run twice by two
operators): each dead letter is taken by exactly one of them, none is lost."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import redis as redis_lib

from proj.batch.dlq import DeadLetters
from proj.batch.replay import replay


def test_concurrent_replays_replay_each_dead_letter_exactly_once(
    redis_client: redis_lib.Redis, chaos_report: Callable[..., None]
) -> None:
    n = 60
    dlq = DeadLetters(redis_client)
    dlq.add(
        [
            {
                "batch_id": "b-dead",
                "index": i,
                "pipeline": "company",
                "item": {"domain": f"dead{i}.com"},
                "error": {"kind": "server_error"},
            }
            for i in range(n)
        ]
    )

    def one(_: int) -> int:
        try:
            return replay(batch_id="b-dead").accepted
        except ValueError:  # another replay took them all
            return 0

    with ThreadPoolExecutor(6) as pool:
        replayed = list(pool.map(one, range(6)))
    chaos_report(
        submitted=n,
        completed=sum(replayed),
        lost=max(0, n - sum(replayed)),
        twice=max(0, sum(replayed) - n),
        replays=len(replayed),
    )
    assert sum(replayed) == n, replayed  # none lost, none twice
    assert dlq.entries("b-dead") == []
