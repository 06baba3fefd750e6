"""Requests per second the simulator serves, against a bare aiohttp server in the same run.

    python -m bench.sim_throughput [--seconds 5] [--clients 2] [--concurrency 64]

Zero latency, client processes on the same machine. The simulator must serve >= 1,000 req/s
so it is never what limits a benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import time

import aiohttp
from aiohttp import web
from rich.console import Console
from rich.table import Table

from proj.sim.admin import SimAdmin
from proj.stack.procs import free_port
from proj.stack.sim import start_sim


def _bare_server(port: int) -> None:
    async def handler(_: web.Request) -> web.Response:
        return web.json_response({"domain": "x.com", "name": "X", "employees": 10})

    app = web.Application()
    app.router.add_get("/v1/companies/{domain}", handler)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


async def _hammer(url: str, seconds: float, concurrency: int) -> int:
    done = 0
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:

        async def worker(w: int) -> None:
            nonlocal done
            i = 0
            while time.perf_counter() < deadline:
                async with s.get(f"{url}/v1/companies/c{w}-{i}.com") as r:
                    await r.read()
                done += 1
                i += 1

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return done


def _client(url: str, seconds: float, concurrency: int, q: mp.Queue) -> None:
    q.put(asyncio.run(_hammer(url, seconds, concurrency)))


def measure(url: str, seconds: float, clients: int, concurrency: int) -> float:
    q: mp.Queue = mp.Queue()
    procs = [
        mp.Process(target=_client, args=(url, seconds, concurrency, q)) for _ in range(clients)
    ]
    for p in procs:
        p.start()
    total = sum(q.get() for _ in procs)
    for p in procs:
        p.join()
    return total / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=64)
    a = ap.parse_args()
    proc, url = start_sim()
    admin = SimAdmin(url)
    admin.configure({"default": {"latency_ms": 0}})
    try:
        sim_rps = measure(url, a.seconds, a.clients, a.concurrency)
    finally:
        admin.close()
        proc.stop()
    port = free_port()
    bare = mp.Process(target=_bare_server, args=(port,), daemon=True)
    bare.start()
    time.sleep(1.0)
    try:
        bare_rps = measure(f"http://127.0.0.1:{port}", a.seconds, a.clients, a.concurrency)
    finally:
        bare.terminate()
        bare.join()
    t = Table(title="simulator throughput (zero latency, clients on the same machine)")
    for col in ("server", "req/s", "of bare aiohttp"):
        t.add_column(col, justify="right")
    t.add_row("proj sim", f"{sim_rps:,.0f}", f"{sim_rps / bare_rps:.2f}x")
    t.add_row("bare aiohttp", f"{bare_rps:,.0f}", "1.00x")
    Console().print(t)


if __name__ == "__main__":
    main()
