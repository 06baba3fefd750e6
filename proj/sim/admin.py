"""A small synchronous client of the simulator's admin API, for tests, demo and benchmarks."""

from __future__ import annotations

import sys
from typing import Any

import httpx

from proj.sim.config import ADMIN_KEY_HEADER

#: The admin key of every simulator started in this process (``proj.stack.sim.start_sim``),
#: by base URL.
_started_keys: dict[str, str] = {}


def remember_admin_key(base_url: str, admin_key: str) -> None:
    """Let :class:`SimAdmin` find the admin key of a simulator this process started."""
    _started_keys[base_url.rstrip("/")] = admin_key


class SimAdmin:
    """The admin API of the simulator at ``base_url``, with its admin key (by default the one
    this process gave the simulator it started there)."""

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
    port: int,
    *,
    python: str = sys.executable,
    require_key_env: str | None = None,
    host: str = "127.0.0.1",
) -> list[str]:
    argv = [python, "-m", "proj.sim", "--host", host, "--port", str(port)]
    if require_key_env:
        argv += ["--require-key-env", require_key_env]
    return argv
