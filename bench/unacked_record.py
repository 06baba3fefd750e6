"""The record of a message a worker takes, and its removal at the ack: proj's Redis transport
(one script call each) against kombu's (a MULTI/EXEC transaction each), in one process.

    python -m bench.unacked_record [--messages 2000] [--rounds 12]

One private Redis; a kombu channel of each transport; every round each side records and acks
the same N messages (``QoS.append`` then ``QoS.ack``, as a worker does for every task), order
alternating (A B, B A, ...). Client CPU per message, proj / kombu, median of the rounds (the
first two left out: connections, script load). < 1: proj cheaper.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from kombu import Connection
from kombu.transport import redis as kombu_redis

from bench._harness import private_redis
from proj import transport

SIDES = {"kombu": kombu_redis.Transport, "proj": transport.Transport}


class _Message:
    """What QoS.append reads of a kombu message: its raw form and delivery info."""

    def __init__(self, i: int) -> None:
        tid = f"00000000-0000-4000-8000-{i:012d}"
        self.delivery_tag = f"tag-{i}"
        self.delivery_info = {"exchange": "", "routing_key": "bulk"}
        self._raw = {
            "body": "W1tdLCB7fSwgeyJjYWxsYmFja3MiOiBudWxsfV0=",
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"lang": "py", "task": "proj.ping", "id": tid, "root_id": tid},
            "properties": {"correlation_id": tid, "delivery_tag": self.delivery_tag},
        }


def _round(qos: Any, messages: list[_Message]) -> float:
    cpu0 = time.process_time()
    for m in messages:
        qos.append(m, m.delivery_tag)
        qos.ack(m.delivery_tag)
    return (time.process_time() - cpu0) / len(messages) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=12)
    a = ap.parse_args()
    messages = [_Message(i) for i in range(a.messages)]
    us: dict[str, list[float]] = {side: [] for side in SIDES}
    with private_redis() as server:
        conns = {side: Connection(server.url, transport=t) for side, t in SIDES.items()}
        try:
            qos = {side: conn.default_channel.qos for side, conn in conns.items()}
            for i in range(a.rounds):
                for side in list(SIDES) if i % 2 == 0 else list(SIDES)[::-1]:
                    us[side].append(_round(qos[side], messages))
        finally:
            for conn in conns.values():
                conn.release()
    kept = {side: values[2:] for side, values in us.items()}
    ratios = [p / k for p, k in zip(kept["proj"], kept["kombu"], strict=True)]
    print(
        f"record + ack of a message, client CPU: proj {statistics.median(kept['proj']):.0f} us, "
        f"kombu {statistics.median(kept['kombu']):.0f} us; proj / kombu "
        f"{statistics.median(ratios):.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f})"
    )


if __name__ == "__main__":
    main()
