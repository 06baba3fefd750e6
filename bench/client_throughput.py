"""The provider client with hundreds of calls in flight, against the floor and the ideal.

    python -m bench.client_throughput [--calls 10000] [--inflight 500] [--latency-ms 500]

Same simulator, same run: proj's ProviderClient (httpx API on the aiohttp transport), plain
aiohttp (the floor), and httpx's own pool, each making the same calls with the same number in
flight. Ideal = calls / inflight x latency.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx
from rich.console import Console
from rich.table import Table

from bench._harness import private_redis
from proj.dependencies import Dependency
from proj.provider.client import guarded_client
from proj.provider.transport import make_transport
from proj.sim.admin import SimAdmin
from proj.stack.sim import start_sim


async def _drive(calls: int, inflight: int, one: Callable[[int], Awaitable[object]]) -> float:
    sem = asyncio.Semaphore(inflight)

    async def guarded(i: int) -> None:
        async with sem:
            await one(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(guarded(i) for i in range(calls)))
    return time.perf_counter() - t0


async def run_proj(url: str, calls: int, inflight: int) -> float:
    """Through the guarded client: breaker, global rate limit (none set), outcome counting."""
    transport = make_transport(max_connections=inflight)
    dep = Dependency(name="company", base_url=url, api_key=None, timeout_s=120)
    client = guarded_client(dep, transport, connect_timeout_s=10)
    try:
        return await _drive(calls, inflight, lambda i: client.get_json(f"/v1/companies/c{i}.com"))
    finally:
        await client.aclose()
        await transport.aclose()


async def run_aiohttp(url: str, calls: int, inflight: int) -> float:
    conn = aiohttp.TCPConnector(limit=inflight)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def one(i: int) -> object:
            async with session.get(f"{url}/v1/companies/c{i}.com") as r:
                return await r.json()

        return await _drive(calls, inflight, one)


async def run_httpx(url: str, calls: int, inflight: int) -> float:
    limits = httpx.Limits(max_connections=inflight, max_keepalive_connections=inflight)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:

        async def one(i: int) -> object:
            return (await client.get(f"{url}/v1/companies/c{i}.com")).json()

        return await _drive(calls, inflight, one)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--inflight", type=int, default=500)
    ap.add_argument("--latency-ms", type=float, default=500)
    ap.add_argument(
        "--with-httpx",
        action="store_true",
        help="also httpx's own pool (25x the ideal here: minutes)",
    )
    a = ap.parse_args()
    proc, url = start_sim()
    admin = SimAdmin(url)
    try:
        with private_redis():  # the breaker's and the limiter's shared state
            admin.configure({"default": {"latency_ms": a.latency_ms}})
            rows = {
                "aiohttp (floor)": asyncio.run(run_aiohttp(url, a.calls, a.inflight)),
                "proj ProviderClient": asyncio.run(run_proj(url, a.calls, a.inflight)),
            }
            if a.with_httpx:
                rows["httpx own pool"] = asyncio.run(run_httpx(url, a.calls, a.inflight))
            assert admin.count("company") == a.calls * len(rows)
    finally:
        admin.close()
        proc.stop()
    ideal = a.calls / a.inflight * a.latency_ms / 1000
    t = Table(title=f"{a.calls} calls, {a.inflight} in flight, {a.latency_ms:.0f} ms latency")
    for col in ("client", "wall / ideal", "wall / floor"):
        t.add_column(col, justify="right")
    floor = rows["aiohttp (floor)"]
    for name, wall in rows.items():
        t.add_row(name, f"{wall / ideal:.2f}x", f"{wall / floor:.2f}x")
    Console().print(t)
    print(
        f"(ideal = {ideal:.1f} s; walls: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in rows.items())
        + ")"
    )


if __name__ == "__main__":
    main()
