"""Helpers for tests that run proj's commands as a user would."""

from __future__ import annotations

import os
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
