"""Hosts on one machine, for tests and benchmarks of what crosses a network: Linux network
namespaces joined by veth pairs to a bridge in the calling namespace (root only).

Each :class:`Host` has its own address on a private /24 and runs processes with
``ip netns exec``; :meth:`Host.cut` takes its link down (the host drops off the network, its
processes keep running), :meth:`Host.join` brings it back. Everything is removed on close.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from proj.errors import StackError
from proj.sim.admin import SimAdmin, sim_argv
from proj.stack.commands import WorkerSpec, worker_argv
from proj.stack.procs import ManagedProcess, wait_for
from proj.stack.redis_server import RedisServer


def _ip(*args: str) -> None:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if out.returncode != 0:
        raise StackError(f"ip {' '.join(args)}: {out.stderr.strip()}")


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def unavailable() -> str | None:
    """Why hosts cannot be made here (not root, no ``ip``, no namespaces), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    name = f"pjprobe{os.getpid() % 100000}"
    try:
        _ip("netns", "add", name)
    except StackError as err:
        return f"cannot make a network namespace: {err}"
    with contextlib.suppress(StackError):
        _ip("netns", "del", name)
    return None


@dataclass
class Host:
    name: str  # the namespace
    address: str
    link: str  # the veth end on the bridge's side
    procs: list[ManagedProcess] = field(default_factory=list)

    def spawn(
        self, label: str, argv: Sequence[str], env: dict[str, str], log_dir: Path
    ) -> ManagedProcess:
        """Run ``argv`` inside this host."""
        proc = ManagedProcess(
            f"{self.name}-{label}",
            ["ip", "netns", "exec", self.name, *argv],
            env=env,
            log_path=log_dir / f"{self.name}-{label}.log",
        ).start()
        self.procs.append(proc)
        return proc

    def spawn_redis(self, env: dict[str, str], log_dir: Path, port: int = 6379) -> str:
        """A Redis on this host's address (no password: the network is the test's own), up;
        its URL."""
        server = RedisServer(
            log_dir / f"{self.name}-redis", port=port, appendonly=False, bind=self.address
        )
        server.data_dir.mkdir(parents=True, exist_ok=True)
        self.spawn("redis", server.argv(), env, log_dir)
        client = redis.Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=1)
        try:
            wait_for(lambda: _pings(client), timeout_s=30, what=f"redis on {self.name}")
        finally:
            client.close()
        return server.url

    def spawn_sim(self, env: dict[str, str], log_dir: Path, key_env: str, port: int = 8900) -> str:
        """The simulated provider on this host's address, requiring the key in ``key_env``,
        up; its URL."""
        argv = sim_argv(port, require_key_env=key_env, host=self.address)
        self.spawn("sim", argv, env, log_dir)
        url = f"http://{self.address}:{port}"
        admin = SimAdmin(url)
        try:
            wait_for(admin.healthy, timeout_s=30, what=f"the simulator on {self.name}")
        finally:
            admin.close()
        return url

    def spawn_worker(self, spec: WorkerSpec, env: dict[str, str], log_dir: Path) -> None:
        """``celery worker`` on this host, as ``proj up`` starts one."""
        self.spawn(spec.name, worker_argv(spec), env, log_dir)

    def cut(self) -> None:
        """This host drops off the network."""
        _ip("link", "set", self.link, "down")

    def join(self) -> None:
        _ip("link", "set", self.link, "up")


class Network:
    """A bridge and ``n`` hosts on ``10.<a>.<b>.0/24``; the calling namespace is ``.1``."""

    def __init__(self, n: int) -> None:
        self.tag = f"{os.getpid() % 10000}{random.randint(0, 99):02d}"
        a, b = random.randint(100, 250), random.randint(1, 250)
        self.prefix = f"10.{a}.{b}"
        self.bridge = f"pjbr{self.tag}"
        self.gateway = f"{self.prefix}.1"
        self.hosts: list[Host] = []
        self.n = n

    def __enter__(self) -> Network:
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i in range(self.n):
                ns, outer, inner = f"pjh{self.tag}{i}", f"pjv{self.tag}{i}", f"pji{self.tag}{i}"
                address = f"{self.prefix}.{11 + i}"
                _ip("netns", "add", ns)
                _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
                _ip("link", "set", inner, "netns", ns)
                _ip("link", "set", outer, "master", self.bridge)
                _ip("link", "set", outer, "up")
                _ip("-n", ns, "addr", "add", f"{address}/24", "dev", inner)
                _ip("-n", ns, "link", "set", inner, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                self.hosts.append(Host(ns, address, outer))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for host in self.hosts:
            for proc in host.procs:
                proc.terminate()
        for host in self.hosts:
            for proc in host.procs:
                proc.stop(timeout_s=10)
            host.procs.clear()
        for host in self.hosts:
            with contextlib.suppress(StackError):
                _ip("link", "del", host.link)
            with contextlib.suppress(StackError):
                _ip("netns", "del", host.name)
        with contextlib.suppress(StackError):
            _ip("link", "del", self.bridge)
        self.hosts.clear()
