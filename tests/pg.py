"""A private PostgreSQL for tests: PROJ_TEST_POSTGRES_URL if set, else one started from the
machine's initdb on a free port (as the ``postgres`` user when running as root), else None."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from proj.stack.procs import free_port


class PrivatePostgres:
    def __init__(self) -> None:
        self.url: str | None = None
        self.reason = ""
        self._dir: Path | None = None
        self._bin: Path | None = None
        self._runas: list[str] = []

    def start(self) -> PrivatePostgres:
        if os.environ.get("PROJ_TEST_POSTGRES_URL"):
            self.url = os.environ["PROJ_TEST_POSTGRES_URL"]
            return self
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or (
            [shutil.which("initdb")] if shutil.which("initdb") else []
        )
        if not found:
            self.reason = "no PostgreSQL server binaries (initdb) on this machine"
            return self
        self._bin = Path(str(found[-1])).parent
        self._dir = Path(tempfile.mkdtemp(prefix="proj-pg-"))
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                self.reason = "running as root and no postgres user to run initdb"
                return self
            os.chown(self._dir, user.pw_uid, user.pw_gid)
            self._runas = ["runuser", "-u", "postgres", "--"]
        port = free_port()
        data = self._dir / "data"
        try:
            subprocess.run(
                [
                    *self._runas,
                    str(self._bin / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                ],
                check=True,
                capture_output=True,
                timeout=120,
            )
            opts = f"-p {port} -k {self._dir} -c listen_addresses=127.0.0.1 -c fsync=off"
            subprocess.run(
                [
                    *self._runas,
                    str(self._bin / "pg_ctl"),
                    "-D",
                    str(data),
                    "-o",
                    opts,
                    "-l",
                    str(self._dir / "pg.log"),
                    "-w",
                    "start",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
        except (subprocess.SubprocessError, OSError) as err:
            self.reason = f"could not start a private PostgreSQL: {err}"
            return self
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        return self

    def stop(self) -> None:
        if self._dir is not None and self._bin is not None and self.url:
            subprocess.run(
                [
                    *self._runas,
                    str(self._bin / "pg_ctl"),
                    "-D",
                    str(self._dir / "data"),
                    "-m",
                    "immediate",
                    "stop",
                ],
                capture_output=True,
                timeout=60,
                check=False,
            )
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
