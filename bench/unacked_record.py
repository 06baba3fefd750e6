"""The record of a message a worker takes, and its removal at the ack: proj's Redis transport
(one script call each; in a worker's event loop, the ack's removal goes with the next record)
against kombu's (a MULTI/EXEC transaction each), in one process.

    python -m bench.unacked_record [--messages 2000] [--rounds 12]

One private Redis; a kombu channel of each transport; every round each side records and acks
the same N messages (``QoS.append`` then ``QoS.ack``, as a worker does for every task), order
turning. Three sides: kombu's transport; proj's outside an event loop (an ack waits for
Redis); proj's with an event loop bound, as in a worker (the last removal is made at the
end of the round). Client CPU and wall time per message, proj / kombu, median of the rounds
(the first two left out: connections, script load). < 1: proj cheaper.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from kombu import Connection
from kombu.asynchronous.hub import Hub
from kombu.transport import redis as kombu_redis

from bench._harness import private_redis, turning_order
from proj import transport

SIDES = {
    "kombu": kombu_redis.Transport,
    "proj": transport.Transport,
    "proj in a worker's loop": transport.Transport,
}


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


def _round(qos: Any, messages: list[_Message], loop: Hub | None) -> tuple[float, float]:
    """(client CPU us, wall us) per message recorded and acked."""
    if loop is not None:
        transport.bind_event_loop(loop)
    try:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for m in messages:
            qos.append(m, m.delivery_tag)
            qos.ack(m.delivery_tag)
        if loop is not None:
            qos.forget_acked()  # what the timer does after the last one
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        transport.unbind_event_loop()
    return cpu / len(messages) * 1e6, wall / len(messages) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=12)
    a = ap.parse_args()
    messages = [_Message(i) for i in range(a.messages)]
    cpu: dict[str, list[float]] = {side: [] for side in SIDES}
    wall: dict[str, list[float]] = {side: [] for side in SIDES}
    loop = Hub()
    with private_redis() as server:
        conns = {side: Connection(server.url, transport=t) for side, t in SIDES.items()}
        try:
            qos = {side: conn.default_channel.qos for side, conn in conns.items()}
            for i in range(a.rounds):
                for side in turning_order(i, tuple(SIDES)):
                    c, w = _round(qos[side], messages, loop if "loop" in side else None)
                    cpu[side].append(c)
                    wall[side].append(w)
        finally:
            for conn in conns.values():
                conn.release()
            loop.close()
    med = statistics.median
    for side in list(SIDES)[1:]:
        for label, us in (("client CPU", cpu), ("wall", wall)):
            kept = {s: values[2:] for s, values in us.items()}
            ratios = [p / k for p, k in zip(kept[side], kept["kombu"], strict=True)]
            print(
                f"record + ack of a message, {label}: {side} {med(kept[side]):.0f} us, kombu "
                f"{med(kept['kombu']):.0f} us; / kombu {med(ratios):.2f}x "
                f"(rounds {min(ratios):.2f}-{max(ratios):.2f})"
            )


if __name__ == "__main__":
    main()
