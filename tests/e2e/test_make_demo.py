"""``make demo`` from a fresh clone: runs the demo on its embedded stack, prints the table.

The install half of ``make demo`` (create ``.venv``, pip install) is the recipe ``make test``
shares with it, and it has just run: a fresh clone's ``make test`` (CI's ``.ci/run``) made the
virtualenv this suite runs in. So the clone's ``make demo`` is pointed at that virtualenv when
it was installed from this very ``pyproject.toml`` (its stamp is there), which saves the suite
a second install of about a minute. ``PROJ_TEST_FRESH_INSTALL=1`` installs into the clone
again, as a first ``make demo`` on a new machine does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import clean_env

ROOT = Path(__file__).resolve().parents[2]


def _fresh_clone(dest: Path) -> Path:
    """Copy what a clone would hold: tracked files plus new files not yet ignored."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / name.decode()
        if src.is_file():
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name.decode())
    return dest


def _installed_venv(clone: Path) -> Path | None:
    """This suite's virtualenv, if ``make`` installed it from the clone's pyproject.toml."""
    if os.environ.get("PROJ_TEST_FRESH_INSTALL") == "1":
        return None
    # The Makefile's stamp: `cat pyproject.toml | cksum`, its first field.
    cksum = (
        subprocess.run(
            ["cksum"],
            input=(clone / "pyproject.toml").read_bytes(),
            capture_output=True,
            check=True,
        )
        .stdout.split()[0]
        .decode()
    )
    venv = Path(sys.prefix)
    return venv if (venv / f".installed-{cksum}").exists() else None


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_make_demo_from_fresh_clone_exits_zero_and_prints_table(tmp_path: Path) -> None:
    clone = _fresh_clone(tmp_path / "clone")
    assert not (clone / ".venv").exists()
    venv = _installed_venv(clone)

    def demo() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", "demo", *([f"VENV={venv}"] if venv else [])],
            cwd=clone,
            env=clean_env(PROJ_REDIS_SERVER="embedded", COLUMNS="200"),
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
        )

    for run in ("first", "second"):  # the second finds the first's Redis data and cache
        proc = demo()
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{run} run:\n{out[-4000:]}"
        assert ((venv or clone / ".venv") / "bin" / "proj").exists()
        assert "urgent" in proc.stdout
        assert "bulk" in proc.stdout
        assert "tasks done" in proc.stdout
        # Real work each time: no lead answered from the cache, every valid lead stored.
        assert "every lead called" in proc.stdout, f"{run} run:\n{proc.stdout}"
        stored = re.search(r"stored\W+(\d+) rows", proc.stdout)
        assert stored and int(stored.group(1)) > 150, f"{run} run:\n{proc.stdout}"
