"""Files and directories proj creates for its own state: readable by their owner only.

Logs, Redis data and the results database can hold what a deployment would not show: the
state directory is 0700 and every file in it 0600, set when each is created (``os.open`` with
a mode, and the ``PRIVATE_UMASK`` for the processes proj starts), not by a chmod afterwards.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

#: The umask of every process proj starts: what it creates is its owner's alone.
PRIVATE_UMASK = 0o077


def private_dir(path: Path) -> Path:
    """Create ``path`` and its missing parents, each 0700; existing ones are left as they are."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.is_dir()]
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
    return path


def open_private(path: Path) -> int:
    """A file descriptor appending to ``path`` (a log), created 0600 in a 0700 directory. A log
    left wider by an earlier version is narrowed to 0600: it may hold what it should not show."""
    path = Path(path)
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def touch_private(path: Path) -> None:
    """Create ``path`` empty and 0600 before a library would create it with its own mode; an
    existing file is left as it is."""
    path = Path(path)
    private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
