"""The simulated provider's own guarantees, over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx

from proj.sim.admin import SimAdmin
from tests.integration.conftest import API_KEY


def test_capacity_holds_across_a_counter_reset(sim: SimAdmin) -> None:
    """Resetting the counters must not forget the requests in flight, or a benchmark that
    resets them mid-run gets more capacity than it configured."""
    sim.configure(
        {"routes": {"company": {"latency_ms": 800, "capacity_concurrent": 2, "retry_after_s": 0}}}
    )

    async def main() -> list[int]:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=sim.base_url, headers=headers, timeout=10) as http:
            held = [asyncio.create_task(http.get(f"/v1/companies/held{i}.com")) for i in range(2)]
            await asyncio.sleep(0.3)  # both are in flight
            await asyncio.to_thread(sim.reset)
            assert (await asyncio.to_thread(sim.stats))["in_flight"]["company"] == 2
            third = await http.get("/v1/companies/third.com")
            return [third.status_code] + [(await t).status_code for t in held]

    assert asyncio.run(main()) == [429, 200, 200]
    stats = sim.stats()
    assert stats["in_flight"]["company"] == 0
    assert stats["counts"]["company"]["rate_limited"] == 1


def test_a_caller_that_hangs_up_is_no_longer_in_flight(sim: SimAdmin) -> None:
    sim.configure({"routes": {"company": {"timeout_rate": 1.0, "hang_s": 30}}})
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with (
        httpx.Client(base_url=sim.base_url, headers=headers) as http,
        contextlib.suppress(httpx.TimeoutException),
    ):
        http.get("/v1/companies/hang.com", timeout=0.5)
    deadline = time.monotonic() + 5
    while sim.stats()["in_flight"]["company"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sim.stats()["in_flight"]["company"] == 0
    assert sim.count("company", "timeout") == 1
