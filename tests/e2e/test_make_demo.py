"""``make demo`` from a fresh clone: creates .venv, installs, runs the demo, prints the table."""

from __future__ import annotations

import shutil
import subprocess
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


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_make_demo_from_fresh_clone_exits_zero_and_prints_table(tmp_path: Path) -> None:
    clone = _fresh_clone(tmp_path / "clone")
    assert not (clone / ".venv").exists()
    proc = subprocess.run(
        ["make", "demo"],
        cwd=clone,
        env=clean_env(PROJ_REDIS_SERVER="embedded"),
        capture_output=True,
        text=True,
        timeout=880,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert (clone / ".venv" / "bin" / "proj").exists()
    assert "urgent" in proc.stdout
    assert "bulk" in proc.stdout
    assert "tasks done" in proc.stdout
