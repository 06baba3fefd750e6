"""Helpers shared by the tests: real worker processes and polling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proj.stack.procs import ManagedProcess
from proj.stack.up import WorkerSpec, ping_workers, worker_argv


def run_client(code: str, env: dict[str, str], timeout_s: float = 120) -> Any:
    """Run ``code`` as a client program in ``env`` (merged over this process's); the last line
    it prints, read as JSON. A client on another broker or host than this process's app uses
    this."""
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def wait_until(
    check: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


#: For workers that call no provider: proj's own dependencies switched off, so the start-up
#: check does not ask for a provider URL and key these workers never use.
NO_PROVIDERS = {
    "PROJ_DEPENDENCIES": '{"ai": {"enabled": false}, "company": {"enabled": false}, '
    '"person": {"enabled": false}}'
}


class WorkerPool:
    """Real ``celery -A proj worker`` processes started by a test."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[ManagedProcess] = []

    def start(
        self,
        name: str,
        queues: tuple[str, ...] = ("urgent", "bulk"),
        concurrency: int = 2,
        *,
        env: dict[str, str] | None = None,
        pool: str = "prefork",
        extra_args: tuple[str, ...] = (),
        wait: bool = True,
    ) -> ManagedProcess:
        spec = WorkerSpec(name, queues, concurrency, pool=pool, extra_args=extra_args)
        env = env or {}
        base = {} if "PROVIDER_BASE_URL" in env else NO_PROVIDERS
        proc_env = {**os.environ, **base, **env, "PYTHONUNBUFFERED": "1"}
        proc = ManagedProcess(
            name, worker_argv(spec), env=proc_env, log_path=self.log_dir / f"{name}.log"
        ).start()
        self.procs.append(proc)
        if wait:
            broker = proc_env.get("CELERY_BROKER_URL") or proc_env["REDIS_URL"]

            def ready() -> bool:
                if not proc.alive():
                    raise AssertionError(f"worker {name} exited:\n{proc.log_tail()}")
                try:
                    return spec.nodename in ping_workers(broker, [spec.nodename], timeout_s=0.5)
                except OSError:  # a broker just restarted drops the first connections
                    return False

            wait_until(ready, 60, f"worker {spec.nodename}", interval_s=0.2)
        return proc

    def wait_ready(self, *names: str, timeout_s: float = 60) -> None:
        """Wait until the workers started with ``wait=False`` answer a ping (together: their
        start-ups overlap)."""
        nodes = {self.nodename(n) for n in names}
        procs = [p for p in self.procs if p.name in names]
        env = procs[0].env if procs else os.environ
        broker = env.get("CELERY_BROKER_URL") or env["REDIS_URL"]

        def ready() -> bool:
            for proc in procs:
                if not proc.alive():
                    raise AssertionError(f"worker {proc.name} exited:\n{proc.log_tail()}")
            try:
                return nodes <= set(ping_workers(broker, sorted(nodes), timeout_s=0.5))
            except OSError:  # a broker just restarted drops the first connections
                return False

        wait_until(ready, timeout_s, f"workers {sorted(nodes)}", interval_s=0.2)

    @staticmethod
    def nodename(name: str) -> str:
        return WorkerSpec(name, (), 1).nodename

    def kill_all(self) -> None:
        """End every worker at once (SIGKILL to each process group): for a teardown, where
        nothing is left to finish. A warm shutdown takes about 2 s a worker."""
        for proc in self.procs:
            proc.signal_group(signal.SIGKILL)
        for proc in self.procs:
            proc.stop(timeout_s=5)
        self.procs.clear()

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.stop(timeout_s=10)
        self.procs.clear()


class EventCollector:
    """Collects Celery events of the given types in a background thread (a real receiver)."""

    def __init__(self, app: object, *types: str) -> None:
        import threading

        self.app = app
        self.types = types
        self.events: list[dict[str, object]] = []
        self._receiver: object = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        app = self.app
        with app.connection_for_read() as conn:  # type: ignore[attr-defined]
            handlers = {t: self.events.append for t in self.types}
            recv = app.events.Receiver(conn, handlers=handlers)  # type: ignore[attr-defined]
            self._receiver = recv
            self._ready.set()
            try:
                recv.capture(limit=None, timeout=None, wakeup=False)
            except Exception:  # stopped, or the connection closed at teardown
                return

    def start(self) -> EventCollector:
        self._thread.start()
        self._ready.wait(10)
        time.sleep(0.5)  # the receiver's queue is bound once capture() starts consuming
        return self

    def stop(self) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True  # type: ignore[attr-defined]
        self._thread.join(5)
