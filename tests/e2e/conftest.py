"""Helpers for tests that run proj's commands as a user would."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user who set nothing: no REDIS_URL, no proj or Celery settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PROJ_", "CELERY_", "FLOWER_", "MAKE", "PYTEST_"))
        and k not in {"REDIS_URL", "MFLAGS", "VIRTUAL_ENV"}
    }
    env.update(extra)
    return env


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (by parent links in /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in out:
                out.add(child)
                stack.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def proj_exe() -> str:
    """The ``proj`` command of this environment."""
    exe = Path(sys.executable).parent / "proj"
    return str(exe) if exe.exists() else shutil.which("proj") or "proj"


def read_until(proc: subprocess.Popen[str], marker: str, timeout_s: float) -> str:
    """Collect the output of ``proc`` until ``marker`` appears (a thread reads the pipe)."""
    assert proc.stdout is not None
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()  # type: ignore[arg-type]
    deadline = time.monotonic() + timeout_s
    while marker not in "".join(lines):
        if proc.poll() is not None:
            raise AssertionError(f"proj up exited {proc.returncode}:\n{''.join(lines)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {marker!r} after {timeout_s}s:\n{''.join(lines)}")
        time.sleep(0.1)
    return "".join(lines)


def assert_all_gone(proc: subprocess.Popen[str], procs: list[int], settle_s: float) -> None:
    """``proj up`` exited cleanly and, ``settle_s`` later, none of ``procs`` is alive."""
    assert proc.returncode == 0
    time.sleep(settle_s)
    left = [p for p in procs if alive(p)]
    assert not left, f"processes left behind: {left}"


def stop_up(proc: subprocess.Popen[str]) -> None:
    """SIGTERM a ``proj up`` and wait for it to stop everything it started (killed after 60 s)."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()
