"""``proj api`` under load: many clients submitting batches, each request sent twice with the
same Idempotency-Key, against the same batches submitted in Python and one ``proj submit``.

    python -m bench.api_load [--batches 1000] [--clients 50] [--items 2] [--latency-ms 20]

One Redis, the simulator (``--latency-ms`` per call), one bulk worker (-c 8) and one ``proj
api`` process. Three ways in, each end to end (submitted until every batch has finished):

- ``proj submit`` of every item as one file;
- ``proj.batch.submit()`` of the same batches, one after another, in this process;
- the API: ``--clients`` concurrent HTTP clients, ``--batches`` requests, each sent again with
  its key (half right after the answer, as a client retrying after a lost answer; half while
  the first is in flight, as a client that timed out early).

It checks that every batch exists once and every item ran once (the simulator's count), and
prints the submit latency p50/p99 (also as a ratio to a ``GET /healthz`` on the same server,
the HTTP floor) and the time per item of each way as a ratio to ``proj submit``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis
from rich.console import Console
from rich.table import Table

from bench._harness import Workers, flush, private_redis
from proj import keys
from proj.api.keys import new_key, toml_entry
from proj.sim.admin import SimAdmin
from proj.stack.procs import ManagedProcess, free_port, wait_for
from proj.stack.sim import start_sim
from proj.stack.up import WorkerSpec

PROJ = str(Path(sys.executable).parent / "proj")


def _wait_finished(r: redis.Redis, expected: int, timeout_s: float = 900) -> None:
    """Until ``expected`` batches are listed and every one of them is finished."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ids: list[bytes] = r.zrange(keys.BATCHES, 0, -1)  # type: ignore[assignment]
        if len(ids) >= expected:
            pipe = r.pipeline(transaction=False)
            for b in ids:
                pipe.hget(keys.batch(b.decode()), "status")
            if all(s == b"finished" for s in pipe.execute()):
                return
        time.sleep(0.1)
    raise TimeoutError(f"{expected} batches not finished after {timeout_s}s")


def _items(tag: str, batches: int, per: int) -> list[list[dict[str, str]]]:
    return [[{"domain": f"{tag}{b}x{i}.com"} for i in range(per)] for b in range(batches)]


async def _load(
    url: str, key: str, batches: list[list[dict[str, str]]], clients: int
) -> tuple[list[float], set[str], int]:
    """Submit every batch twice with one key; (latencies s, batch ids, replays)."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(batches)):
        queue.put_nowait(i)
    latencies: list[float] = []
    ids: set[str] = set()
    replays = 0

    async def post(c: httpx.AsyncClient, i: int) -> str:
        nonlocal replays
        t0 = time.perf_counter()
        r = await c.post(
            "/v1/batches",
            json={"pipeline": "company", "items": batches[i]},
            headers={"Idempotency-Key": f"load-{i}"},
        )
        latencies.append(time.perf_counter() - t0)
        if r.status_code != 202:
            raise RuntimeError(f"batch {i}: HTTP {r.status_code} {r.text}")
        replays += r.headers.get("idempotent-replayed") == "true"
        batch_id: str = r.json()["batch_id"]
        return batch_id

    async def client() -> None:
        auth = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=url, headers=auth, timeout=60) as c:
            while not queue.empty():
                i = queue.get_nowait()
                if i % 2:  # the retry after the answer
                    first = await post(c, i)
                    second = await post(c, i)
                else:  # the retry while the first is in flight
                    first, second = await asyncio.gather(post(c, i), post(c, i))
                if first != second:
                    raise RuntimeError(f"batch {i}: two ids for one key: {first}, {second}")
                ids.add(first)

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, ids, replays


def _floor(url: str, n: int = 500) -> float:
    with httpx.Client(base_url=url) as c:
        c.get("/healthz")
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            c.get("/healthz")
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def _pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batches", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--items", type=int, default=2, help="items per batch")
    ap.add_argument("--latency-ms", type=float, default=20)
    a = ap.parse_args()
    n_items = a.batches * a.items
    proc, sim_url = start_sim()
    admin = SimAdmin(sim_url)
    admin.configure({"default": {"latency_ms": a.latency_ms}})
    seconds: dict[str, float] = {}
    try:
        with private_redis() as server, tempfile.TemporaryDirectory() as tmp:
            os.environ.update(
                {"PROVIDER_BASE_URL": sim_url, "PROVIDER_API_KEY": "sk-bench-simulator"}
            )
            os.environ["PROJ_CACHE_TTL_S"] = "0"
            os.environ["PROJ_DATABASE_URL"] = f"sqlite:///{tmp}/results.sqlite3"
            api_key = new_key()
            keys_file = Path(tmp) / "api_keys.toml"
            keys_file.write_text(toml_entry("load", api_key, ["*"], None))
            os.environ["PROJ_API_KEYS_FILE"] = str(keys_file)
            r = redis.Redis.from_url(server.url)
            workers = Workers(Path(tmp) / "logs")
            workers.start(WorkerSpec("bulk", ("bulk",), 8), env=dict(os.environ))
            port = free_port()
            api = ManagedProcess(
                "api",
                [PROJ, "api", "--port", str(port)],
                env=dict(os.environ),
                log_path=Path(tmp) / "logs" / "api.log",
            ).start()
            url = f"http://127.0.0.1:{port}"
            wait_for(lambda: _up(url), timeout_s=30, what="proj api", interval_s=0.2)
            try:
                # 1. proj submit: every item in one file
                path = Path(tmp) / "items.jsonl"
                flat = [it for b in _items("cli", a.batches, a.items) for it in b]
                path.write_text("\n".join(json.dumps(x) for x in flat) + "\n")
                t0 = time.perf_counter()
                out = subprocess.run(
                    [PROJ, "submit", str(path), "--pipeline", "company"],
                    capture_output=True, text=True, check=False, env=dict(os.environ),
                )  # fmt: skip
                if out.returncode != 0:
                    raise RuntimeError(out.stdout + out.stderr)
                seconds["proj submit (one file)"] = time.perf_counter() - t0
                _settle(admin, r, n_items, "proj submit")

                # 2. proj.batch.submit of the same batches, in this process
                from proj import batch

                t0 = time.perf_counter()
                for items in _items("py", a.batches, a.items):
                    batch.submit("company", items)
                _wait_finished(r, a.batches)
                seconds["proj.batch.submit, batch by batch"] = time.perf_counter() - t0
                _settle(admin, r, n_items, "proj.batch.submit")

                # 3. the API, from many clients, every request sent twice
                floor = _floor(url)
                t0 = time.perf_counter()
                lat, ids, replays = asyncio.run(
                    _load(url, api_key, _items("api", a.batches, a.items), a.clients)
                )
                submitted = time.perf_counter() - t0
                _wait_finished(r, a.batches)
                seconds[f"proj api, {a.clients} clients, each sent twice"] = (
                    time.perf_counter() - t0
                )
                listed = r.zcard(keys.BATCHES)
                ran = _settle(admin, r, n_items, "proj api")
            finally:
                api.stop()
                workers.stop()
                flush(server.url)
    finally:
        admin.close()
        proc.stop()
    if len(ids) != a.batches or listed != a.batches:
        raise SystemExit(f"FAIL: {len(ids)} ids, {listed} batches stored, {a.batches} sent")
    base = seconds["proj submit (one file)"] / n_items
    t = Table(title=f"{a.batches} batches of {a.items} items ({a.latency_ms:.0f} ms calls)")
    t.add_column("way in")
    t.add_column("time per item, ratio to proj submit", justify="right")
    for k, v in seconds.items():
        t.add_row(k, f"{v / n_items / base:.2f}x")
    Console().print(t)
    print(
        f"API: {len(lat)} requests, {a.batches} batches made once each ({replays} answered as "
        f"replays), {ran} of {n_items} items run once, none twice, none lost"
    )
    print(
        f"submit latency p50 {_pct(lat, 0.5) * 1000:.1f} ms ({_pct(lat, 0.5) / floor:.1f}x a "
        f"GET /healthz), p99 {_pct(lat, 0.99) * 1000:.1f} ms ({_pct(lat, 0.99) / floor:.1f}x); "
        f"all {len(lat)} submitted in {submitted:.1f} s"
    )
    print("(seconds: " + "; ".join(f"{k} {v:.1f}" for k, v in seconds.items()) + ")")


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _settle(admin: SimAdmin, r: redis.Redis, n_items: int, what: str) -> int:
    """Every item ran once (the simulator's count); reset for the next way in."""
    ran = admin.count("company")
    if ran != n_items:
        raise SystemExit(f"FAIL: {what}: {ran} calls for {n_items} items")
    admin.reset()
    r.flushdb()
    return ran


if __name__ == "__main__":
    main()
