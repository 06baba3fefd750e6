"""What proj adds to the dispatch of a no-op task: publish cost and execution throughput.

    python -m bench.dispatch [--publish 2000] [--rounds 5] [--backlog 3000]
                             [--throughput-rounds 8] [--concurrency 2 [1]]

One run, one private Redis, proj's app against a bare Celery app (same broker and result
backend, JSON, Celery's defaults otherwise), side by side, the order turning every round so
drift hits every side alike:
  publish     one client process per app (each imports only its own app: proj's signal
              handlers are process-wide); every round each sends N ``.delay()`` of a no-op task
              (proj.ping / bench.dispatch.noop) with no worker running. Per-call wall time and
              client CPU (all threads), proj / bare, median of the rounds.
  execution   one prefork worker per side (-c 2; --concurrency 2 1 adds -c 1), all started
              once and kept: proj's app and ProjTask base; the bare app; and the bare app with
              proj's delivery settings (acks late, reject on a lost child, prefetch 1), which
              leaves what the task base and proj's worker add. Each round fills one side's
              queue with M no-op tasks while its worker does not consume it, then lets the
              worker drain it (Celery's cancel_consumer / add_consumer). Tasks/s over the
              middle 80% of the drain, other / proj; and the worker's CPU per task (all its
              processes, and its main process, the one that feeds the pool), proj / other:
              the steadier figures on a busy machine. > 1: proj slower. Rounds are a few
              seconds each, so many of them turn within a minute and a burst of load hits
              every side alike.
Targets: publish proj / bare <= 1.2x, execution bare / proj <= 1.1x.
This module is also the bare app (``celery -A bench.dispatch worker``): it imports no proj.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from celery import Celery

#: The bare app: Celery's defaults plus JSON only, the same Redis as broker and backend.
_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("bare-dispatch", broker=_URL, backend=_URL)
app.conf.update(
    accept_content=["json"],
    result_accept_content=["json"],
    task_serializer="json",
    result_serializer="json",
    broker_connection_retry_on_startup=True,
)
if os.environ.get("BENCH_BARE_DELIVERY") == "proj":  # the bare-late side's worker
    # proj's delivery guarantees on the bare app: ack after the task ran, a killed child's
    # task requeued, a worker reserves only what it runs. What is left is the task base.
    app.conf.update(
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1
    )

SIDES = ("proj", "bare")
#: The execution figures also run the bare app with proj's delivery settings.
EXEC_SIDES = ("proj", "bare", "bare-late")
#: Queue each side's no-op task goes to (proj's router sends proj.ping to the bulk queue).
QUEUES = {"proj": "bulk", "bare": "celery", "bare-late": "late"}
APPS = {"proj": "proj", "bare": "bench.dispatch", "bare-late": "bench.dispatch"}
#: A proj worker checks at start that its providers have a URL and a key; no-ops call none.
WORKER_ENV = {
    "proj": {"PROVIDER_BASE_URL": "http://127.0.0.1:9", "PROVIDER_API_KEY": "bench-unused"},
    "bare": {},
    "bare-late": {"BENCH_BARE_DELIVERY": "proj"},
}
#: kombu's Redis transport keeps one list per priority step: ``q``, ``q\x06\x16<step>``.
_PRIORITY_SEP = "\x06\x16"


@app.task(name="bench.dispatch.noop", shared=False)
def noop() -> str:
    """The bare app's no-op, the twin of ``proj.ping``."""
    return "pong"


# --- client processes ----------------------------------------------------------------------


def _client(side: str) -> None:
    """A publisher: for each line N on stdin, send N ``.delay()`` and print wall and CPU s."""
    send: Any
    if side == "proj":
        from proj.tasks.demo import ping

        send = ping.delay
    elif side == "bare":
        send = noop.delay
    else:
        send = noop.s().set(queue=QUEUES[side]).delay
    for _ in range(50):  # connect, declare, fill caches: not part of any round
        send()
    print("ready", flush=True)
    for line in sys.stdin:
        n = int(line)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            send()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        print(f"{wall} {cpu}", flush=True)


class Client:
    """One publisher process (``python -m bench.dispatch --client SIDE``)."""

    def __init__(self, side: str) -> None:
        self.side = side
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.dispatch", "--client", side],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        if self._readline() != "ready":
            raise RuntimeError(f"{side} client did not start")

    def _readline(self) -> str:
        out: IO[str] | None = self.proc.stdout
        line = out.readline() if out is not None else ""
        if not line:
            raise RuntimeError(f"{self.side} client exited ({self.proc.poll()})")
        return line.strip()

    def send(self, n: int) -> tuple[float, float]:
        """Send ``n`` tasks; (wall s, CPU s) the client spent."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        wall, cpu = self._readline().split()
        return float(wall), float(cpu)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# --- measurements --------------------------------------------------------------------------


@dataclass
class Figures:
    publish_ms: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SIDES})
    publish_cpu_ms: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SIDES})
    # concurrency -> side -> tasks/s of each round
    rate: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    worker_cpu_ms: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    main_cpu_ms: dict[int, dict[str, list[float]]] = field(default_factory=dict)


def measure_publish(clients: dict[str, Client], n: int, rounds: int, fig: Figures) -> None:
    from bench._harness import turning_order

    for i in range(rounds):
        for side in turning_order(i, SIDES):
            wall, cpu = clients[side].send(n)
            fig.publish_ms[side].append(wall / n * 1000)
            fig.publish_cpu_ms[side].append(cpu / n * 1000)


def _queue_keys(queue: str) -> list[str]:
    return [queue, *(f"{queue}{_PRIORITY_SEP}{step}" for step in range(1, 10))]


def _empty_queues(url: str) -> None:
    """Drop the messages of both sides (the bindings stay: the clients declared them once)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.delete(*(key for q in QUEUES.values() for key in _queue_keys(q)))
    finally:
        client.close()


_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()  # from field 3 (state) on


def _group_pids(pgid: int) -> list[str]:
    """The processes of a worker: its main process and its pool (one process group)."""
    pids = []
    for entry in os.scandir("/proc"):
        fields = _stat_fields(entry.name) if entry.name.isdigit() else None
        if fields is not None and int(fields[2]) == pgid:
            pids.append(entry.name)
    return pids


def _cpu_s(pids: list[str]) -> float:
    """User + system CPU seconds the given processes have used so far."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks * _TICK_S


@dataclass
class Drain:
    rate: float  # tasks/s
    cpu_ms: float  # worker CPU (main process and pool) per task
    main_cpu_ms: float  # of which the main process's (the one that feeds the pool)


class Gate:
    """Every side's worker, started once per pool size and kept for every round. A worker
    consumes only while its backlog drains: its queue is filled with the worker not consuming
    it (Celery's ``cancel_consumer``), then ``add_consumer`` opens it, so the drain starts
    with the whole backlog waiting and no worker start-up in any round."""

    def __init__(self, url: str, concurrency: int, logs: Path) -> None:
        import redis

        from bench._harness import Workers
        from proj.stack.up import WorkerSpec

        self.concurrency = concurrency
        self.client = redis.Redis.from_url(url)
        # Control messages only: any app on the same Redis reaches both workers' mailboxes.
        self.control = Celery("bench-dispatch-control", broker=url, backend=url).control
        self.workers = Workers(logs)
        self.nodes: dict[str, str] = {}
        self.pids: dict[str, int] = {}
        try:
            for side in EXEC_SIDES:
                spec = WorkerSpec(f"{side}{concurrency}", (QUEUES[side],), concurrency)
                self.workers.start(spec, app=APPS[side], env=WORKER_ENV[side])
                self.nodes[side], self.pids[side] = spec.nodename, self.workers.procs[-1].pid
                self._consume(side, False)
        except BaseException:
            self.close()
            raise

    def _consume(self, side: str, on: bool) -> None:
        command = self.control.add_consumer if on else self.control.cancel_consumer
        replies = command(QUEUES[side], destination=[self.nodes[side]], reply=True, timeout=10)
        if not replies:
            raise RuntimeError(f"{self.nodes[side]} did not answer {command.__name__}")

    def remaining(self, side: str) -> int:
        pipe = self.client.pipeline(transaction=False)
        for key in _queue_keys(QUEUES[side]):
            pipe.llen(key)
        return int(sum(pipe.execute()))

    def drain(self, side: str, client: Client, backlog: int) -> Drain:
        """Fill the queue of ``side``, let its worker drain it, and time the middle 80% of the
        drain (tasks leaving the queue; with a backlog that is the rate they are run at)."""
        client.send(backlog)
        main = [str(self.pids[side])]
        pids = _group_pids(self.pids[side])
        # (time, tasks left, worker CPU s, main process CPU s)
        samples: list[tuple[float, int, float, float]] = []
        self._consume(side, True)
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                left = self.remaining(side)
                samples.append((time.perf_counter(), left, _cpu_s(pids), _cpu_s(main)))
                if left == 0:
                    break
                time.sleep(0.02)
        finally:
            self._consume(side, False)
        if samples[-1][1] != 0:
            raise RuntimeError(f"{side} -c {self.concurrency}: the backlog did not drain")
        start_left = samples[0][1]
        t_a, left_a, cpu_a, main_a = next(s for s in samples if s[1] <= 0.9 * start_left)
        t_b, left_b, cpu_b, main_b = next(s for s in samples if s[1] <= 0.1 * start_left)
        done = left_a - left_b
        return Drain(
            done / (t_b - t_a), (cpu_b - cpu_a) / done * 1000, (main_b - main_a) / done * 1000
        )

    def close(self) -> None:
        self.workers.stop()
        self.client.close()


def measure_throughput(
    url: str,
    clients: dict[str, Client],
    concurrency: int,
    backlog: int,
    rounds: int,
    logs: Path,
    fig: Figures,
) -> None:
    rates = fig.rate.setdefault(concurrency, {s: [] for s in EXEC_SIDES})
    cpu = fig.worker_cpu_ms.setdefault(concurrency, {s: [] for s in EXEC_SIDES})
    main = fig.main_cpu_ms.setdefault(concurrency, {s: [] for s in EXEC_SIDES})
    from bench._harness import turning_order

    gate = Gate(url, concurrency, logs / f"c{concurrency}")
    try:
        for side in EXEC_SIDES:  # a first drain each, not counted: imports, caches, connections
            gate.drain(side, clients[side], min(backlog, 500))
        for i in range(rounds):
            for side in turning_order(i, EXEC_SIDES):
                d = gate.drain(side, clients[side], backlog)
                rates[side].append(d.rate)
                cpu[side].append(d.cpu_ms)
                main[side].append(d.main_cpu_ms)
    finally:
        gate.close()


# --- report ----------------------------------------------------------------------------------


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def _row(
    label: str, proj: list[float], bare: list[float], ratios: list[float], fmt: str
) -> list[str]:
    med = statistics.median
    return [
        label,
        format(med(proj), fmt),
        format(med(bare), fmt),
        f"{med(ratios):.2f}x",
        _spread(ratios),
    ]


def report(fig: Figures, a: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if fig.publish_ms["proj"]:
        t = Table(title=f"publish: {a.publish} .delay() of a no-op, {a.rounds} rounds (A B, B A)")
        for col in ("", "proj ms/call", "bare ms/call", "proj / bare (median)", "per round"):
            t.add_column(col, justify="right")
        for label, data in (("wall", fig.publish_ms), ("client CPU", fig.publish_cpu_ms)):
            ratios = [p / b for p, b in zip(data["proj"], data["bare"], strict=True)]
            t.add_row(*_row(label, data["proj"], data["bare"], ratios, ".3f"))
        console.print(t)
    if fig.rate:
        t = Table(
            title=f"execution: backlog of {a.backlog} no-op tasks, one prefork worker, "
            f"{a.throughput_rounds} rounds (order turning)"
        )
        for col in ("", "proj", "other", "ratio (median)", "per round"):
            t.add_column(col, justify="right")
        for c, rates in sorted(fig.rate.items(), reverse=True):
            for other, name in (("bare", "bare"), ("bare-late", "bare, proj's delivery")):
                ratios = [b / p for p, b in zip(rates["proj"], rates[other], strict=True)]
                t.add_row(
                    *_row(
                        f"-c {c} tasks/s ({name} / proj)",
                        rates["proj"],
                        rates[other],
                        ratios,
                        ".0f",
                    )
                )
                for label, cpu in (
                    ("worker CPU", fig.worker_cpu_ms[c]),
                    ("main process", fig.main_cpu_ms[c]),
                ):
                    ratios = [p / b for p, b in zip(cpu["proj"], cpu[other], strict=True)]
                    t.add_row(
                        *_row(
                            f"  {label} ms/task (proj / {name})",
                            cpu["proj"],
                            cpu[other],
                            ratios,
                            ".2f",
                        )
                    )
        console.print(t)
        console.print(
            "bare: Celery's defaults (acks early, prefetch 4 per process); bare, proj's delivery:"
            " acks late, reject on a lost child, prefetch 1 (what proj's app sets)"
        )
    console.print("targets: publish proj / bare <= 1.20x; execution bare / proj <= 1.10x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--publish", type=int, default=2000, help="N: .delay() calls per round")
    ap.add_argument("--rounds", type=int, default=5, help="publish rounds per side")
    ap.add_argument("--backlog", type=int, default=3000, help="M: tasks a worker drains")
    ap.add_argument("--throughput-rounds", type=int, default=8, help="drains per side")
    ap.add_argument(
        "--concurrency", type=int, nargs="+", default=[2], help="prefork pool sizes (e.g. 2 1)"
    )
    ap.add_argument("--client", choices=EXEC_SIDES, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.client:
        _client(a.client)
        return

    from bench._harness import private_redis
    from proj.settings import reset_settings

    fig = Figures()
    with private_redis() as server, tempfile.TemporaryDirectory(prefix="dispatch-") as tmp:
        reset_settings()
        clients = {side: Client(side) for side in EXEC_SIDES}
        try:
            measure_publish(clients, a.publish, a.rounds, fig)
            _empty_queues(server.url)
            for c in a.concurrency if a.throughput_rounds > 0 else ():
                measure_throughput(
                    server.url, clients, c, a.backlog, a.throughput_rounds, Path(tmp), fig
                )
        finally:
            for client in clients.values():
                client.close()
    report(fig, a)


if __name__ == "__main__":
    main()
