"""Child processes that proj starts and must stop: one process group each, no orphans."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from proj.errors import StackError
from proj.files import PRIVATE_UMASK, open_private

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # On Linux, ask the kernel to SIGTERM this child if proj's process dies, even by SIGKILL.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess:
    """A child in its own process group, logged to a file, stopped with its whole group."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        cwd: Path | None = None,
        die_with_parent: bool = True,
        stdin_data: bytes | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(os.environ if env is None else env)
        self.log_path = log_path
        self.cwd = cwd
        self.die_with_parent = die_with_parent
        # Written to the child's stdin, then closed: a secret passed this way is in neither
        # argv (``ps``) nor a file.
        self.stdin_data = stdin_data
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise StackError(f"{self.name} is not started")
        return self.proc.pid

    def start(self) -> ManagedProcess:
        out: int | object = subprocess.DEVNULL
        if self.log_path is not None:
            out = os.fdopen(open_private(self.log_path), "ab")  # closed in stop()
        self._log = out
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL if self.stdin_data is None else subprocess.PIPE,
            stdout=out,  # type: ignore[arg-type]
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if self.die_with_parent else None,
            umask=PRIVATE_UMASK,  # what the child creates (Redis data, SQLite) is 0600
        )
        if self.proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError), self.proc.stdin:
                self.proc.stdin.write(self.stdin_data or b"")
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the whole process group (the process and, e.g., its pool)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def terminate(self) -> None:
        """SIGTERM to the leader only: a Celery worker then shuts its pool down warmly."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM the leader, wait up to ``timeout_s``, then SIGKILL the whole group."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout_s)
        # The leader may be gone while its children (a prefork pool) linger: kill the group.
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        log = getattr(self, "_log", None)
        if hasattr(log, "close"):
            log.close()  # type: ignore[union-attr]
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def wait_for(check: object, *, timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    """Poll ``check()`` until it returns truthy, or raise :class:`StackError` naming ``what``."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception as exc:  # the thing is still starting
            last = exc
        time.sleep(interval_s)
    raise StackError(
        f"timed out after {timeout_s:.0f}s waiting for {what}" + (f": {last}" if last else "")
    )
