"""Batch throughput with 1, 2 and 4 worker hosts, as ratios to one host.

Hosts are Linux network namespaces on this machine (root only, ``proj/stack/netns.py``):
Redis and the simulated provider on a data host, one worker (``-c 1``: one batch runner at a
time, its calls concurrent on its event loop) on each worker host. Each run submits the same
batch with one runner per worker host and measures items per second from submit to finish.
The hosts share this machine's CPU cores, so the ratio shows what the design lets through on
the cores there are, not what separate machines would do.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from proj import keys
from proj.sim.admin import SimAdmin
from proj.sim.config import ADMIN_KEY_ENV
from proj.stack import netns
from proj.stack.commands import WorkerSpec, ping_workers

KEY, ADMIN = "sk-bench-multihost", "admin-bench-multihost"


def _wait(check, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def run(hosts: int, items: int, latency_ms: int, concurrency: int, log_dir: Path) -> float:
    """Items per second of one batch on ``hosts`` worker hosts."""
    with netns.Network(hosts + 1) as net:
        data, workers = net.hosts[0], net.hosts[1:]
        url = f"redis://{data.address}:6379/0"
        env = {
            **os.environ,
            "REDIS_URL": url,
            "PROVIDER_BASE_URL": f"http://{data.address}:8900",
            "PROVIDER_API_KEY": KEY,
            "PROJ_DATABASE_URL": f"sqlite:///{log_dir / 'results.sqlite3'}",
            "PROJ_BATCH_SMALL_MAX": "1",
            "PROJ_BATCH_RUNNERS": str(hosts),
            "PROJ_BATCH_CONCURRENCY": str(concurrency),
            "PYTHONUNBUFFERED": "1",
        }
        data.spawn_redis(env, log_dir)
        sim_env = {**env, "SIM_API_KEY": KEY, ADMIN_KEY_ENV: ADMIN}
        data.spawn_sim(sim_env, log_dir, "SIM_API_KEY")
        admin = SimAdmin(f"http://{data.address}:8900", ADMIN)
        admin.configure({"routes": {"company": {"latency_ms": latency_ms}}})
        client = redis.Redis.from_url(url, socket_timeout=5)
        specs = [WorkerSpec(f"bulk-{host.name}", ("bulk",), 1) for host in workers]
        for host, spec in zip(workers, specs, strict=True):
            host.spawn_worker(spec, env, log_dir)
        names = [spec.nodename for spec in specs]
        _wait(lambda: set(names) <= ping_workers(url, names, 0.5), 90, "the workers")
        code = (
            "import json\nfrom proj import batch\n"
            f"items = [{{'domain': f'h{{i}}.example'}} for i in range({items})]\n"
            "print(json.dumps(batch.submit('company', items, fresh=True).batch_id))\n"
        )
        started = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        batch_id = json.loads(out.stdout.strip().splitlines()[-1])
        _wait(lambda: client.hget(keys.batch(batch_id), "status") == b"finished", 600, "the batch")
        elapsed = time.monotonic() - started
        done = int(client.hget(keys.batch(batch_id), "done") or 0)
        client.close()
        admin.close()
        if done != items:
            raise SystemExit(f"{hosts} hosts: {done} of {items} done")
        return items / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--hosts", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--latency-ms", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=25, help="calls in flight per runner")
    args = ap.parse_args()
    why = netns.unavailable()
    if why is not None:
        raise SystemExit(f"bench.multihost: {why}")
    rates = {}
    with tempfile.TemporaryDirectory(prefix="proj-bench-multihost-") as tmp:
        for n in args.hosts:
            rates[n] = run(n, args.items, args.latency_ms, args.concurrency, Path(tmp))
            print(f"{n} worker host(s): {rates[n]:.0f} items/s", flush=True)
    base = rates[args.hosts[0]]
    ideal = 1000 / args.latency_ms * args.concurrency
    for n, rate in rates.items():
        print(
            f"{n} host(s): {rate / base:.2f}x of {args.hosts[0]} host(s); "
            f"{rate / (ideal * n):.2f}x of the ideal {ideal * n:.0f}/s"
        )


if __name__ == "__main__":
    main()
