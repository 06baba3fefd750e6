"""Three hosts made with network namespaces: Redis and the simulated provider on one, a worker
on each of the other two. One breaker and one global rate limit hold across hosts, each host's
adaptive controller sizes its own pool, and a host cut off the network mid-batch loses nothing.
Skipped, with the reason, where namespaces cannot be made (not root, no iproute2)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from proj import keys
from proj.sim.admin import SimAdmin
from proj.sim.config import ADMIN_KEY_ENV
from proj.stack import netns
from proj.stack.commands import WorkerSpec, ping_workers
from tests.support import run_client, wait_until

pytestmark = pytest.mark.slow

KEY = "sk-multihost-0123456789"
ADMIN_KEY = "admin-multihost-0123456789"
RATE, BURST = 20, 2


class Cluster:
    def __init__(self, net: netns.Network, log_dir: Path, db: Path) -> None:
        self.net = net
        self.log_dir = log_dir
        self.data, self.w2, self.w3 = net.hosts
        self.redis_url = f"redis://{self.data.address}:6379/0"
        self.sim_url = f"http://{self.data.address}:8900"
        self.workers = {
            h.name: WorkerSpec(f"bulk-{h.name}", ("bulk",), 2, extra_args=("--adaptive",))
            for h in (self.w2, self.w3)
        }
        self.env = {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "PROVIDER_BASE_URL": self.sim_url,
            "PROVIDER_API_KEY": KEY,
            "PROJ_DATABASE_URL": f"sqlite:///{db}",
            "PROJ_RATE_LIMITS": json.dumps({"company": {"rate": f"{RATE}/s", "burst": BURST}}),
            "PROJ_RATE_LIMIT_HEADROOM": "0",
            "PROJ_BREAKER_MIN_CALLS": "10",
            "PROJ_BREAKER_OPEN_S": "2",
            "PROJ_BATCH_SMALL_MAX": "1",  # four runners a batch: a worker holds two at most
            "PROJ_BATCH_RUNNERS": "4",
            "PROJ_BATCH_CONCURRENCY": "10",
            "PROJ_BATCH_RUNNER_LEASE_S": "6",
            "PROJ_BATCH_WATCHDOG_INTERVAL_S": "1",
            "PYTHONUNBUFFERED": "1",
        }

    def start(self) -> Cluster:
        self.data.spawn_redis(self.env, self.log_dir)
        sim_env = {**self.env, "SIM_API_KEY": KEY, ADMIN_KEY_ENV: ADMIN_KEY}
        self.data.spawn_sim(sim_env, self.log_dir, "SIM_API_KEY")
        self.admin = SimAdmin(self.sim_url, ADMIN_KEY)
        for host in (self.w2, self.w3):
            host.spawn_worker(self.workers[host.name], self.env, self.log_dir)
        names = [spec.nodename for spec in self.workers.values()]
        wait_until(
            lambda: set(names) <= ping_workers(self.redis_url, names, 0.5), 60, "both workers"
        )
        return self

    def node(self, host: netns.Host) -> str:
        return self.workers[host.name].nodename

    def client(self, code: str, timeout_s: float = 180) -> Any:
        """Run ``code`` as a client in the calling namespace; its last line, as JSON."""
        return run_client(code, self.env, timeout_s)

    def redis(self) -> redis_lib.Redis:
        return redis_lib.Redis.from_url(self.redis_url, socket_timeout=5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    why = netns.unavailable()
    if why is not None:
        pytest.skip(f"no multi-host test: {why}")
    tmp = tmp_path_factory.mktemp("multihost")
    with netns.Network(3) as net:
        c = Cluster(net, tmp, tmp / "results.sqlite3").start()
        yield c
        c.admin.close()


def _busiest_second(admin: SimAdmin, route: str) -> int:
    timeline = admin.stats(timeline=True)["timeline"][route]
    return max(timeline.values(), default=0)


def _submit(cluster: Cluster, n: int, prefix: str) -> str:
    return str(
        cluster.client(
            "import json\nfrom proj import batch\n"
            f"items = [{{'domain': f'{prefix}{{i}}.example'}} for i in range({n})]\n"
            "print(json.dumps(batch.submit('company', items, fresh=True).batch_id))\n"
        )
    )


def _progress(cluster: Cluster, batch_id: str) -> dict[str, str]:
    r = cluster.redis()
    try:
        return {k.decode(): v.decode() for k, v in r.hgetall(keys.batch(batch_id)).items()}
    finally:
        r.close()


def _finished(cluster: Cluster, batch_id: str) -> bool:
    return _progress(cluster, batch_id).get("status") == "finished"


def test_one_rate_limit_and_one_breaker_hold_across_hosts(cluster: Cluster) -> None:
    admin = cluster.admin
    admin.reset(config=True)
    admin.configure({"routes": {"company": {"latency_ms": 20}}})
    batch_id = _submit(cluster, 200, "rl")
    wait_until(lambda: _finished(cluster, batch_id), 120, "the batch")
    p = _progress(cluster, batch_id)
    assert (p["done"], p["failed"]) == ("200", "0")
    busiest = _busiest_second(admin, "company")
    assert busiest <= RATE + BURST, busiest  # one limit for both hosts

    # Both hosts worked on it, and each host's controller sized its own pool.
    def runner_results() -> list[dict[str, Any]]:
        r = cluster.redis()
        try:
            metas = [json.loads(r.get(k) or "{}") for k in r.scan_iter(match="celery-task-meta-*")]
        finally:
            r.close()
        return [m for m in metas if m.get("name") == "proj.batch.run"]

    wait_until(
        lambda: all(m.get("status") == "SUCCESS" for m in runner_results()), 30, "the runners"
    )
    runners = {
        m.get("worker") for m in runner_results() if (m.get("result") or {}).get("processed")
    }
    r = cluster.redis()
    try:
        statuses = {
            h.name: r.hgetall(keys.concurrency_status(cluster.node(h)))
            for h in (cluster.w2, cluster.w3)
        }
    finally:
        r.close()
    assert runners == {cluster.node(cluster.w2), cluster.node(cluster.w3)}, runners
    assert all(s.get(b"limit") for s in statuses.values()), statuses

    # The provider fails every call: one breaker opens for both hosts, then lets one probe
    # through per open period (2 s) while the batch's items wait.
    admin.reset()
    admin.configure({"routes": {"company": {"latency_ms": 20, "error_rate": 1.0}}})
    failing = _submit(cluster, 100, "cb")
    r = cluster.redis()
    try:
        wait_until(lambda: r.hget(keys.breaker("company"), "state") == b"open", 60, "open")
        # Calls admitted before each process heard of it land within a moment (every
        # process trusts a closed answer for 0.1 s and sends outcomes every 50 ms).
        time.sleep(1.0)
        before = admin.count("company")
        time.sleep(6.0)
        during = admin.count("company") - before
    finally:
        r.close()
    assert during <= 4, during  # a probe per 2 s open period (3 in 6 s), across both hosts
    admin.configure({"routes": {"company": {"error_rate": 0.0}}})
    wait_until(lambda: _finished(cluster, failing), 120, "the batch after the outage")
    assert _progress(cluster, failing)["done"] == "100"


def test_a_host_cut_off_mid_batch_loses_nothing(cluster: Cluster) -> None:
    admin = cluster.admin
    admin.reset(config=True)
    admin.configure({"routes": {"company": {"latency_ms": 300}}})
    n = 120
    batch_id = _submit(cluster, n, "cut")
    wait_until(lambda: int(_progress(cluster, batch_id).get("done", 0)) >= 20, 60, "progress")
    cluster.w3.cut()  # its runner can reach neither Redis nor the provider
    try:
        wait_until(lambda: _finished(cluster, batch_id), 120, "the batch, on the other host")
    finally:
        cluster.w3.join()
    p = _progress(cluster, batch_id)
    assert (p["done"], p["failed"], p["total"]) == (str(n), "0", str(n))
    r = cluster.redis()
    try:
        results = r.hgetall(keys.batch(batch_id, "results"))
    finally:
        r.close()
    domains = sorted(json.loads(v)["domain"] for v in results.values())
    assert domains == sorted(f"cut{i}.example" for i in range(n))  # each item stored once
