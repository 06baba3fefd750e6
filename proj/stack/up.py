"""``proj up``: Redis (unless REDIS_URL is set), the simulated provider (unless
PROVIDER_BASE_URL is set), an urgent worker, a bulk worker, Flower and ``proj api``.

``proj api`` gets a key made for the session (printed once; its hash goes in the state
directory) unless the keys file has keys, and a callback secret unless one is configured.

Every process runs in its own process group and dies with proj (PR_SET_PDEATHSIG on Linux);
:meth:`Stack.stop` ends them all, pool children included. Redis gets a generated password
and the simulator's admin API a generated key; Flower's password and the simulator's API key
are generated unless configured. Children get them in their environment, never in argv. The
state directory is 0700 and what the children write in it 0600 (:mod:`proj.files`).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from proj.api.keys import KeyRing, new_key, toml_entry
from proj.errors import StackError
from proj.files import private_dir
from proj.settings import Settings
from proj.sim.admin import SimAdmin, sim_argv
from proj.sim.config import ADMIN_KEY_ENV
from proj.stack.commands import (
    WorkerSpec,
    api_argv,
    default_workers,
    flower_argv,
    metrics_argv,
    ping_workers,
    worker_argv,
    worker_queues,
)
from proj.stack.procs import ManagedProcess, free_port, wait_for
from proj.stack.rabbitmq import RabbitServer
from proj.stack.redis_server import RedisServer, find_redis_server

__all__ = [
    "Stack",
    "StackInfo",
    "WorkerSpec",
    "default_workers",
    "flower_argv",
    "metrics_argv",
    "ping_workers",
    "worker_argv",
    "worker_queues",
]


@dataclass
class StackInfo:
    redis_url: str
    flower_url: str | None
    flower_user: str
    flower_password: str
    workers: list[str]
    log_dir: Path
    sim_url: str | None = None
    sim_admin_key: str | None = None
    metrics_url: str | None = None
    broker_url: str | None = None  # when the broker is not the Redis above (RabbitMQ)
    api_url: str | None = None
    api_key: str | None = None  # made for this session (None: the keys file has keys)
    callback_secret: str | None = None  # made for this session (None: configured)


class Stack:
    """Start and stop the local system. Use as a context manager."""

    def __init__(
        self,
        settings: Settings,
        *,
        workers: list[WorkerSpec] | None = None,
        flower: bool = True,
        metrics: bool = True,
        api: bool = False,
        sim: bool | None = None,
        state_dir: Path | None = None,
        env: dict[str, str] | None = None,
        broker: str = "redis",
    ) -> None:
        if broker not in ("redis", "rabbitmq"):
            raise StackError(f"broker must be redis or rabbitmq, got {broker!r}")
        self.settings = settings
        self.broker = broker
        self.rabbit: RabbitServer | None = None
        self.workers = default_workers(settings) if workers is None else workers
        self.with_flower = flower
        self.with_metrics = metrics
        self.with_api = api
        # The simulator stands in for the provider unless PROVIDER_BASE_URL points elsewhere.
        self.with_sim = settings.providers.provider_base_url is None if sim is None else sim
        self.state_dir = Path(state_dir or settings.stack.state_dir).resolve()
        self.log_dir = self.state_dir / "logs"
        self.base_env = dict(os.environ if env is None else env)
        self.redis: RedisServer | None = None
        self.procs: list[ManagedProcess] = []
        self.info: StackInfo | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> StackInfo:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> StackInfo:
        env = dict(self.base_env)
        private_dir(self.state_dir)
        if self.settings.broker.redis_url_is_explicit:
            redis_url = self.settings.broker.redis_url
        else:
            self.redis = RedisServer(
                self.state_dir / "redis",
                binary=find_redis_server(self.settings.stack.redis_server),
                password=secrets.token_urlsafe(24),
            ).start()
            redis_url = self.redis.url
            env["REDIS_URL"] = redis_url
        broker_url = None
        if self.broker == "rabbitmq":  # the broker; Redis stays for results and state
            self.rabbit = RabbitServer(self.state_dir / "rabbitmq").start()
            broker_url = env["CELERY_BROKER_URL"] = self.rabbit.url
        env.setdefault("PYTHONUNBUFFERED", "1")
        env["PROJ_STATE_DIR"] = str(self.state_dir)
        sim_url = admin_key = None
        if self.with_sim:
            port = self.settings.stack.sim_port or free_port()
            # Only the simulator gets its admin key; it needs no Redis.
            admin_key = env.get(ADMIN_KEY_ENV) or secrets.token_urlsafe(24)
            sim_env = {k: v for k, v in env.items() if k != "REDIS_URL"}
            sim_env[ADMIN_KEY_ENV] = admin_key
            require = None
            if self.settings.providers.provider_base_url is None:
                # The simulator stands in for the provider, key and all: workers send the key
                # the simulator requires, as they would to a real provider.
                key = env.get("PROVIDER_API_KEY") or "sk-sim-" + secrets.token_urlsafe(16)
                env["PROVIDER_API_KEY"] = key
                sim_env["SIM_API_KEY"] = key
                require = "SIM_API_KEY"
            self._spawn("sim", sim_argv(port, require_key_env=require), sim_env)
            sim_url = f"http://127.0.0.1:{port}"
            admin = SimAdmin(sim_url, admin_key)
            try:
                wait_for(
                    lambda: self._check_alive() and admin.healthy(),
                    timeout_s=30,
                    what="simulator",
                    interval_s=0.1,
                )
            finally:
                admin.close()
            if self.settings.providers.provider_base_url is None:
                env["PROVIDER_BASE_URL"] = sim_url
        api_key = callback_secret = None
        if self.with_api and self.settings.api.callback_secret is None:
            callback_secret = env["PROJ_API_CALLBACK_SECRET"] = secrets.token_urlsafe(24)
        self.env = env

        for spec in self.workers:
            self._spawn(spec.name, worker_argv(spec), env)
        broker = broker_url or self.settings.broker.broker_url_override or redis_url
        names = [w.nodename for w in self.workers]
        if names:
            wait_for(
                lambda: self._check_alive() and set(names) <= ping_workers(broker, names),
                timeout_s=60,
                what=f"workers {', '.join(names)}",
                interval_s=0.2,
            )
        # Flower and the metrics start once every worker answers, so Flower's first look at
        # the broker finds every queue the workers declared.
        user, password = self.settings.stack.flower_credentials()
        flower_url = metrics_url = None
        if self.with_flower:
            port = self.settings.stack.flower_port or free_port()
            flower_env = {**env, "FLOWER_BASIC_AUTH": f"{user}:{password}"}
            self._spawn("flower", flower_argv(port, db=self.state_dir / "flower.db"), flower_env)
            flower_url = f"http://127.0.0.1:{port}"
        if self.with_metrics:
            port = self.settings.stack.metrics_port or free_port()
            self._spawn("metrics", metrics_argv(port), env)
            metrics_url = f"http://127.0.0.1:{port}/metrics"
        api_url = None
        if self.with_api:
            api_env = dict(env)
            if not len(KeyRing.load(self.settings.api.keys_path)):
                api_key = new_key()
                keys_file = self.state_dir / "api_keys.toml"
                keys_file.write_text(toml_entry("local", api_key, ["*"], None))
                keys_file.chmod(0o600)
                api_env["PROJ_API_KEYS_FILE"] = str(keys_file)
            explicit = "port" in self.settings.api.model_fields_set  # PROJ_API_PORT
            port = self.settings.api.port if explicit and self.settings.api.port else free_port()
            self._spawn("api", api_argv(port), api_env)
            api_url = f"http://127.0.0.1:{port}"
        if flower_url is not None:
            self._wait_http("flower", flower_url + "/healthcheck")
        if api_url is not None:
            self._wait_http("api", api_url + "/healthz")
        if metrics_url is not None:
            self._wait_http("metrics", metrics_url)
        self.info = StackInfo(
            redis_url,
            flower_url,
            user,
            password,
            names,
            self.log_dir,
            sim_url=sim_url,
            sim_admin_key=admin_key,
            metrics_url=metrics_url,
            broker_url=broker_url,
            api_url=api_url,
            api_key=api_key,
            callback_secret=callback_secret,
        )
        return self.info

    def _wait_http(self, what: str, url: str) -> None:
        wait_for(
            lambda: self._check_alive() and _http_ok(url),
            timeout_s=30,
            what=what,
            interval_s=0.2,
        )

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> ManagedProcess:
        proc = ManagedProcess(name, argv, env=env, log_path=self.log_dir / f"{name}.log").start()
        self.procs.append(proc)
        return proc

    def _check_alive(self) -> bool:
        for proc in self.procs:
            if not proc.alive():
                raise StackError(f"{proc.name} exited; last log lines:\n{proc.log_tail()}")
        return True

    def stop(self) -> None:
        """Stop workers and Flower (warm shutdown, then SIGKILL), then Redis."""
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in reversed(self.procs):
            proc.stop(timeout_s=20)
        self.procs.clear()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if self.rabbit is not None:
            self.rabbit.stop()
            self.rabbit = None

    def pids(self) -> list[int]:
        pids = [p.pid for p in self.procs if p.proc is not None]
        if self.redis is not None and self.redis.process is not None:
            pids.append(self.redis.process.pid)
        return pids

    def __enter__(self) -> StackInfo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _http_ok(url: str) -> bool:
    import httpx

    return httpx.get(url, timeout=1.0).status_code == 200
