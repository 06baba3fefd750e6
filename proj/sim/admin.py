"""A small synchronous client of the simulator's admin API, for tests, demo and benchmarks."""

from __future__ import annotations

import os
import secrets
import sys
from typing import Any

import httpx

from proj.sim.config import ADMIN_KEY_ENV, ADMIN_KEY_HEADER

#: The admin key of every simulator :func:`start_sim` started in this process, by base URL.
_started_keys: dict[str, str] = {}


class SimAdmin:
    """The admin API of the simulator at ``base_url``, with its admin key (by default the one
    :func:`start_sim` gave the simulator it started there)."""

    def __init__(self, base_url: str, admin_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        key = admin_key or _started_keys.get(self.base_url)
        headers = {ADMIN_KEY_HEADER: key} if key else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=10.0, headers=headers)

    def configure(self, patch: dict[str, Any], *, replace: bool = False) -> dict[str, Any]:
        """Apply a partial configuration (or replace it whole)."""
        r = self._http.post("/admin/config", json=patch, params={"replace": "1"} if replace else {})
        r.raise_for_status()
        return dict(r.json())

    def reset(self, *, config: bool = False) -> None:
        self._http.post("/admin/reset", json={"config": config}).raise_for_status()

    def stats(self, *, timeline: bool = False) -> dict[str, Any]:
        r = self._http.get("/admin/stats", params={"timeline": "1"} if timeline else {})
        r.raise_for_status()
        return dict(r.json())

    def count(self, route: str, outcome: str | None = None) -> int:
        s = self.stats()
        return int(s["totals"][route] if outcome is None else s["counts"][route][outcome])

    def arrivals(self, route: str) -> list[float]:
        """Wall-clock times of the requests the route received (the last 200,000)."""
        r = self._http.get("/admin/arrivals", params={"route": route})
        r.raise_for_status()
        return [float(t) for t in r.json()]

    def healthy(self) -> bool:
        try:
            return self._http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self._http.close()


def sim_argv(
    port: int, *, python: str = sys.executable, require_key_env: str | None = None
) -> list[str]:
    argv = [python, "-m", "proj.sim", "--host", "127.0.0.1", "--port", str(port)]
    if require_key_env:
        argv += ["--require-key-env", require_key_env]
    return argv


def start_sim(
    log_path: Any = None, *, env: dict[str, str] | None = None, require_key_env: str | None = None
) -> tuple[Any, str]:
    """Start the simulator in its own process on a free port; returns (process, base URL).
    Its admin key is ``SIM_ADMIN_KEY`` of ``env`` or a new one; :class:`SimAdmin` finds it."""
    from proj.stack.procs import ManagedProcess, free_port, wait_for

    env = dict(os.environ if env is None else env)
    admin_key = env.get(ADMIN_KEY_ENV) or secrets.token_urlsafe(24)
    env[ADMIN_KEY_ENV] = admin_key
    port = free_port()
    proc = ManagedProcess(
        "sim", sim_argv(port, require_key_env=require_key_env), env=env, log_path=log_path
    ).start()
    url = f"http://127.0.0.1:{port}"
    _started_keys[url] = admin_key
    admin = SimAdmin(url)
    try:

        def up() -> bool:
            if not proc.alive():
                raise RuntimeError(f"simulator exited: {proc.log_tail()}")
            return admin.healthy()

        wait_for(up, timeout_s=30, what=f"simulator on {url}")
    finally:
        admin.close()
    return proc, url
