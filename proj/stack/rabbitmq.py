"""A private RabbitMQ node: Debian's ``rabbitmq-server`` on free loopback ports, its data, logs
and Erlang port mapper (epmd, on a port of its own) under one directory, so it touches no
other node on the machine. ``proj up --broker rabbitmq`` and the tests use it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import kombu

from proj.errors import StackError
from proj.files import private_dir
from proj.stack.procs import ManagedProcess, free_port, wait_for

_SBIN = Path("/usr/lib/rabbitmq/bin")


def find_rabbitmq_server() -> Path | None:
    """The ``rabbitmq-server`` to run: Debian's own script (not the wrapper that switches to
    the rabbitmq user), else one on PATH. None where RabbitMQ is not installed."""
    own = _SBIN / "rabbitmq-server"
    if own.exists():
        return own
    found = shutil.which("rabbitmq-server")
    return Path(found) if found else None


class RabbitServer:
    """One RabbitMQ node, started and stopped by this process. Clients log in as ``guest``,
    which RabbitMQ allows on loopback only."""

    def __init__(self, data_dir: Path, *, binary: Path | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        found = binary or find_rabbitmq_server()
        if found is None:
            raise StackError(
                "rabbitmq-server is not installed (Debian: apt-get install rabbitmq-server)"
            )
        self.binary = found
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.node = f"proj-{uuid.uuid4().hex[:8]}@localhost"
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def env(self) -> dict[str, str]:
        d = self.data_dir
        return {
            **os.environ,
            "HOME": str(d),  # its Erlang cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
        }

    def start(self, timeout_s: float = 60.0) -> RabbitServer:
        private_dir(self.data_dir)
        (self.data_dir / "enabled_plugins").write_text("[].\n")
        try:
            self._run(timeout_s)
        except StackError:
            tail = self.process.log_tail() if self.process is not None else ""
            self.stop()
            raise StackError(f"rabbitmq-server did not start:\n{tail}") from None
        return self

    def _run(self, timeout_s: float) -> None:
        """Start the node on this object's ports and data, and wait until it answers."""
        self.process = ManagedProcess(
            "rabbitmq", [str(self.binary)], env=self.env(), log_path=self.data_dir / "out.log"
        ).start()
        wait_for(self._answers, timeout_s=timeout_s, what=f"rabbitmq on {self.port}")

    def _answers(self) -> bool:
        if self.process is not None and not self.process.alive():
            raise StackError(f"rabbitmq-server exited: {self.process.log_tail()}")
        try:
            with kombu.Connection(self.url, connect_timeout=1) as conn:
                conn.connect()
                return bool(conn.connected)
        except Exception:  # refused, reset, or the node still booting (amqp errors)
            return False

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process is not None:
            self.process.stop(timeout_s)
            self.process = None
        # Its port mapper daemonized out of the process group: end it (ours alone: own port).
        epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [epmd, "-kill"],
                env={**os.environ, "ERL_EPMD_PORT": str(self.epmd_port)},
                capture_output=True,
                timeout=10,
                check=False,
            )

    def restart(self) -> None:
        """Stop and start again on the same ports and data (durable queues come back)."""
        if self.process is not None:
            self.process.stop(30)
            self.process = None
        self._run(60)
