"""The simulated provider as a process of the local stack: tests, ``proj demo``, ``proj up``
and the benchmarks start it here (the simulator itself, :mod:`proj.sim`, knows nothing of
processes)."""

from __future__ import annotations

import os
import secrets
from typing import Any

from proj.sim.admin import SimAdmin, remember_admin_key, sim_argv
from proj.sim.config import ADMIN_KEY_ENV
from proj.stack.procs import ManagedProcess, free_port, wait_for


def start_sim(
    log_path: Any = None, *, env: dict[str, str] | None = None, require_key_env: str | None = None
) -> tuple[Any, str]:
    """Start the simulator in its own process on a free port; returns (process, base URL).
    Its admin key is ``SIM_ADMIN_KEY`` of ``env`` or a new one; :class:`SimAdmin` finds it."""
    env = dict(os.environ if env is None else env)
    admin_key = env.get(ADMIN_KEY_ENV) or secrets.token_urlsafe(24)
    env[ADMIN_KEY_ENV] = admin_key
    port = free_port()
    proc = ManagedProcess(
        "sim", sim_argv(port, require_key_env=require_key_env), env=env, log_path=log_path
    ).start()
    url = f"http://127.0.0.1:{port}"
    remember_admin_key(url, admin_key)
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
